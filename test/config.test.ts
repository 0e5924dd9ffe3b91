// Configuration is validated once; a bad value stops start-up with one line naming the variable.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { ConfigError, describeConfig, loadConfig } from '../src/config.ts';

test('defaults follow SPEC §1', () => {
  const c = loadConfig({});
  assert.deepEqual(c.smtpPorts, [2525]);
  assert.deepEqual(c.smtpsPorts, []);
  assert.equal(c.httpPort, 8080);
  assert.equal(c.bind, '0.0.0.0');
  assert.equal(c.requireTls, false);
  assert.equal(c.maxMessageBytes, 26214400);
  assert.equal(c.maxRecipients, 50);
  assert.deepEqual(c.roles, ['smtp', 'api', 'worker']);
  assert.equal(c.publicUrl, 'http://localhost:8080');
});

test('the demo tenant is seeded only under NODE_ENV=development, the default', () => {
  assert.equal(loadConfig({}).seedDemo, true);
  assert.equal(loadConfig({ NODE_ENV: 'development' }).seedDemo, true);
  assert.equal(loadConfig({ NODE_ENV: 'test' }).seedDemo, false);
  assert.equal(loadConfig({ NODE_ENV: 'staging' }).seedDemo, false);
});

test('template sandbox limits: defaults, and each set on its own', () => {
  const d = loadConfig({});
  assert.deepEqual([d.templateTimeoutMs, d.templateMaxOutputBytes, d.templateMemoryMb, d.templateIsolates], [1000, 5 * 1024 * 1024, 64, 4]);
  const c = loadConfig({ TXRELAY_TEMPLATE_TIMEOUT_MS: '250', TXRELAY_TEMPLATE_MAX_OUTPUT_BYTES: '1048576', TXRELAY_TEMPLATE_MEMORY_MB: ' 32 ', TXRELAY_TEMPLATE_ISOLATES: '2' });
  assert.deepEqual([c.templateTimeoutMs, c.templateMaxOutputBytes, c.templateMemoryMb, c.templateIsolates], [250, 1048576, 32, 2]);
});

test('TXRELAY_SPF_INCLUDE: unset by default, a host name (underscores allowed) when set', () => {
  assert.equal(loadConfig({}).spfInclude, undefined);
  assert.equal(loadConfig({ TXRELAY_SPF_INCLUDE: ' _spf.Example-ESP.net ' }).spfInclude, '_spf.example-esp.net');
});

test('operations: metrics token and port unset by default; PROXY protocol off, on, or per balancer', () => {
  const d = loadConfig({});
  assert.deepEqual([d.metricsToken, d.metricsPort, d.smtpProxyProtocol], [undefined, undefined, false]);
  const c = loadConfig({ TXRELAY_METRICS_TOKEN: ' m'.padEnd(20, 'x') + ' ', TXRELAY_METRICS_PORT: '9464', TXRELAY_SMTP_PROXY_PROTOCOL: 'true' });
  assert.deepEqual([c.metricsToken, c.metricsPort, c.smtpProxyProtocol], ['m'.padEnd(19, 'x'), 9464, true]);
  assert.equal(loadConfig({ TXRELAY_SMTP_PROXY_PROTOCOL: 'no' }).smtpProxyProtocol, false);
  assert.deepEqual(loadConfig({ TXRELAY_SMTP_PROXY_PROTOCOL: '10.0.0.5, 2001:db8::7' }).smtpProxyProtocol, ['10.0.0.5', '2001:db8::7']);
  // A worker may use the API's port number for metrics: it serves no API.
  assert.equal(loadConfig({ TXRELAY_ROLES: 'worker', TXRELAY_METRICS_PORT: '8080' }).metricsPort, 8080);
  assert.equal(describeConfig(loadConfig({ TXRELAY_METRICS_TOKEN: 'metrics-token-0123456789' })).metricsToken, '****');
});

test('production requires TLS, an admin token and a secret', () => {
  assert.throws(() => loadConfig({ NODE_ENV: 'production', TXRELAY_SECRET: 's'.repeat(40) }), /^ConfigError: configuration error: TXRELAY_ADMIN_TOKEN is required/);
  assert.throws(() => loadConfig({ NODE_ENV: 'production', TXRELAY_ADMIN_TOKEN: 't'.repeat(20) }), /TXRELAY_SECRET is required/);
  const c = loadConfig({ NODE_ENV: 'production', TXRELAY_ADMIN_TOKEN: 't'.repeat(20), TXRELAY_SECRET: 's'.repeat(40) });
  assert.equal(c.requireTls, true);
});

