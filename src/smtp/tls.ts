// TLS material for STARTTLS and implicit-TLS ports: the configured PEM files, or a self-signed
// pair generated once into the data dir (development; clients must skip verification).
import fs from 'node:fs';
import path from 'node:path';
import { generate } from 'selfsigned';
import type { Config } from '../config.ts';
import { writeFirst } from '../first-write.ts';

export interface TlsMaterial {
  key: Buffer;
  cert: Buffer;
  selfSigned: boolean;
}

export async function loadTls(config: Config): Promise<TlsMaterial> {
  if (config.tlsCert && config.tlsKey) {
    return { cert: fs.readFileSync(config.tlsCert), key: fs.readFileSync(config.tlsKey), selfSigned: false };
  }
  // Written by txrelay before this file held both: still used where it exists.
  const certFile = path.join(config.dataDir, 'tls-cert.pem');
  const keyFile = path.join(config.dataDir, 'tls-key.pem');
  if (fs.existsSync(certFile) && fs.existsSync(keyFile)) {
    return { cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile), selfSigned: true };
  }
  // Key and certificate in one file, so that processes starting together on an empty data dir
  // cannot pair one's key with another's certificate: the first file written wins (writeFirst).
  const pairFile = path.join(config.dataDir, 'tls-self-signed.pem');
  let pair = fs.existsSync(pairFile) ? fs.readFileSync(pairFile, 'utf8') : undefined;
  if (pair === undefined) {
    const pems = await generate([{ name: 'commonName', value: config.hostname }], {
      keySize: 2048,
      algorithm: 'sha256',
      days: 825,
      extensions: [{ name: 'subjectAltName', altNames: [{ type: 2, value: config.hostname }, { type: 2, value: 'localhost' }] }],
    } as never);
    pair = writeFirst(pairFile, pems.private.trim() + '\n' + pems.cert.trim() + '\n');
  }
  const key = /-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]+?-----END [A-Z ]*PRIVATE KEY-----/.exec(pair)?.[0];
  const cert = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(pair)?.[0];
  if (!key || !cert) throw new Error(`${pairFile} does not hold a private key and a certificate: delete it to have a new pair generated`);
  return { cert: Buffer.from(cert + '\n'), key: Buffer.from(key + '\n'), selfSigned: true };
}
