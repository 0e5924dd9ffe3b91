// The command side of the hand-written SMTP upstreams that play faults smtp-server cannot (a
// hang-up after the final dot, a reply one byte a second): it reads commands, answers them as a
// permissive server would, and hands each message to the caller, who answers it.
import type net from 'node:net';

export interface RawSessionHooks {
  /** While a message arrives: what has been read of it so far (called after each read). */
  onPartialMessage?(soFar: string): void;
  /** A whole message, without its final dot. Answer it here; return false to stop reading the session. */
  onMessage(body: string): boolean | void;
}

/** Serves one session on `socket` (after the caller's greeting); `name` appears in the EHLO reply. */
export function serveSmtpSession(socket: net.Socket, name: string, hooks: RawSessionHooks): void {
  let buffer = '';
  let inData = false;
  socket.on('data', (chunk) => {
    buffer += chunk.toString('latin1');
    for (;;) {
      if (inData) {
        hooks.onPartialMessage?.(buffer);
        const end = buffer.indexOf('\r\n.\r\n');
        if (end < 0) return;
        const body = buffer.slice(0, end);
        buffer = buffer.slice(end + 5);
        inData = false;
        if (hooks.onMessage(body) === false) return;
        continue;
      }
      const eol = buffer.indexOf('\r\n');
      if (eol < 0) return;
      const verb = buffer.slice(0, Math.min(eol, 4)).toUpperCase();
      buffer = buffer.slice(eol + 2);
      if (verb === 'EHLO') socket.write(`250-${name}\r\n250 8BITMIME\r\n`);
      else if (verb === 'HELO' || verb === 'MAIL' || verb === 'RCPT' || verb === 'RSET' || verb === 'NOOP') socket.write('250 2.0.0 Ok\r\n');
      else if (verb === 'DATA') {
        inData = true;
        socket.write('354 go ahead\r\n');
      } else if (verb === 'QUIT') socket.end('221 2.0.0 Bye\r\n');
      else socket.write('502 5.5.2 Not implemented\r\n');
    }
  });
}
