// Development secrets and the self-signed certificate, generated once into the data dir: several
// processes starting together on an empty data dir must all end up with the same ones.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { loadConfig } from '../src/config.ts';
import { writeFirst } from '../src/first-write.ts';
import { resolveSecrets } from '../src/secrets.ts';

const run = promisify(execFile);
const SRC = path.resolve(import.meta.dirname, '../src');
const tmpDir = () => fs.mkdtempSync(path.join(os.tmpdir(), 'txrelay-secrets-'));

test('writeFirst: the first content stays, later writers read it, no temporary file is left', () => {
  const dir = tmpDir();
  const file = path.join(dir, 'sub', 'f.txt');
  assert.equal(writeFirst(file, 'one'), 'one');
  assert.equal(writeFirst(file, 'two'), 'one');
  assert.deepEqual(fs.readdirSync(path.dirname(file)), ['f.txt']);
  assert.equal(fs.statSync(file).mode & 0o777, 0o600);
});

test('resolveSecrets: generated once, then reused; a file missing a value gets it added', () => {
  const dir = tmpDir();
  const config = loadConfig({ TXRELAY_DATA_DIR: dir });
  const first = resolveSecrets(config);
  assert.equal(first.adminTokenGenerated, true);
  const again = resolveSecrets(config);
  assert.deepEqual({ ...again, adminTokenGenerated: true }, first);
  assert.equal(again.adminTokenGenerated, false);

  // Written by a process that had DATABASE_URL (no embedded password needed).
  const other = tmpDir();
  fs.writeFileSync(path.join(other, 'secrets.json'), JSON.stringify({ adminToken: 'txr_admin_x', secret: 's'.repeat(64) }));
  const filled = resolveSecrets(loadConfig({ TXRELAY_DATA_DIR: other }));
  assert.equal(filled.secret, 's'.repeat(64));
  assert.ok(filled.pgPassword.length > 20);
  assert.equal(JSON.parse(fs.readFileSync(path.join(other, 'secrets.json'), 'utf8')).pgPassword, filled.pgPassword);
});

test('processes starting together on an empty data dir share one set of secrets and one key pair', async () => {
  const dir = tmpDir();
  const script = `
    import { loadConfig } from ${JSON.stringify(path.join(SRC, 'config.ts'))};
    import { resolveSecrets } from ${JSON.stringify(path.join(SRC, 'secrets.ts'))};
    import { loadTls } from ${JSON.stringify(path.join(SRC, 'smtp/tls.ts'))};
    const config = loadConfig({ TXRELAY_DATA_DIR: ${JSON.stringify(dir)}, TXRELAY_HOSTNAME: 'relay.test' });
    const s = resolveSecrets(config);
    const tls = await loadTls(config);
    const { createPrivateKey, X509Certificate } = await import('node:crypto');
    const matches = new X509Certificate(tls.cert).checkPrivateKey(createPrivateKey(tls.key));
    console.log(JSON.stringify({ secret: s.secret, admin: s.adminToken, cert: tls.cert.toString(), matches }));`;
  const outputs = await Promise.all(
    Array.from({ length: 4 }, () => run(process.execPath, ['--input-type=module', '-e', script], { timeout: 60_000 })),
  );
  const results = outputs.map((o) => JSON.parse(o.stdout) as { secret: string; admin: string; cert: string; matches: boolean });
  for (const r of results) {
    assert.equal(r.matches, true, 'each process pairs a key with its own certificate');
    assert.deepEqual([r.secret, r.admin, r.cert], [results[0].secret, results[0].admin, results[0].cert]);
  }
  assert.deepEqual(fs.readdirSync(dir).sort(), ['secrets.json', 'tls-self-signed.pem']);
});
