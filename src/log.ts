// JSON-lines logging (pino). Keys, passwords and bodies are never logged: the redact list is a
// second line of defence behind simply not passing them.
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      base: { pid: process.pid },
      redact: {
        paths: ['key', 'apiKey', 'password', 'pass', 'secret', 'authorization', 'body', 'raw', 'mime', '*.pass', '*.password', '*.key'],
        censor: '[redacted]',
      },
    },
    destination as never,
  );
}
