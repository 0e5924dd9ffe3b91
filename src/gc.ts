// Garbage collection: around large messages (below), and how `txrelay start` tunes V8's
// collector for a busy relay (deprioritizeCollectorThreads, growHeapFaster, at the end).
//
// Around large messages. V8 collects the memory behind Buffers lazily: it
// counts it as external memory and starts a full collection only after that has grown by about
// 64 MiB. A small message's buffers die young and go at the next scavenge, but a large one makes
// tens of megabytes of short-lived chunks (socket reads, the DATA stream's copies, the parser's
// and the encoder's) faster than anything else triggers one: measured on a 25 MiB message, the
// bare smtp-server grew its RSS by 2.3× the message's size from receiving alone, and by 0.8×
// with a scavenge asked for every 4 MiB received (bench/memory.ts).
//
// So the stages that handle a message's bytes report how many they went through (`churned`), and
// every CHURN_BYTES a young-generation collection runs: well under a millisecond here, and never
// more often than the bytes flow. A large message's copies that lived long enough to reach the
// old generation (its raw chunks while it was received, its decoded attachments while it was
// built) are reported as they are let go (`released`), and every RELEASED_BYTES of them a full
// collection runs: a few milliseconds, paid only by messages over a megabyte. `gc` is V8's own,
// exposed at run time (v8.setFlagsFromString); where that is refused both are no-ops and V8
// collects as it would.
import fs from 'node:fs';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import v8 from 'node:v8';
import vm from 'node:vm';

type Gc = (options?: { type?: 'minor' | 'major'; flavor?: 'regular' | 'last-resort' }) => void;

export const CHURN_BYTES = 4 * 1024 * 1024;
export const RELEASED_BYTES = 8 * 1024 * 1024;
/** A message over this is large: it is parsed as a stream and its copies are reported as released. */
export const LARGE_MESSAGE_BYTES = 1024 * 1024;

function exposeGc(): Gc | undefined {
  const existing = (globalThis as { gc?: Gc }).gc;
  if (existing) return existing;
  try {
    v8.setFlagsFromString('--expose-gc');
    return vm.runInNewContext('gc') as Gc;
  } catch {
    return undefined;
  }
}

const gc = exposeGc();
let churn = 0;
let release = 0;

/** `bytes` went through a stage that leaves them behind as garbage. True when that started a collection. */
export function churned(bytes: number): boolean {
  churn += bytes;
  if (churn < CHURN_BYTES) return false;
  churn = 0;
  gc?.({ type: 'minor' });
  return true;
}

/**
 * A large message's stage let go of `bytes` it had held since before the message's end. True
 * when that started a collection.
 */
export function released(bytes: number): boolean {
  release += bytes;
  if (release < RELEASED_BYTES) return false;
  release = 0;
  churn = 0;
  gc?.({ type: 'major' });
  return true;
}

/** compacted() runs only when the young generation is larger than this (a large message regrows it to about 16 MiB)… */
export const COMPACT_ABOVE_BYTES = 16 * 1024 * 1024;
/** …and at most once in this long: under a stream of large messages it would run for each. */
export const COMPACT_EVERY_MS = 10_000;
let compactedAt = -Infinity;

const youngGeneration = () => v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')?.space_size ?? 0;

/**
 * A full collection that also gives back what V8 keeps for later: its "last resort" (the
 * collection it runs before running out of memory), which shrinks the young generation to its
 * least. Starting up, or a burst of traffic, grows the young generation to its largest (64 MiB
 * on Node 24), and V8 keeps it while the process idles; a large message then writes through all
 * of it, which shows as RSS. 10–20 ms here: asked for when a message's DATA passes
 * LARGE_MESSAGE_BYTES, and run only when the young generation is over COMPACT_ABOVE_BYTES and
 * the last run is COMPACT_EVERY_MS ago (run for every message of 5 MB, 50 at a time, it cost a
 * quarter of their throughput). True when it ran. (Not once the relay is up: that gives back
 * about 40 MB at idle, but the first traffic grows the young generation again, so the idle
 * relay only looks smaller; measured, 1,000 sessions after AUTH then cost 30.5 KiB each
 * instead of 15.6.)
 */
export function compacted(now = performance.now()): boolean {
  if (!gc || now - compactedAt < COMPACT_EVERY_MS || youngGeneration() <= COMPACT_ABOVE_BYTES) return false;
  compactedAt = now;
  gc({ type: 'major', flavor: 'last-resort' });
  release = 0;
  churn = 0;
  return true;
}

/** True when this process can ask V8 for collections (for tests). */
export const canCollect = gc !== undefined;

/** Where Linux lists a process's threads; each has a `comm` file with its name. */
const TASKS = '/proc/self/task';
/** The name Node gives the threads of V8's platform: concurrent marking, sweeping, compiling. */
const COLLECTOR_THREAD = 'V8Worker';

/**
 * Gives V8's helper threads (V8Worker: they mark and sweep for the collector while the event
 * loop runs, and compile) the nice value `nice`, so that where the cores are all busy the event
 * loop, the signing thread and PostgreSQL come first and the helpers take what is left. Node
 * starts four of them on any machine, and a full collection of this relay's heap (some 40 MB
 * live) keeps them busy for 70-100 ms of CPU: on 2 cores they took the cores from the SMTP
 * transactions waiting on them. Measured at 10 clients of 5 KB messages, in alternate runs:
 * p99 26.7-28.9 -> 22.0-24.2 ms at nice 10, 21.4-22.0 at 19, throughput unchanged. Linux only
 * (elsewhere, and where /proc cannot be read, nothing happens); lowering a thread's priority
 * needs no privilege. Returns how many threads it changed.
 */
export function deprioritizeCollectorThreads(nice: number, tasks = TASKS): number {
  if (nice === 0) return 0;
  let changed = 0;
  let ids: string[];
  try {
    ids = fs.readdirSync(tasks);
  } catch {
    return 0;
  }
  for (const id of ids) {
    try {
      if (fs.readFileSync(`${tasks}/${id}/comm`, 'utf8').trim() !== COLLECTOR_THREAD) continue;
      os.setPriority(Number(id), nice);
      changed++;
    } catch {
      // The thread ended meanwhile, or the system refused: it keeps its priority.
    }
  }
  return changed;
}

/**
 * Lets the old generation grow to (1 + percent/100) times what the last full collection left
 * before the next one (V8's --heap-growing-percent, which it reads at every collection, so it
 * can be set at run time). V8 chooses 1.1-1.3 here: it sees its collections as cheap beside the
 * allocation rate and keeps the heap small. But each full collection marks the relay's whole
 * live heap (some 40 MB, mostly code and library sources), and with a few MB of every second's
 * messages outliving two scavenges one came every 0.3-1 s at 10 clients, each with pauses of
 * 4-13 ms that the slowest transactions waited for. At 200 (three times): 34 -> 8 full
 * collections in the same 16 s of load, p99 at 10 clients 21-22 -> 15.6-16.7 ms (100: 19.1-19.3,
 * 300: 17.2-19.8), throughput the same or better. It costs memory only where garbage waits
 * longer for its collection: a busy relay's heap peaks higher by up to twice its live size
 * (about 80 MB). Large messages are unaffected: their stages ask for their own collections
 * (`released`). 0 leaves V8's own factor. True when set.
 */
export function growHeapFaster(percent: number): boolean {
  if (percent === 0) return false;
  try {
    v8.setFlagsFromString(`--heap-growing-percent=${percent}`);
    return true;
  } catch {
    return false;
  }
}
