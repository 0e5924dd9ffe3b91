// `txrelay message …`: the message log across tenants, one message in full, its final MIME, and
// the queue operations on one message: retry now, cancel, requeue.
import * as messages from '../services/messages.service.ts';
import * as queue from '../services/queue.service.ts';
import { command, defined, numberFlag, queueDeps, type Command } from './command.ts';
import { cell, details, nextPage, section, table } from './format.ts';

type MessageView = Awaited<ReturnType<typeof messages.getMessageView>>;

function showMessage(m: MessageView): string {
  return (
    details([
      ['id', m.id],
      ['tenant', m.tenant],
      ['status', m.status],
      ['tag', m.tag],
      ['route', m.route],
      ['template', m.template],
      ['from', m.from],
      ['subject', m.subject],
      ['size', `${m.size} bytes${m.test_mode ? ' (test key: captured)' : ''}`],
      ['created', m.created_at],
      ['sent', m.sent_at],
      ['next attempt', m.next_attempt_at],
    ]) +
    section('recipients', m.recipients.map((r) => `${r.address}  ${r.status}  ${cell(r.response)}`)) +
    section('attempts', m.attempt_log.map((a) => `#${a.number}  ${cell(a.at)}  ${a.route}  ${a.outcome}  ${a.duration_ms} ms  ${cell(a.response)}`)) +
    section('events', m.events.map((e) => `${cell(e.at)}  ${e.type}  ${cell(e.detail)}`)) +
    section('verdicts', m.verdicts.map((v) => `${v.rule}  ${v.action}${v.detail ? `  ${v.detail}` : ''}`)) +
    section('attachments', m.attachments.map((a) => `${cell(a.filename)}  ${a.content_type}  ${a.size} bytes`))
  );
}

/** One line on what the operation left, then the message's state and recipients. */
function afterOperation(m: MessageView, what: string): string {
  return (
    `message ${m.id} ${what}\n` +
    details([
      ['status', m.status],
      ['route', m.route],
      ['attempts', m.attempts],
      ['next attempt', m.next_attempt_at],
    ]) +
    section('recipients', m.recipients.map((r) => `${r.address}  ${r.status}  ${cell(r.response)}`))
  );
}

export const messageCommands: Record<string, Command> = {
  list: command({
    usage: 'message list [--tenant T] [--tag TAG] [--status queued|deferred|sent|failed] [--recipient ADDRESS] [--since ISO] [--until ISO] [--limit N] [--cursor C]',
    summary: 'the message log, newest first',
    options: {
      tenant: { type: 'string' },
      tag: { type: 'string' },
      status: { type: 'string' },
      recipient: { type: 'string' },
      since: { type: 'string' },
      until: { type: 'string' },
      limit: { type: 'string' },
      cursor: { type: 'string' },
    },
    async run(io, _args, values) {
      const { tenant, tag, status, recipient, since, until, cursor } = values;
      const limit = numberFlag(values.limit, 'limit', this, { integer: true });
      const { db } = await io.open();
      // The service validates the filters exactly as it does the API's query string.
      const page = await messages.listMessages(db, defined({ tenant, tag, status, recipient, since, until, limit, cursor }));
      io.print(page, () =>
        table(
          ['CREATED', 'TENANT', 'STATUS', 'TAG', 'FROM', 'TO', 'SUBJECT', 'ID'],
          page.items.map((m) => [
            m.created_at,
            m.tenant,
            m.status,
            m.tag,
            m.from,
            m.recipients.length === 1 ? m.recipients[0].address : `${m.recipients.length} recipients`,
            m.subject,
            m.id,
          ]),
          'no messages',
        ) + nextPage(page.next_cursor),
      );
    },
  }),
  show: command({
    usage: 'message show <id>',
    summary: 'one message: recipients, attempts, events, verdicts, attachments',
    async run(io, [id]) {
      const { db } = await io.open();
      const m = await messages.getMessageView(db, id);
      io.print(m, () => showMessage(m));
    },
  }),
  mime: command({
    usage: 'message mime <id>',
    summary: 'the final MIME as delivered or captured, raw on stdout (--json: base64)',
    async run(io, [id]) {
      const { db } = await io.open();
      const mime = await messages.getMessageMime(db, id);
      if (io.json) io.print({ id, size: mime.length, mime_base64: mime.toString('base64') }, () => '');
      else process.stdout.write(mime);
    },
  }),
  retry: command({
    usage: 'message retry <id>',
    summary: 'retry a queued or deferred message now, without waiting for its backoff',
    async run(io, [id]) {
      const deps = await queueDeps(io);
      await queue.retryMessage(deps, id);
      const m = await messages.getMessageView(deps.db, id);
      io.print(m, () => afterOperation(m, `will be tried now on route ${m.route}`));
    },
  }),
  cancel: command({
    usage: 'message cancel <id>',
    summary: 'cancel a queued or deferred message: it fails ("cancelled by admin") and is never delivered',
    async run(io, [id]) {
      const deps = await queueDeps(io);
      await queue.cancelMessage(deps, id);
      const m = await messages.getMessageView(deps.db, id);
      io.print(m, () => afterOperation(m, 'cancelled'));
    },
  }),
  requeue: command({
    usage: 'message requeue <id> [--route ROUTE]',
    summary: "queue a failed message again, on its route or another of its tenant's; its failed recipients are delivered again",
    options: { route: { type: 'string' } },
    async run(io, [id], values) {
      const deps = await queueDeps(io);
      await queue.requeueMessage(deps, id, defined({ route: values.route }));
      const m = await messages.getMessageView(deps.db, id);
      io.print(m, () => afterOperation(m, `requeued on route ${m.route}`));
    },
  }),
};
