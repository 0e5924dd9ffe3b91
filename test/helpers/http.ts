// One JSON-over-HTTP call for API tests: real fetch, the admin token by default, the answer
// as status, headers, text and parsed JSON (undefined when the body is not JSON).
import { TEST_ADMIN_TOKEN } from './context.ts';

export interface Reply {
  status: number;
  headers: Headers;
  text: string;
  // Test code reads arbitrary fields of the JSON answers.
  body: any;
}

export interface CallOptions {
  body?: unknown;
  /** Sent as is, instead of JSON-encoding `body`. */
  raw?: string;
  /** Bearer token; null sends none. Default: the test admin token. */
  token?: string | null;
  headers?: Record<string, string>;
}

export async function callJson(base: string, method: string, path: string, options: CallOptions = {}): Promise<Reply> {
  const headers: Record<string, string> = { ...options.headers };
  const token = options.token === undefined ? TEST_ADMIN_TOKEN : options.token;
  if (token !== null) headers.authorization = `Bearer ${token}`;
  const body = options.raw ?? (options.body === undefined ? undefined : JSON.stringify(options.body));
  if (body !== undefined && !headers['content-type']) headers['content-type'] = 'application/json';
  const res = await fetch(base + path, { method, headers, body });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, text, body: json };
}
