// Development secrets: when TXRELAY_ADMIN_TOKEN / TXRELAY_SECRET are unset (never in
// production: config refuses that), generate them once into the data dir and reuse them.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from './config.ts';
import { replaceFile, writeFirst } from './first-write.ts';

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
  const existed = fs.existsSync(file);
  const stored: Stored = existed ? (JSON.parse(fs.readFileSync(file, 'utf8')) as Stored) : {};
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
  if (changed && !existed) {
    // Two processes starting together on an empty data dir must not each keep secrets of their
    // own (tokens signed by one would fail in the other): the first file wins, and a process
    // that lost uses the winner's values.
    const written = JSON.stringify(stored, null, 2);
    // Lost: start over from the winner's file (filling in what it lacks, if anything).
    if (writeFirst(file, written) !== written) return resolveSecrets(config);
  } else if (changed) {
    replaceFile(file, JSON.stringify(stored, null, 2));
  }
  return {
    adminToken: config.adminToken ?? stored.adminToken!,
    secret: config.secret ?? stored.secret!,
    pgPassword: stored.pgPassword ?? '',
    adminTokenGenerated,
  };
}
