// The signing thread's side of src/pipeline/signer.ts: RSA signatures, and the encoding of a
// large HTML body. Keys arrive once each, then jobs name them.
import { sign, type KeyObject } from 'node:crypto';
import { parentPort } from 'node:worker_threads';
import { encodeHtmlBytes, ownedBytes } from './html-body.ts';

const keys = new Map<number, KeyObject>();

type Job = { keyId: number; key: KeyObject } | { id: number; keyId: number; data: string } | { id: number; html: Uint8Array };

parentPort!.on('message', (m: Job) => {
  if ('key' in m) return void keys.set(m.keyId, m.key);
  try {
    if ('html' in m) {
      const encoded = encodeHtmlBytes(Buffer.from(m.html.buffer, m.html.byteOffset, m.html.byteLength));
      // Quoted-printable comes in a part of a buffer sized for the worst case (3x and more): that
      // part is copied; 7bit is the HTML's own bytes, which move back as they are.
      const body = ownedBytes(encoded.body);
      parentPort!.postMessage({ id: m.id, encoding: encoded.encoding, body, relaxedAsIs: encoded.relaxedAsIs }, [body.buffer as ArrayBuffer]);
      return;
    }
    parentPort!.postMessage({ id: m.id, signature: sign('sha256', Buffer.from(m.data, 'latin1'), keys.get(m.keyId)!).toString('base64') });
  } catch (err) {
    parentPort!.postMessage({ id: m.id, error: String((err as Error)?.message ?? err) });
  }
});
