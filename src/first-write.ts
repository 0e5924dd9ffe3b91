// Files that several processes may create at the same moment: `npm start` next to a worker, or
// the processes of a scale-out test starting together on one empty data dir. Each writes its
// candidate to a private temporary file and links it into place; link(2) fails when the name
// exists, so exactly one candidate wins and every process then reads the winner's.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

/**
 * Creates `file` with `content` unless it exists (then leaves it); returns what the file holds
 * afterwards, which is another process's content when that one got there first.
 */
export function writeFirst(file: string, content: string, mode = 0o600): string {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`;
  fs.writeFileSync(tmp, content, { mode });
  try {
    fs.linkSync(tmp, file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  } finally {
    fs.rmSync(tmp, { force: true });
  }
  return fs.readFileSync(file, 'utf8');
}

/** Replaces `file` whole (rename is atomic): a reader sees the old content or the new, never half. */
export function replaceFile(file: string, content: string, mode = 0o600): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`;
  fs.writeFileSync(tmp, content, { mode });
  fs.renameSync(tmp, file);
}
