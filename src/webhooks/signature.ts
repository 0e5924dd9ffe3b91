// What a webhook request carries (SPEC §6): the event as JSON and a signature the receiver checks
// with the endpoint's secret.
//
//   X-Txrelay-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" keyed by the secret>
//
// The timestamp is signed with the body, so a receiver that refuses old timestamps (say, older
// than 5 minutes) also refuses a captured request played again later. Each attempt signs anew.
import crypto from 'node:crypto';
import { randomBase62 } from '../crypto.ts';

export const SIGNATURE_HEADER = 'X-Txrelay-Signature';
export const DELIVERY_HEADER = 'X-Txrelay-Delivery';

/** The event types an endpoint can subscribe to ('*' is every one of them). */
export const WEBHOOK_EVENT_TYPES = ['accepted', 'sent', 'deferred', 'failed', 'opened', 'clicked'] as const;
export type WebhookEventType = (typeof WEBHOOK_EVENT_TYPES)[number];

/** The JSON body, field for field as SPEC §6 lists it. */
export interface WebhookPayload {
  /** The event's id: the same for every endpoint and attempt, for receivers to deduplicate. */
  id: string;
  type: string;
  /** When the event happened, ISO 8601 UTC. */
  at: string;
  message_id: string | null;
  /** The tenant's name. */
  tenant: string;
  tag: string | null;
  detail: Record<string, unknown>;
}

export function signature(secret: string, timestamp: number, body: string): string {
  const mac = crypto.createHmac('sha256', secret).update(`${timestamp}.${body}`, 'utf8').digest('hex');
  return `t=${timestamp},v1=${mac}`;
}

/** A secret for an endpoint whose creator did not bring one: 190 random bits. */
export function generateWebhookSecret(): string {
  return `whsec_${randomBase62(32)}`;
}
