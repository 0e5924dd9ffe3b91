// The upstream for end-to-end figures: a minimal smtp-server that reads every message to the
// end, discards it and counts it. Run as a child of bench/run.ts (fork, so it has its own event
// loop and CPU time, as a real upstream would): it sends {port} once listening, answers
// {type: 'count'} with {count}, and exits on {type: 'stop'} or when its parent goes away.
// A second instance (another fork) is the bench's smtp-server ceiling: the SMTP library
// txrelay is built on, with nothing behind it.
//
// No AUTH, no STARTTLS (TLS would measure OpenSSL, not the relay), no reverse DNS lookup, and
// without smtp-server's 100 ms greeting pause (the relay's own patch, src/smtp/patches.ts), so
// that opening the relay's pooled connections costs nothing extra and the ceiling is not capped
// at 10 connections per second per client.
import type { AddressInfo } from 'node:net';
import { SMTPServer } from 'smtp-server';
import { applySmtpServerPatches } from '../src/smtp/patches.ts';

applySmtpServerPatches();
let count = 0;
const server = new SMTPServer({
  authOptional: true,
  disabledCommands: ['AUTH', 'STARTTLS'],
  disableReverseLookup: true,
  logger: false,
  maxClients: 1000,
  size: 50 * 1024 * 1024,
  onData(stream, _session, callback) {
    stream.on('data', () => {});
    stream.on('end', () => {
      count++;
      callback(null, 'Ok: discarded');
    });
  },
});
server.on('error', (err: Error) => process.stderr.write(`sink: ${err.message}\n`));

server.listen(0, '127.0.0.1', () => {
  process.send?.({ type: 'ready', port: (server.server.address() as AddressInfo).port });
});

process.on('message', (m: { type?: string }) => {
  if (m.type === 'count') process.send?.({ type: 'count', count });
  if (m.type === 'stop') {
    // The relay's pooled connections may still be open: give them a moment, not 30 s.
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 1000);
  }
});
// The bench died without telling us: do not linger.
process.on('disconnect', () => process.exit(0));