test('each bad value names its variable in one line', () => {
  const cases: [Record<string, string>, RegExp][] = [
    [{ TXRELAY_SMTP_PORTS: '587,abc' }, /TXRELAY_SMTP_PORTS "abc" is not a port number/],
    [{ TXRELAY_SMTPS_PORTS: '70000' }, /TXRELAY_SMTPS_PORTS "70000" is not a port number/],
    [{ TXRELAY_HTTP_PORT: 'http' }, /TXRELAY_HTTP_PORT must be a port number/],
    [{ TXRELAY_REQUIRE_TLS: 'maybe' }, /TXRELAY_REQUIRE_TLS must be true or false/],
    [{ TXRELAY_MAX_RECIPIENTS: '0' }, /TXRELAY_MAX_RECIPIENTS must be greater than 0/],
    [{ TXRELAY_MAX_MESSAGE_BYTES: '1.5' }, /TXRELAY_MAX_MESSAGE_BYTES must be a whole number/],
    [{ TXRELAY_ROLES: 'smtp,mta' }, /TXRELAY_ROLES unknown role "mta"/],
    [{ DATABASE_URL: 'mysql://x' }, /DATABASE_URL must be a postgres/],
    [{ TXRELAY_PUBLIC_URL: 'ftp://x' }, /TXRELAY_PUBLIC_URL must be an http\(s\) URL/],
    [{ TXRELAY_SECRET: 'short' }, /TXRELAY_SECRET must be at least 32 characters/],
    [{ TXRELAY_TLS_CERT: '/c.pem' }, /TXRELAY_TLS_KEY must be set together with TXRELAY_TLS_CERT/],
    [{ TXRELAY_SMTP_PORTS: '', TXRELAY_SMTPS_PORTS: '' }, /both empty/],
    [{ TXRELAY_SPF_INCLUDE: 'include:spf.example.net' }, /TXRELAY_SPF_INCLUDE must be a host name/],
    [{ TXRELAY_SPF_INCLUDE: 'localhost' }, /TXRELAY_SPF_INCLUDE must be a host name/],
    [{ TXRELAY_TEMPLATE_TIMEOUT_MS: '0' }, /TXRELAY_TEMPLATE_TIMEOUT_MS must be from 1 to 60000/],
    [{ TXRELAY_TEMPLATE_TIMEOUT_MS: '1s' }, /TXRELAY_TEMPLATE_TIMEOUT_MS must be a whole number/],
    [{ TXRELAY_TEMPLATE_MAX_OUTPUT_BYTES: '-1' }, /TXRELAY_TEMPLATE_MAX_OUTPUT_BYTES must be a whole number/],
    [{ TXRELAY_TEMPLATE_MEMORY_MB: '4' }, /TXRELAY_TEMPLATE_MEMORY_MB must be from 8 to 4096/],
    [{ TXRELAY_TEMPLATE_ISOLATES: '0' }, /TXRELAY_TEMPLATE_ISOLATES must be from 1 to 64/],
    [{ TXRELAY_METRICS_TOKEN: 'short' }, /TXRELAY_METRICS_TOKEN must be at least 16 characters/],
    [{ TXRELAY_METRICS_PORT: 'nine' }, /TXRELAY_METRICS_PORT must be a port number/],
    [{ TXRELAY_METRICS_PORT: '70000' }, /TXRELAY_METRICS_PORT must be a port number \(0-65535\)/],
    [{ TXRELAY_METRICS_PORT: '8080' }, /TXRELAY_METRICS_PORT must differ from TXRELAY_HTTP_PORT/],
    [{ TXRELAY_SMTP_PROXY_PROTOCOL: 'maybe' }, /TXRELAY_SMTP_PROXY_PROTOCOL "maybe" is neither true, false nor an IP address/],
    [{ TXRELAY_SMTP_PROXY_PROTOCOL: '10.0.0.5,lb.example' }, /TXRELAY_SMTP_PROXY_PROTOCOL "lb.example" is neither/],
  ];
  for (const [env, re] of cases) {
    assert.throws(() => loadConfig(env), (err: Error) => err instanceof ConfigError && re.test(err.message) && !err.message.includes('\n'), JSON.stringify(env));
  }
});

