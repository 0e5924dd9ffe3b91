// What one delivery attempt means for the message and each recipient. Pure: the worker feeds it
// what the transport answered and writes down what it returns, in one transaction.
//
//   every recipient settled, at least one delivered        → sent (refused ones stay `failed`)
//   recipients left with a transient reply, attempts left   → deferred, retried after a backoff
//   attempts used up, or every recipient refused for good   → exhausted: fallback route or failed
//
// A permanent refusal of some recipients beside delivered ones is about those addresses (user
// unknown), so the message counts as sent. A refusal of every recipient, with none delivered
// ever, may well be about the route (the relay refuses our sender or account), which is what a
// fallback route is for.
import type { MessageStatus } from '../db/schema.ts';
import type { Verdict } from './classify.ts';
import { classify } from './classify.ts';
import { DeliveryError, type DeliveryResult } from './transports/transport.ts';

/** The longest wait between two attempts (SPEC §5: about 6 hours in all for the default policy). */
export const MAX_RETRY_DELAY_SECONDS = 6 * 3600;

export interface RecipientUpdate {
  address: string;
  status: MessageStatus;
  response: string;
  verdict?: Verdict;
}

export interface AttemptInput {
  /** Every recipient of the message with its status before this attempt. */
  recipients: { address: string; status: MessageStatus }[];
  /** The recipients this attempt was for (those queued or deferred). */
  pending: string[];
  /** What the transport answered: per-recipient results, or a whole-message failure. */
  result: DeliveryResult | DeliveryError;
  /** This attempt's number on the current route, from 1. */
  attempt: number;
  maxAttempts: number;
  retryDelaySeconds: number;
  now: Date;
}

interface Common {
  /** Recipient rows to update: the pending ones, with this attempt's result. */
  updates: RecipientUpdate[];
  /** One line for the attempts row and events: the upstream reply, or each recipient's. */
  response: string;
  /** How many recipients of the whole message are delivered after this attempt. */
  delivered: number;
}

export type Decision =
  | (Common & { kind: 'sent' })
  | (Common & { kind: 'deferred'; nextAttemptAt: Date; throttled: boolean; reason: string })
  | (Common & {
      kind: 'exhausted';
      /** Why no further attempt on this route: attempts used up, or every recipient refused. */
      cause: 'attempts' | 'permanent';
      reason: string;
      /** Recipients a fallback route should take over (then reset to `queued`). */
      handoff: string[];
    });

/**
 * Seconds to wait before the next attempt: the route's first step doubling each attempt
 * (RFC 5321 §4.5.4.1 asks for growing retry intervals), one step more when the upstream said
 * to slow down, capped at MAX_RETRY_DELAY_SECONDS.
 */
export function retryDelaySeconds(baseSeconds: number, attempt: number, throttled: boolean): number {
  const exponent = Math.max(0, attempt - 1) + (throttled ? 1 : 0);
  return Math.min(baseSeconds * 2 ** exponent, MAX_RETRY_DELAY_SECONDS);
}

const sameAddress = (a: string, b: string): boolean => a.toLowerCase() === b.toLowerCase();

function summarize(updates: RecipientUpdate[], result: DeliveryResult | DeliveryError): string {
  if (result instanceof DeliveryError) return result.command ? `${result.command}: ${result.response}` : result.response;
  const distinct = [...new Set(updates.map((u) => u.response))];
  if (distinct.length <= 1) return distinct[0] ?? '';
  return updates.map((u) => `<${u.address}>: ${u.response}`).join('; ');
}

export function decide(input: AttemptInput): Decision {
  const { result } = input;
  const updates: RecipientUpdate[] = input.pending.map((address): RecipientUpdate => {
    if (result instanceof DeliveryError) {
      return { address, status: result.transient ? 'deferred' : 'failed', response: result.response, verdict: result.verdict };
    }
    const r = result.recipients.find((x) => sameAddress(x.address, address));
    if (!r) return { address, status: 'deferred', response: 'no result for this recipient', verdict: 'retry' };
    if (r.accepted) return { address, status: 'sent', response: r.response };
    const { verdict } = classify({ code: r.code, enhanced: r.enhanced, response: r.response });
    return { address, status: verdict === 'fail' ? 'failed' : 'deferred', response: r.response, verdict };
  });

  const pending = new Set(input.pending.map((a) => a.toLowerCase()));
  const settledBefore = input.recipients.filter((r) => !pending.has(r.address.toLowerCase()));
  const delivered = settledBefore.filter((r) => r.status === 'sent').length + updates.filter((u) => u.status === 'sent').length;
  const transient = updates.filter((u) => u.status === 'deferred');
  const response = summarize(updates, result);
  const common = { updates, response, delivered };

  if (transient.length === 0) {
    if (delivered > 0) return { ...common, kind: 'sent' };
    // Nothing was ever delivered and every recipient is refused for good: hand all to a fallback.
    const handoff = input.recipients.map((r) => r.address);
    const reason = result instanceof DeliveryError ? result.reason : 'every recipient was refused permanently';
    return { ...common, kind: 'exhausted', cause: 'permanent', reason, handoff };
  }

  const throttled = transient.some((u) => u.verdict === 'slow_down');
  const reason = result instanceof DeliveryError ? result.reason : throttled ? 'upstream asked to slow down' : 'transient failure';
  if (input.attempt < input.maxAttempts) {
    const delay = retryDelaySeconds(input.retryDelaySeconds, input.attempt, throttled);
    return { ...common, kind: 'deferred', nextAttemptAt: new Date(input.now.getTime() + delay * 1000), throttled, reason };
  }

  // Out of attempts: the transient recipients fail here (unless a fallback takes them over).
  const finalUpdates = updates.map((u) => (u.status === 'deferred' ? { ...u, status: 'failed' as const } : u));
  const handoff =
    delivered > 0
      ? transient.map((u) => u.address)
      : input.recipients.filter((r) => r.status !== 'sent').map((r) => r.address);
  return { ...common, updates: finalUpdates, kind: 'exhausted', cause: 'attempts', reason: `attempts exhausted (${input.attempt}): ${reason}`, handoff };
}
