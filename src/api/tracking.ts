// The public tracking endpoints (SPEC §6): the open pixel and the click redirector. No
// authentication: the signed token is the authority, and anything we did not sign is a 404, so
// the redirector sends nobody anywhere we were not asked to by a tenant's own message.
import type { Request, RequestHandler } from 'express';
import type { Context } from '../context.ts';
import { recordEngagement, type Engagement } from '../db/tracking.repository.ts';
import { ApiError } from '../services/errors.ts';

/** A 1×1 transparent GIF89a (43 bytes): a colour table of two, index 0 transparent. */
export const PIXEL = Buffer.from('R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==', 'base64');

/** User agents are the client's to send: kept, but bounded, in the event. */
const MAX_USER_AGENT_LENGTH = 512;

/** Every open and click must reach us, not a cache (ours, a proxy's or the mail client's). */
const NO_STORE = 'no-store, private';

function userAgent(req: Request): string | null {
  return req.get('user-agent')?.slice(0, MAX_USER_AGENT_LENGTH) ?? null;
}

function notFound(): ApiError {
  return new ApiError(404, 'not_found', 'no such tracking link');
}

export function trackingHandlers(ctx: Context): { open: RequestHandler; click: RequestHandler } {
  /**
   * Records the event before answering (so it is there when the client gets its answer), but a
   * database failure never costs the reader their image or link: it is logged and the answer
   * goes out all the same. The log names the message and event only, never the URL: query
   * strings of links in transactional mail routinely carry password-reset and sign-in tokens.
   */
  async function record(messageId: string, type: Engagement, detail: Record<string, unknown>): Promise<void> {
    try {
      await recordEngagement(ctx.db, messageId, type, detail);
    } catch (err) {
      ctx.log.warn({ err: (err as Error).message, code: (err as { code?: string }).code, message_id: messageId, event: type }, 'tracking event not recorded');
    }
  }

  // HEAD answers as GET does but records nothing: link checkers and security scanners probe
  // links that way, and a probe is not a reader opening or clicking.
  const open: RequestHandler = async (req, res) => {
    const claim = ctx.tracking.verify(String(req.params.token), 'open');
    if (!claim) throw notFound();
    if (req.method === 'GET') await record(claim.messageId, 'opened', { user_agent: userAgent(req) });
    res.set('Cache-Control', NO_STORE).type('image/gif').send(PIXEL);
  };

  const click: RequestHandler = async (req, res) => {
    const claim = ctx.tracking.verify(String(req.params.token), 'click');
    if (!claim) throw notFound();
    if (req.method === 'GET') await record(claim.messageId, 'clicked', { url: claim.url, user_agent: userAgent(req) });
    res.set('Cache-Control', NO_STORE).redirect(302, claim.url);
  };

  return { open, click };
}
