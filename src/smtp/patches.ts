// Deliberate adjustments to smtp-server's SMTPConnection, in one place:
//
// 1. Replies that already carry an enhanced status code (ours all do: SmtpError) are sent as
//    they are; smtp-server would otherwise prefix a generic code of its own (RFC 2034 §4
//    wants one code per reply). Its own replies keep its codes. Its non-standard
//    "538 Must issue a STARTTLS command first" becomes SPEC §3's 530 5.7.0.
//
// 2. Replies to pipelined commands (RFC 2920) leave in one TCP write: a client that sends
//    RSET, MAIL, RCPT and DATA at once gets its four replies in one segment, not four writes
//    (each a system call that also runs loopback TCP for the receiver). The socket is corked at
//    the first 250/354 and uncorked once the current round of callbacks is over (setImmediate).
//    Other replies (220 before a TLS handshake, 421 before a close) are never held back.
//
// 3. smtp-server always lists AUTH in EHLO; with TLS required we hide it until STARTTLS.
//
// 4. The 100 ms "early talker" pause before the greeting is removed. That heuristic guards
//    port 25 against spam bots; on a submission port every client authenticates with an API
//    key, so the pause only adds 100 ms to every connection (and caps a client that opens one
//    connection per message at ~10 messages/s per connection). Clients that talk before the
//    greeting are still refused: smtp-server checks `_ready` on every command.
//
// 5. The DATA parser finds lines that start with a dot with a native search instead of a loop
//    over every byte (data-stream.ts).
// The same module instance the ESM build of SMTPServer uses.
import type { Socket } from 'node:net';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { patchDataStream } from './data-stream.ts';

const ENHANCED = /^[245]\.\d{1,3}\.\d{1,3} /;
let applied = false;

export function applySmtpServerPatches(): void {
  if (applied) return;
  applied = true;
  patchDataStream();
  const proto = SMTPConnection.prototype as unknown as {
    send(this: unknown, code: number, data?: unknown, context?: unknown): void;
    init(this: unknown): void;
    _setListeners(this: unknown, cb: () => void): void;
    connectionReady(this: unknown): void;
  };
  const send = proto.send;
  proto.send = function patchedSend(this: { secure?: boolean; _socket?: Socket; _server: { options: { hideAuthBeforeTls?: boolean } } }, code, data, context) {
    // 2. Pipelined replies in one write.
    const socket = this._socket;
    if ((code === 250 || code === 354) && socket && !socket.writableCorked) {
      socket.cork();
      setImmediate(() => socket.uncork());
    }
    // 3. With TLS required, AUTH is not offered in EHLO before STARTTLS (SPEC §3).
    if (code === 250 && Array.isArray(data) && !this.secure && this._server.options.hideAuthBeforeTls) {
      data = data.filter((line: string) => !line.startsWith('AUTH '));
    }
    if (code === 538) return send.call(this, 530, '5.7.0 Must issue a STARTTLS command first', false);
    if (typeof data === 'string' && ENHANCED.test(data)) return send.call(this, code, data, false);
    return send.call(this, code, data, context);
  };
  proto.init = function patchedInit(this: {
    _setListeners(cb: () => void): void;
    _server: { options: { maxClients?: number }; connections: Set<unknown> };
    name: string;
    send(code: number, data: string, context: unknown): void;
    connectionReady(): void;
  }) {
    this._setListeners(() => {
      if (this._server.options.maxClients && this._server.connections.size > this._server.options.maxClients) {
        return this.send(421, '4.7.0 ' + this.name + ' Too many connected clients, try again in a moment', false);
      }
      this.connectionReady();
    });
  } as never;
}
