// longLineAt (src/pipeline/build.ts), which refuses a built message with a line over RFC 5322's
// 998 octets, against the rule read literally: split at CRLF, the first piece over 998.
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { test } from 'node:test';
import { longLineAt, MAX_LINE_OCTETS } from '../../src/pipeline/build.ts';

function literalLongLineAt(bytes: Buffer): number {
  let start = 0;
  for (const line of bytes.toString('latin1').split('\r\n')) {
    if (line.length > MAX_LINE_OCTETS) return start;
    start += line.length + 2;
  }
  return -1;
}

test('the first line over 998 octets, at the boundaries', () => {
  const line = (n: number) => 'x'.repeat(n);
  const cases: [string, number][] = [
    ['', -1],
    [line(998), -1],
    [line(999), 0],
    [`${line(998)}\r\n`, -1],
    [`${line(999)}\r\n`, 0],
    [`a\r\n${line(998)}\r\nb`, -1],
    [`a\r\n${line(999)}\r\nb`, 3],
    [`a\r\n\r\n${line(999)}`, 5],
    // A bare LF or CR ends no line.
    [`${line(500)}\n${line(499)}`, 0],
    [`${line(500)}\r${line(497)}\r\n`, -1],
    [`${line(500)}\r${line(498)}\r\n`, 0],
  ];
  for (const [text, at] of cases) assert.equal(longLineAt(Buffer.from(text, 'latin1')), at, JSON.stringify(text.slice(0, 20)) + ` (${text.length} octets)`);
});

test('matches the literal rule on 3,000 random messages of mixed line lengths', () => {
  const lengths = [0, 1, 76, 500, 997, 998, 999, 1000, 1500];
  const breaks = ['\r\n', '\r\n', '\r\n', '\n', '\r'];
  for (let n = 0; n < 3_000; n++) {
    const parts: string[] = [];
    for (let i = randomInt(1, 40); i > 0; i--) parts.push('y'.repeat(lengths[randomInt(lengths.length)]) + breaks[randomInt(breaks.length)]);
    // Mostly short lines, so that a long one lands anywhere, also near the end.
    const text = parts.join('').slice(0, randomInt(1, 40_000));
    const bytes = Buffer.from(text, 'latin1');
    assert.equal(longLineAt(bytes), literalLongLineAt(bytes), `case ${n}`);
  }
});