test('`txrelay config` masks secrets; a bad variable exits non-zero with one line', () => {
  const env = { ...process.env, TXRELAY_ADMIN_TOKEN: 'admin-token-1234567890', TXRELAY_SECRET: 'x'.repeat(40), DATABASE_URL: 'postgres://u:hunter2@db:5432/t' };
  const ok = spawnSync(process.execPath, ['src/cli.ts', 'config'], { env, encoding: 'utf8' });
  assert.equal(ok.status, 0, ok.stderr);
  assert.ok(!ok.stdout.includes('admin-token-1234567890'));
  assert.ok(!ok.stdout.includes('hunter2'));
  assert.match(ok.stdout, /postgres:\/\/u:\*\*\*\*@db:5432\/t/);
  const bad = spawnSync(process.execPath, ['src/cli.ts', 'config'], { env: { ...env, TXRELAY_HTTP_PORT: 'eighty' }, encoding: 'utf8' });
  assert.equal(bad.status, 1);
  assert.equal(bad.stderr.trim(), 'configuration error: TXRELAY_HTTP_PORT must be a port number');
  assert.equal(describeConfig(loadConfig({ TXRELAY_SECRET: 'y'.repeat(40) })).secret, '****');
});

test('SMTP connection limits, deadlines and the shutdown grace: defaults, values, and bad values named', () => {
  const d = loadConfig({});
  assert.deepEqual(
    [d.smtpMaxClients, d.smtpMaxPerIp, d.smtpSessionTimeoutMs, d.smtpDataTimeoutMs, d.shutdownTimeoutMs],
    [1000, 50, 600_000, 300_000, 30_000],
  );
  const c = loadConfig({
    TXRELAY_SMTP_MAX_CLIENTS: '200',
    TXRELAY_SMTP_MAX_PER_IP: '5',
    TXRELAY_SMTP_SESSION_TIMEOUT_SECONDS: '60',
    TXRELAY_SMTP_DATA_TIMEOUT_SECONDS: '10',
    TXRELAY_SHUTDOWN_TIMEOUT_SECONDS: '5',
  });
  assert.deepEqual([c.smtpMaxClients, c.smtpMaxPerIp, c.smtpSessionTimeoutMs, c.smtpDataTimeoutMs, c.shutdownTimeoutMs], [200, 5, 60_000, 10_000, 5_000]);
  for (const variable of ['TXRELAY_SMTP_MAX_CLIENTS', 'TXRELAY_SMTP_MAX_PER_IP', 'TXRELAY_SMTP_SESSION_TIMEOUT_SECONDS', 'TXRELAY_SMTP_DATA_TIMEOUT_SECONDS', 'TXRELAY_SHUTDOWN_TIMEOUT_SECONDS']) {
    assert.throws(() => loadConfig({ [variable]: '0' }), (err: Error) => err instanceof ConfigError && err.message.startsWith(`configuration error: ${variable} `));
    assert.throws(() => loadConfig({ [variable]: 'soon' }), new RegExp(`^ConfigError: configuration error: ${variable} must be a whole number`));
  }
});

test('TXRELAY_GC_THREAD_NICE: 19 unless set, 0 to 19, anything else named', () => {
  assert.equal(loadConfig({}).gcThreadNice, 19);
  assert.equal(loadConfig({ TXRELAY_GC_THREAD_NICE: '0' }).gcThreadNice, 0);
  assert.equal(loadConfig({ TXRELAY_GC_THREAD_NICE: '19' }).gcThreadNice, 19);
  for (const bad of ['20', '-1', 'low']) {
    assert.throws(() => loadConfig({ TXRELAY_GC_THREAD_NICE: bad }), (err: Error) => err instanceof ConfigError && err.message.startsWith('configuration error: TXRELAY_GC_THREAD_NICE '));
  }
});

test('TXRELAY_STORE_COMPRESSION: zstd unless set, or none; anything else named', () => {
  assert.equal(loadConfig({}).storeCompression, 'zstd');
  assert.equal(loadConfig({ TXRELAY_STORE_COMPRESSION: 'none' }).storeCompression, 'none');
  assert.throws(() => loadConfig({ TXRELAY_STORE_COMPRESSION: 'pglz' }), (err: Error) => err instanceof ConfigError && err.message.startsWith('configuration error: TXRELAY_STORE_COMPRESSION '));
});

test('TXRELAY_GC_HEAP_GROWTH_PERCENT: 200 unless set, 0 to 1000, anything else named', () => {
  assert.equal(loadConfig({}).gcHeapGrowthPercent, 200);
  assert.equal(loadConfig({ TXRELAY_GC_HEAP_GROWTH_PERCENT: '0' }).gcHeapGrowthPercent, 0);
  assert.equal(loadConfig({ TXRELAY_GC_HEAP_GROWTH_PERCENT: '1000' }).gcHeapGrowthPercent, 1000);
  for (const bad of ['1001', '-5', 'double']) {
    assert.throws(
      () => loadConfig({ TXRELAY_GC_HEAP_GROWTH_PERCENT: bad }),
      (err: Error) => err instanceof ConfigError && err.message.startsWith('configuration error: TXRELAY_GC_HEAP_GROWTH_PERCENT '),
    );
  }
});
