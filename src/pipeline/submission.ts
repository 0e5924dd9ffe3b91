// The message-in-progress that every pipeline stage takes and returns (STYLE: stages with one
// signature). SMTP and the HTTP API both build a Submission and run the same stages.
import type { ApiKey, Domain, Route, Tenant, Template, Verdict } from '../db/schema.ts';

export interface Address {
  address: string;
  name: string;
}

export interface Attachment {
  filename: string | null;
  contentType: string;
  content: Buffer;
  contentId?: string;
  inline?: boolean;
}

export interface Principal {
  key: ApiKey;
  tenant: Tenant;
}

export interface Submission {
  source: 'smtp' | 'http';
  remoteAddress?: string;
  /** Envelope sender and recipients (RCPT TO, so Bcc works). */
  envelope: { mailFrom: string; rcptTo: string[] };
  /** Raw bytes as received over SMTP, in the chunks they came in (undefined for HTTP). */
  raw?: Buffer | Buffer[];

  /** Who authenticated with SMTP AUTH or the HTTP bearer key, if anyone. */
  sessionPrincipal?: Principal;
  /** The authenticated sender once the authenticate stage ran. */
  principal?: Principal;

  /** Every header of the submitted message, lower-cased names, decoded values, in order. */
  headers: { name: string; value: string }[];
  /** Raw (undecoded, unfolded) header lines as received, for headers whose encoding matters. */
  rawHeaders: Map<string, string[]>;
  from?: Address[];
  to: Address[];
  replyTo: Address[];
  subject: string;
  html: string | null;
  text: string | null;
  attachments: Attachment[];

  tag: string;
  routeRef?: string;
  templateRef?: string;
  variables?: Record<string, unknown>;
  trackOpens?: boolean;
  trackClicks?: boolean;
  idempotencyKey?: string;
  /** The message id, once a stage needs it before storing (tracking tokens name it). */
  id?: string;

  /** The tenant's verified domain of the From address (check-sender); its DKIM key signs. */
  senderDomain?: Domain;
  route?: Route;
  template?: Template;
  testMode: boolean;
  verdicts: Verdict[];
  /** The rate-limit window this message was counted in, until it is accepted (rate-limit.ts). */
  rateWindow?: Date;
}

export function newSubmission(partial: Pick<Submission, 'source' | 'envelope'> & Partial<Submission>): Submission {
  return {
    headers: [],
    rawHeaders: new Map(),
    to: [],
    replyTo: [],
    subject: '',
    html: null,
    text: null,
    attachments: [],
    tag: 'untagged',
    testMode: false,
    verdicts: [],
    ...partial,
  };
}

/**
 * Header text without NUL. RFC 5322 forbids NUL in a header, and PostgreSQL's text and jsonb
 * cannot hold one: left in a subject, tag, route name or file name it would fail the commit or a
 * lookup with 451 on every retry. It carries no meaning, so it is dropped.
 */
export const withoutNul = (text: string): string => (text.includes('\0') ? text.replaceAll('\0', '') : text);

export function header(sub: Submission, name: string): string | undefined {
  const lower = name.toLowerCase();
  return sub.headers.find((h) => h.name === lower)?.value;
}
