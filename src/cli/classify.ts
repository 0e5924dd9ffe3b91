// `txrelay classify "<reply>"`: what the delivery failure catalog (src/delivery/classify.ts)
// makes of an upstream reply or connection error — the row that matches and why — without
// sending anything. For operators reading an attempt log, and for checking a new row.
import { classify, parseReply, type Verdict } from '../delivery/classify.ts';
import { command } from './command.ts';
import { details } from './format.ts';

const MEANING: Record<Verdict, string> = {
  retry: "transient: the recipient is retried after the route's backoff",
  slow_down: 'the upstream is throttling: retried after one backoff step more; never permanent',
  fail: 'permanent: the recipient fails at once (a fallback route takes over when every recipient did)',
};

export const classifyCommand = command({
  usage: 'classify <reply> [--error-code CODE]',
  summary: 'the delivery verdict (retry, fail, slow_down) and reason for an upstream reply, e.g. "421 4.7.0 Try again later"',
  options: { 'error-code': { type: 'string' } },
  async run(io, [reply], values) {
    const errorCode = values['error-code']?.trim() || undefined;
    const response = reply.trim() === '' ? undefined : reply;
    const c = classify({ response, errorCode });
    const { code, enhanced } = parseReply(response);
    const out = {
      reply: response ?? null,
      error_code: errorCode ?? null,
      code: code ?? null,
      enhanced: enhanced ?? null,
      verdict: c.verdict,
      reason: c.reason,
      rule: c.rule,
    };
    io.print(out, () =>
      details([
        ['verdict', c.verdict],
        ['reason', c.reason],
        ['means', MEANING[c.verdict]],
        ['reply code', [code, enhanced].filter((x) => x !== undefined).join(' ') || null],
        ['error code', errorCode],
        ['rule', `#${c.rule} of src/delivery/classify.ts RULES`],
      ]),
    );
  },
});
