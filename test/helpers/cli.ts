// Runs `node src/cli.ts …` as a child process against a test database: exit code, output, and
// the parsed JSON when `--json` was asked for and the command succeeded.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { TEST_SECRET } from './context.ts';

const run = promisify(execFile);
const CLI = path.resolve(import.meta.dirname, '../../src/cli.ts');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  // Test code reads arbitrary fields of the JSON output.
  json: any;
}

/** `databaseUrl` and `dataDir` (also the working directory) of the test. */
export async function runCli(target: { databaseUrl: string; dataDir: string }, args: string[]): Promise<CliResult> {
  let r: { code: number; stdout: string; stderr: string };
  try {
    const { stdout, stderr } = await run(process.execPath, [CLI, ...args], {
      cwd: target.dataDir,
      env: { ...process.env, DATABASE_URL: target.databaseUrl, TXRELAY_SECRET: TEST_SECRET, TXRELAY_DATA_DIR: target.dataDir, LOG_LEVEL: 'silent' },
      encoding: 'utf8',
    });
    r = { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    r = { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
  return { ...r, json: args.includes('--json') && r.code === 0 ? JSON.parse(r.stdout) : undefined };
}

/** Success: exit 0 and nothing on stderr. */
export function assertOk(r: CliResult): void {
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, '');
}

/** A user error: exit `code`, `error: …` as the first stderr line, no stack trace, no stdout. */
export function assertFailed(r: CliResult, code: 1 | 2, message: RegExp): void {
  assert.equal(r.code, code, `exit ${r.code}; stdout: ${r.stdout}; stderr: ${r.stderr}`);
  assert.match(r.stderr.split('\n')[0], /^error: /);
  assert.match(r.stderr, message);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
  assert.equal(r.stdout, '');
}
