// RSA signatures (DKIM's rsa-sha256) on a thread of their own, one at a time. A 2048-bit
// signature costs about 0.3 ms of CPU, as much as the rest of accepting a small message on the
// event loop. crypto.sign with a callback would run it in libuv's pool, but its four threads then
// sign on every core at once and starve the event loop (measured on 2 cores: the event loop
// waited to run a third of the time), and with a pool of one a slow DNS lookup (webhook targets
// are looked up there) would hold up every signature behind it. A single signing thread takes
// at most one core and drains its own queue without the event loop's help. What is signed crosses
// to the thread as text: a small Buffer is a view of Node's shared 8 KiB pool, which postMessage
// copies whole (measured: 17.5 µs a message for 1 KiB of headers, against 1.4 µs for the text).
import type { KeyObject } from 'node:crypto';
import { Worker } from 'node:worker_threads';

/** The thread: keys arrive once each, then jobs name them. Plain JavaScript (eval). */
const THREAD_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { sign } = require('node:crypto');
const keys = new Map();
parentPort.on('message', (m) => {
  if (m.key) return void keys.set(m.keyId, m.key);
  try {
    parentPort.postMessage({ id: m.id, signature: sign('sha256', Buffer.from(m.data, 'latin1'), keys.get(m.keyId)).toString('base64') });
  } catch (err) {
    parentPort.postMessage({ id: m.id, error: String(err && err.message || err) });
  }
});
`;

interface Pending {
  resolve: (signature: string) => void;
  reject: (err: Error) => void;
}

class SigningThread {
  readonly #worker: Worker;
  readonly #pending = new Map<number, Pending>();
  /** Ids of the keys this thread has been sent. */
  readonly #keyIds = new WeakMap<KeyObject, number>();
  #nextId = 0;
  #nextKeyId = 0;
  #failed: Error | undefined;

  constructor() {
    this.#worker = new Worker(THREAD_SOURCE, { eval: true });
    // An idle signer must not keep the process alive; one with signatures due does (ref below).
    this.#worker.unref();
    this.#worker.on('message', (m: { id: number; signature?: string; error?: string }) => {
      const p = this.#pending.get(m.id);
      if (!p) return;
      this.#pending.delete(m.id);
      if (this.#pending.size === 0) this.#worker.unref();
      if (m.signature) p.resolve(m.signature);
      else p.reject(new Error(`DKIM signing failed: ${m.error}`));
    });
    const fail = (err: Error) => {
      this.#failed ??= err;
      for (const p of this.#pending.values()) p.reject(err);
      this.#pending.clear();
    };
    this.#worker.on('error', (err) => fail(new Error(`the DKIM signing thread failed: ${err.message}`)));
    this.#worker.on('exit', (code) => fail(new Error(`the DKIM signing thread exited (code ${code})`)));
  }

  /** False once the thread has failed or exited: a new one takes over. */
  get usable(): boolean {
    return this.#failed === undefined;
  }

  sign(data: string, key: KeyObject): Promise<string> {
    let keyId = this.#keyIds.get(key);
    if (keyId === undefined) {
      keyId = this.#nextKeyId++;
      this.#keyIds.set(key, keyId);
      this.#worker.postMessage({ keyId, key });
    }
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#worker.ref();
      this.#worker.postMessage({ id, keyId, data });
    });
  }

  /** Ends the thread (tests): what is pending is refused. */
  async terminate(): Promise<void> {
    await this.#worker.terminate();
  }
}

let thread: SigningThread | undefined;

/**
 * The RSA-SHA256 signature (base64) of `data`, bytes as latin1 text, with `key`, computed on the
 * signing thread. Should the
 * thread fail, the signatures it held are refused (their messages get a 451 and are sent again)
 * and the next one starts a new thread.
 */
export function rsaSign(data: string, key: KeyObject): Promise<string> {
  if (!thread?.usable) thread = new SigningThread();
  return thread.sign(data, key);
}

/** Stops the signing thread, refusing what it held (for tests of that failure). */
export async function stopSigningThread(): Promise<void> {
  await thread?.terminate();
}
