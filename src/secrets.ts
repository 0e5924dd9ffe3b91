// Development secrets: when TXRELAY_ADMIN_TOKEN / TXRELAY_SECRET are unset (never in
// production: config refuses that), generate them once into the data dir and reuse them.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from './config.ts';

export interface Secrets {
  adminToken: string;
  secret: string;
  pgPassword: string;
  /** True when this call generated the admin token (so start-up prints it once). */
  adminTokenGenerated: boolean;
}

interface Stored {
  adminToken?: string;
  secret?: string;
  pgPassword?: string;
}

export function resolveSecrets(config: Config): Secrets {
  const file = path.join(config.dataDir, 'secrets.json');
  let stored: Stored = {};
  if (fs.existsSync(file)) stored = JSON.parse(fs.readFileSync(file, 'utf8')) as Stored;
  const gen = () => crypto.randomBytes(24).toString('base64url');
  let changed = false;
  let adminTokenGenerated = false;
  if (!config.adminToken && !stored.adminToken) {
    stored.adminToken = `txr_admin_${gen()}`;
    adminTokenGenerated = true;
    changed = true;
  }
  if (!config.secret && !stored.secret) {
    stored.secret = gen() + gen();
    changed = true;
  }
  if (!config.databaseUrl && !stored.pgPassword) {
    stored.pgPassword = gen();
    changed = true;
  }
  if (changed) {
    fs.mkdirSync(config.dataDir, { recursive: true });
    fs.writeFileSync(file, JSON.stringify(stored, null, 2), { mode: 0o600 });
  }
  return {
    adminToken: config.adminToken ?? stored.adminToken!,
    secret: config.secret ?? stored.secret!,
    pgPassword: stored.pgPassword ?? '',
    adminTokenGenerated,
  };
}
