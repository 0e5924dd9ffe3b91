// Human-readable output: aligned tables for lists, `key  value` blocks for one resource.
// Scripts use --json, which prints the API's own shapes instead.

export function cell(v: unknown): string {
  if (v === null || v === undefined || v === '') return '-';
  if (v instanceof Date) return v.toISOString();
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

/** Columns padded to their widest cell; `empty` when there are no rows. */
export function table(headers: string[], rows: unknown[][], empty: string): string {
  if (rows.length === 0) return empty;
  const text = [headers, ...rows.map((r) => r.map(cell))];
  const widths = headers.map((_, i) => Math.max(...text.map((r) => r[i].length)));
  return text.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ')).join('\n');
}

/** `label  value` lines, labels aligned. */
export function details(pairs: [string, unknown][]): string {
  const width = Math.max(...pairs.map(([k]) => k.length));
  return pairs.map(([k, v]) => `${k.padEnd(width)}  ${cell(v)}`).join('\n');
}

/** A titled, indented block (recipients, attempts…), or nothing when it has no lines. */
export function section(title: string, lines: string[]): string {
  return lines.length ? `\n${title}\n${lines.map((l) => `  ${l}`).join('\n')}` : '';
}

/** The hint printed under a page that has more. */
export function nextPage(cursor: string | null): string {
  return cursor ? `\n(more: --cursor ${cursor})` : '';
}
