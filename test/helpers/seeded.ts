// A deterministic random generator for tests that draw many cases: a failure names its seed,
// and the same seed draws the same case again.

/** Numbers in [0, 1) from a linear congruential generator started at `seed`. */
export function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}
