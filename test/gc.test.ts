// src/gc.ts: the collections a large message's stages ask for, at the thresholds, and that they
// do run (V8 lets the process expose its collector at run time). A full collection shows in a
// WeakRef it clears; a young-generation one, which leaves WeakRefs alone, in perf_hooks' gc entries.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import { constants, performance, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import { test } from 'node:test';
import { setImmediate as tick } from 'node:timers/promises';
import v8 from 'node:v8';
import {
  canCollect,
  CHURN_BYTES,
  churned,
  COMPACT_ABOVE_BYTES,
  COMPACT_EVERY_MS,
  compacted,
  deprioritizeCollectorThreads,
  growHeapFaster,
  released,
  RELEASED_BYTES,
} from '../src/gc.ts';
import { threadsOf } from './helpers/process.ts';

test('this runtime lets the collector be asked for', () => {
  assert.equal(canCollect, true);
});

test('released: a full collection once RELEASED_BYTES were let go in all, not before', async () => {
  released(RELEASED_BYTES); // the count starts afresh
  assert.equal(released(RELEASED_BYTES - 1), false);
  // An object nothing holds, past the job that made it (a WeakRef keeps its target for that job).
  const ref = new WeakRef({ payload: Buffer.alloc(1024) });
  await tick();
  assert.equal(released(1), true);
  assert.equal(ref.deref(), undefined, 'collected');
});

test('churned: a young-generation collection every CHURN_BYTES', async () => {
  const kinds: number[] = [];
  const observer = new PerformanceObserver((list) => kinds.push(...list.getEntries().map((e) => (e as PerformanceEntry & { detail: { kind: number } }).detail.kind)));
  observer.observe({ entryTypes: ['gc'] });
  try {
    churned(CHURN_BYTES); // the count starts afresh
    assert.equal(churned(CHURN_BYTES / 2), false);
    kinds.length = 0;
    assert.equal(churned(CHURN_BYTES / 2), true);
    for (let i = 0; i < 50 && !kinds.includes(constants.NODE_PERFORMANCE_GC_MINOR); i++) await tick();
    assert.ok(kinds.includes(constants.NODE_PERFORMANCE_GC_MINOR), `gc entries seen: ${kinds.join(', ') || 'none'}`);
  } finally {
    observer.disconnect();
  }
});

test('compacted: a grown young generation shrinks to its least; not when small, nor twice within COMPACT_EVERY_MS', () => {
  const newSpace = () => v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')!.space_size;
  // Objects that survive a scavenge or two, as a startup's do: V8 grows the young generation for them.
  const grow = () => {
    let kept: object[] = [];
    for (let i = 0; i < 20_000_000 && newSpace() <= COMPACT_ABOVE_BYTES; i++) {
      kept.push({ i, s: `x${i}` });
      if (kept.length > 400_000) kept = [];
    }
    return newSpace();
  };
  const start = performance.now();
  const grown = grow();
  assert.ok(grown > COMPACT_ABOVE_BYTES, `grown to ${grown}`);
  assert.equal(compacted(start), true);
  const least = newSpace();
  assert.ok(least < grown / 2, `${grown} → ${least}`);
  // Small now: nothing to give back, even once the interval has passed.
  assert.equal(compacted(start + COMPACT_EVERY_MS), false);
  // Grown again, but within the interval.
  grow();
  assert.equal(compacted(start + COMPACT_EVERY_MS - 1), false);
  assert.equal(compacted(start + COMPACT_EVERY_MS), true);
});

test('deprioritizeCollectorThreads: V8Worker threads get the nice value, no other thread does', { skip: process.platform !== 'linux' && 'needs /proc (Linux)' }, () => {
  const before = new Map(threadsOf('self').map(({ id }) => [id, os.getPriority(id)]));
  const collectors = threadsOf('self').filter(({ name }) => name === 'V8Worker');
  assert.ok(collectors.length > 0, 'Node runs V8 helper threads');
  assert.equal(deprioritizeCollectorThreads(7), collectors.length);
  for (const { id, name } of threadsOf('self')) {
    if (name === 'V8Worker') assert.equal(os.getPriority(id), 7, `thread ${id} (${name})`);
    else if (before.has(id)) assert.equal(os.getPriority(id), before.get(id), `thread ${id} (${name}) keeps its priority`);
  }
  assert.equal(os.getPriority(process.pid), before.get(process.pid), 'the event loop keeps its priority');
});

test('deprioritizeCollectorThreads: 0 changes nothing; an unreadable thread list, nothing either', () => {
  assert.equal(deprioritizeCollectorThreads(0), 0);
  assert.equal(deprioritizeCollectorThreads(5, '/nonexistent/task'), 0);
});

test('growHeapFaster: V8 sizes the old generation with the factor it sets, from the next full collection', () => {
  // A child process of its own (the option is V8's, for the whole process); V8's verbose trace
  // prints the factor each full collection sets the next limit with.
  const run = (percent: number) =>
    execFileSync(
      process.execPath,
      [
        '--trace-gc-verbose',
        '--expose-gc',
        '--input-type=module',
        '-e',
        `import { growHeapFaster } from ${JSON.stringify(new URL('../src/gc.ts', import.meta.url).href)};
         process.stdout.write('set=' + growHeapFaster(${percent}) + '\\n');
         globalThis.gc();`,
      ],
      { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } },
    );
  const factors = (out: string) => [...out.matchAll(/\[HeapController\] factor ([\d.]+)/g)].map((m) => m[1]);
  const grown = run(150);
  assert.match(grown, /^set=true$/m);
  const after = factors(grown.slice(grown.indexOf('set=true')));
  assert.ok(after.length > 0, 'the full collection computed a limit');
  assert.deepEqual([...new Set(after)], ['2.5'], 'every limit since uses 1 + 150/100');
  assert.match(run(0), /^set=false$/m);
  assert.equal(growHeapFaster(0), false);
});
