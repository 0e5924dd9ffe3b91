// RSA signatures (DKIM's rsa-sha256) on a thread of their own, one at a time. A 2048-bit
// signature costs about 0.3 ms of CPU, as much as the rest of accepting a small message on the
// event loop. crypto.sign with a callback would run it in libuv's pool, but its four threads then
// sign on every core at once and starve the event loop (measured on 2 cores: the event loop
// waited to run a third of the time), and with a pool of one a slow DNS lookup (webhook targets
// are looked up there) would hold up every signature behind it. A single signing thread takes
// at most one core and drains its own queue without the event loop's help. What is signed crosses
// to the thread as text: a small Buffer is a view of Node's shared 8 KiB pool, which postMessage
// copies whole (measured: 17.5 µs a message for 1 KiB of headers, against 1.4 µs for the text).
// The same thread encodes large HTML bodies (encodeHtmlOffThread). Its code: signer-thread.ts.
import type { KeyObject } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { ownedBytes, type EncodedBody } from './html-body.ts';

/** What the thread answers (signer-thread.ts). */
interface Answer {
  id: number;
  signature?: string;
  encoding?: EncodedBody['encoding'];
  body?: Uint8Array;
  relaxedAsIs?: boolean;
  error?: string;
}

interface Pending {
  resolve: (answer: Answer) => void;
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
    this.#worker = new Worker(new URL('./signer-thread.ts', import.meta.url));
    // An idle signer must not keep the process alive; one with work due does (ref below).
    this.#worker.unref();
    this.#worker.on('message', (m: Answer) => {
      const p = this.#pending.get(m.id);
      if (!p) return;
      this.#pending.delete(m.id);
      if (this.#pending.size === 0) this.#worker.unref();
      if (m.error === undefined) p.resolve(m);
      else p.reject(new Error(m.error));
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

  /** Sends `job` under a new id (set on it) and waits for the thread's answer. */
  #ask(job: { id?: number; [field: string]: unknown }, transfer: ArrayBuffer[] = []): Promise<Answer> {
    const id = (job.id = this.#nextId++);
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#worker.ref();
      this.#worker.postMessage(job, transfer);
    });
  }

  async sign(data: string, key: KeyObject): Promise<string> {
    let keyId = this.#keyIds.get(key);
    if (keyId === undefined) {
      keyId = this.#nextKeyId++;
      this.#keyIds.set(key, keyId);
      this.#worker.postMessage({ keyId, key });
    }
    try {
      return (await this.#ask({ keyId, data })).signature!;
    } catch (err) {
      throw new Error(`DKIM signing failed: ${(err as Error).message}`);
    }
  }

  /** `bytes` must own its ArrayBuffer whole: it moves to the thread and is unusable here after. */
  async encodeHtml(bytes: Uint8Array): Promise<EncodedBody> {
    const a = await this.#ask({ html: bytes }, [bytes.buffer as ArrayBuffer]);
    const body = a.body!;
    return { encoding: a.encoding!, body: Buffer.from(body.buffer, body.byteOffset, body.byteLength), relaxedAsIs: a.relaxedAsIs! };
  }

  /** Ends the thread (tests): what is pending is refused. */
  async terminate(): Promise<void> {
    await this.#worker.terminate();
  }
}

let thread: SigningThread | undefined;

function current(): SigningThread {
  if (!thread?.usable) thread = new SigningThread();
  return thread;
}

/**
 * The RSA-SHA256 signature (base64) of `data`, bytes as latin1 text, with `key`, computed on the
 * signing thread. Should the
 * thread fail, the signatures it held are refused (their messages get a 451 and are sent again)
 * and the next one starts a new thread.
 */
export function rsaSign(data: string, key: KeyObject): Promise<string> {
  return current().sign(data, key);
}

/**
 * html-body.ts's encodeHtmlBody on the signing thread, for a large HTML part: quoted-printable
 * runs over every byte, about 2.8 ns each, which for 100 KB was 15% of the event loop's work in
 * accepting the message, while the signing thread was idle most of the time. The HTML's bytes
 * move to the thread (not copied) and the body comes back the same way. Refused as rsaSign is.
 */
export function encodeHtmlOffThread(html: string): Promise<EncodedBody> {
  // Buffer.from of a large string gives a buffer with an ArrayBuffer of its own, exactly its size.
  return current().encodeHtml(ownedBytes(Buffer.from(html, 'utf8')));
}

/** Stops the signing thread, refusing what it held (for tests of that failure). */
export async function stopSigningThread(): Promise<void> {
  await thread?.terminate();
}
