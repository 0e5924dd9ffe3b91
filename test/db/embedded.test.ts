// The embedded PostgreSQL of `npm start`: a second process on the same data directory (a CLI
// command next to a running relay) shares the server instead of shutting it down, and a server
// orphaned by a SIGKILLed owner is shut down and started afresh.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { startEmbedded, type EmbeddedServer } from '../../src/db/embedded.ts';

const EMBEDDED = new URL('../../src/db/embedded.ts', import.meta.url).href;

/** Runs startEmbedded in a child process; it prints the URL, then runs `then`. */
function child(dir: string, then: 'query-and-stop' | 'hang') {
  const script = `
    import pg from 'pg';
    const { startEmbedded } = await import(${JSON.stringify(EMBEDDED)});
    const server = await startEmbedded({ dir: ${JSON.stringify(dir)}, password: 'test' });
    console.log('URL ' + server.url);
    if (${JSON.stringify(then)} === 'query-and-stop') {
      const client = new pg.Client(server.url);
      await client.connect();
      const { rows } = await client.query('SELECT 41 + 1 AS n');
      await client.end();
      console.log('ANSWER ' + rows[0].n);
      await server.stop();
      process.exit(0);
    }
    setInterval(() => {}, 1000);
  `;
  return spawn(process.execPath, ['--input-type=module', '-e', script], { cwd: path.dirname(new URL(import.meta.url).pathname), stdio: ['ignore', 'pipe', 'pipe'] });
}

async function lineFrom(proc: ReturnType<typeof child>, prefix: string): Promise<string> {
  let out = '';
  let err = '';
  proc.stderr!.on('data', (d) => (err += d));
  return await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "${prefix}" line in 60 s; stderr: ${err}`)), 60_000);
    proc.stdout!.on('data', (d) => {
      out += d;
      const line = out.split('\n').find((l) => l.startsWith(prefix));
      if (line) {
        clearTimeout(timer);
        resolve(line.slice(prefix.length));
      }
    });
    proc.on('exit', (code) => {
      clearTimeout(timer);
      if (!out.includes(prefix)) reject(new Error(`child exited ${code} before "${prefix}"; stderr: ${err}`));
    });
  });
}

async function answers(url: string): Promise<boolean> {
  const client = new pg.Client(url);
  try {
    await client.connect();
    await client.query('SELECT 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => {});
  }
}

describe('embedded PostgreSQL', () => {
  let dataDir: string;
  let server: EmbeddedServer | undefined;

  before(() => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'txrelay-embedded-'));
    fs.chmodSync(dataDir, 0o755);
  });

  after(async () => {
    await server?.stop().catch(() => {});
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test('a second process shares the running server and leaves it running', async () => {
    const dir = path.join(dataDir, 'pg');
    server = await startEmbedded({ dir, password: 'test' });
    const proc = child(dir, 'query-and-stop');
    const url = await lineFrom(proc, 'URL ');
    assert.equal(new URL(url).port, new URL(server.url).port, 'the same server');
    assert.equal(await lineFrom(proc, 'ANSWER '), '42');
    await new Promise((r) => proc.once('exit', r));
    assert.ok(await answers(server.url), 'the owner\'s server still answers after the other process stopped');
    await server.stop();
    server = undefined;
  });

  test('a server orphaned by a SIGKILLed owner is shut down and started afresh', async () => {
    const dir = path.join(dataDir, 'pg');
    const proc = child(dir, 'hang');
    const orphanUrl = await lineFrom(proc, 'URL ');
    proc.kill('SIGKILL');
    await new Promise((r) => proc.once('exit', r));
    assert.ok(await answers(orphanUrl), 'postgres outlives its SIGKILLed owner');
    server = await startEmbedded({ dir, password: 'test' });
    assert.ok(await answers(server.url));
    if (new URL(server.url).port !== new URL(orphanUrl).port) assert.equal(await answers(orphanUrl), false, 'the orphan was shut down');
  });
});
