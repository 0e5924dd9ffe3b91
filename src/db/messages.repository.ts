import { CompiledQuery, sql, type RawBuilder } from 'kysely';
import { executePrepared, executePreparedText, type Executor } from './database.ts';
import { routeFromJson, type RouteJson } from './routes.repository.ts';
import type { Message, MessageStatus, MimeCompression, NewMessage, Recipient, Route, Verdict } from './schema.ts';
import { messageBytes } from './stored-mime.ts';

export interface AttachmentInfo {
  filename: string | null;
  content_type: string;
  size: number;
}

export interface EventInput {
  type: string;
  detail?: Record<string, unknown>;
}

/** What an event needs of its message; `route_name` is the route it concerns ('' or absent: none). */
export interface EventRef {
  id: string;
  tenant_id: string;
  tag: string;
  route_name?: string;
}

/** One accepted message with what is stored beside it (insertAcceptedMessages). */
export interface AcceptedRows {
  /**
   * The columns written; the rest take their defaults. `mime` may come in pieces: they go into
   * the statement's bytes as they are, without being joined first.
   */
  message: Omit<NewMessage, 'mime' | 'mime_compression' | 'verdicts' | 'attempts' | 'next_attempt_at' | 'created_at' | 'updated_at' | 'first_opened_at' | 'first_clicked_at'> & {
    mime: Buffer | readonly Buffer[];
    /** How `mime` is stored (stored-mime.ts); 'none' when not given. */
    mime_compression?: MimeCompression;
    verdicts: Verdict[];
  };
  recipients: string[];
  attachments: AttachmentInfo[];
  /** The recipients' status when it is not `queued` (a test key's capture). */
  recipientResult?: { status: MessageStatus; response: string };
  /** Events after its `accepted` one (a test key's `sent`). */
  events?: EventInput[];
}

/**
 * A statement that inserts rows the accepting statement must commit with, and returns one row
 * per row it inserted: pg-boss's insert of the messages' delivery jobs (queue.ts,
 * deliveryJobsInsert). A single INSERT with positional parameters from $1.
 */
export interface CompanionInsert {
  text: string;
  values: unknown[];
  /** The rows it must insert: any fewer (an id taken already) fails the whole statement. */
  expected: number;
}

/**
 * Whether an event of the tenant `tenantId` (an SQL expression) is written already dispatched to
 * webhooks: when its tenant has no active endpoint, as the dispatcher would find at once (claimEvents
 * matches active endpoints only), so it never claims it. Most tenants have none, and the claim was
 * an UPDATE of every event: 0.05 ms of PostgreSQL's CPU per message, and two row versions more to
 * vacuum. An endpoint receives the events of statements that begin after it was created.
 *
 * `tenantIds` (an SQL condition on w.tenant_id) names the statement's tenants, so that the
 * endpoints are read once per statement (a hashed subplan): a NOT EXISTS per event row made the
 * accepting statement slower enough to cost 7% of accepting at 10 clients (npm run bench,
 * alternately: 1,230-1,238 against 1,341-1,343/s).
 */
const bornDispatched = (tenantId: string, tenantIds: string): string =>
  `NOT (${tenantId} IN (SELECT w.tenant_id FROM webhook_endpoints w WHERE ${tenantIds} AND w.status = 'active'))`;

/** The accepting statement's parameters before a companion's: see acceptingStatement. */
const ACCEPTING_PARAMETERS = 35;

/**
 * The text of the accepting statement: a data-modifying WITH query per table, each inserting
 * every message's rows from arrays (unnest), then the companions, their parameters renumbered to
 * follow ours. The final SELECT counts the rows of the messages and of each companion, and fails
 * the statement, so nothing of it stays, when one inserted fewer than expected.
 */
function acceptingStatement(companions: readonly CompanionInsert[]): string {
  let next = ACCEPTING_PARAMETERS;
  const withs = companions.map((c, i) => {
    const offset = next;
    next += c.values.length;
    const text = c.text.replace(/\$(\d+)/g, (_, n: string) => `$${Number(n) + offset}`);
    return `, companion${i} AS (${text})`;
  });
  // The messages first: a clash on one (its id taken) reads as what it is, not as its job's.
  const checks = ['message', ...companions.map((_, i) => `companion${i}`)].map((name) => `txrelay_expect((SELECT count(*) FROM ${name}), $${++next}, '${name}')`);
  return `WITH message AS (
  INSERT INTO messages (id, tenant_id, api_key_id, status, sent_at, tag, route_id, route_name, template_id, template_name, test_mode,
                        mail_from, from_address, subject, message_id_header, size, mime, verdicts, job_id, idempotency_key, mime_compression)
  SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::timestamptz[], $6::text[], $7::uuid[], $8::text[], $9::uuid[], $10::text[], $11::boolean[],
                       $12::text[], $13::text[], $14::text[], $15::text[], $16::integer[], $17::bytea[], $18::jsonb[], $19::uuid[], $20::text[], $35::text[])
  RETURNING 1
), recipient AS (
  INSERT INTO recipients (message_id, address, status, response)
  SELECT * FROM unnest($21::uuid[], $22::text[], $23::text[], $24::text[])
), attachment AS (
  INSERT INTO attachments (message_id, filename, content_type, size)
  SELECT * FROM unnest($25::uuid[], $26::text[], $27::text[], $28::integer[])
), event AS (
  INSERT INTO events (message_id, tenant_id, tag, route, type, detail, webhooks_dispatched)
  SELECT e.*, ${bornDispatched('e.tenant_id', 'w.tenant_id = ANY($30::uuid[])')}
    FROM unnest($29::uuid[], $30::uuid[], $31::text[], $32::text[], $33::text[], $34::jsonb[]) AS e (message_id, tenant_id, tag, route, type, detail)
)${withs.join('')}
SELECT ${checks.join(', ')}`;
}

/** Texts of the accepting statement by its companions' (a few shapes in practice; bounded). */
const acceptingTexts = new Map<string, string>();
const MAX_ACCEPTING_TEXTS = 16;

/**
 * Accepted messages, their recipients, attachments and events (`accepted`, then any of their
 * own), with the companions' rows (their delivery jobs), in ONE statement: one round trip and,
 * outside a transaction, its own implicit one, so that a group commit of any size costs one
 * round trip and one fsync. The bytes go as one binary bytea[] parameter, not as text.
 */
export async function insertAcceptedMessages(db: Executor, rows: AcceptedRows[], companions: readonly CompanionInsert[] = []): Promise<void> {
  const m = rows.map((r) => r.message);
  const recipients = rows.flatMap(({ message, recipients, recipientResult }) => recipients.map((address) => ({ id: message.id, address, status: recipientResult?.status ?? 'queued', response: recipientResult?.response ?? null })));
  const attachments = rows.flatMap(({ message, attachments }) => attachments.map((a) => ({ id: message.id, ...a })));
  const events = rows.flatMap(({ message, recipients, events }) => [{ type: 'accepted', detail: { recipients: recipients.length, route: message.route_name } }, ...(events ?? [])].map((event) => ({ message, event })));
  const values = [
    m.map((x) => x.id), m.map((x) => x.tenant_id), m.map((x) => x.api_key_id ?? null), m.map((x) => x.status), m.map((x) => x.sent_at ?? null),
    m.map((x) => x.tag ?? 'untagged'), m.map((x) => x.route_id ?? null), m.map((x) => x.route_name), m.map((x) => x.template_id ?? null),
    m.map((x) => x.template_name ?? null), m.map((x) => x.test_mode ?? false), m.map((x) => x.mail_from), m.map((x) => x.from_address),
    m.map((x) => x.subject ?? ''), m.map((x) => x.message_id_header), m.map((x) => x.size), byteaArray(m.map((x) => x.mime)),
    m.map((x) => JSON.stringify(x.verdicts)), m.map((x) => x.job_id ?? null), m.map((x) => x.idempotency_key ?? null),
    recipients.map((r) => r.id), recipients.map((r) => r.address), recipients.map((r) => r.status), recipients.map((r) => r.response),
    attachments.map((a) => a.id), attachments.map((a) => a.filename), attachments.map((a) => a.content_type), attachments.map((a) => a.size),
    events.map((e) => e.message.id), events.map((e) => e.message.tenant_id), events.map((e) => e.message.tag ?? 'untagged'),
    events.map((e) => e.message.route_name), events.map((e) => e.event.type), events.map((e) => JSON.stringify(e.event.detail ?? {})),
    m.map((x) => x.mime_compression ?? 'none'),
    ...companions.flatMap((c) => c.values),
    rows.length,
    ...companions.map((c) => c.expected),
  ];
  // Built once per shape, prepared under a name for its text: the text is pg-boss's as much as ours.
  const key = companions.map((c) => `${c.values.length}:${c.text}`).join('\0');
  let text = acceptingTexts.get(key);
  if (text === undefined) {
    text = acceptingStatement(companions);
    if (acceptingTexts.size >= MAX_ACCEPTING_TEXTS) acceptingTexts.clear();
    acceptingTexts.set(key, text);
  }
  await executePreparedText(db, CompiledQuery.raw(text, values));
}

/** PostgreSQL's binary form of a one-dimensional bytea[] without NULLs (array_recv); an item may be in pieces. */
function byteaArray(items: readonly (Buffer | readonly Buffer[])[]): Buffer {
  const BYTEA_OID = 17;
  const head = Buffer.alloc(20);
  head.writeInt32BE(1, 0); // dimensions
  head.writeInt32BE(0, 4); // no NULLs
  head.writeInt32BE(BYTEA_OID, 8);
  head.writeInt32BE(items.length, 12);
  head.writeInt32BE(1, 16); // lower bound
  const parts: Buffer[] = [head];
  for (const item of items) {
    const pieces = Buffer.isBuffer(item) ? [item] : item;
    const length = Buffer.alloc(4);
    length.writeInt32BE(pieces.reduce((sum, p) => sum + p.length, 0), 0);
    parts.push(length, ...pieces);
  }
  return Buffer.concat(parts);
}

/**
 * A message's bytes, given in pieces, into its row (written with an empty mime): a statement per
 * piece, then one that joins them in PostgreSQL. Run in the transaction that inserted the row.
 */
export async function writeMimePieces(db: Executor, messageId: string, pieces: readonly Buffer[]): Promise<void> {
  for (const [seq, bytes] of pieces.entries()) await db.insertInto('mime_pieces').values({ message_id: messageId, seq, bytes }).execute();
  await sql`
    UPDATE messages SET mime = (SELECT string_agg(bytes, ''::bytea ORDER BY seq) FROM mime_pieces WHERE message_id = ${messageId})
    WHERE id = ${messageId}
  `.execute(db);
  await db.deleteFrom('mime_pieces').where('message_id', '=', messageId).execute();
}

export async function insertEvent(db: Executor, message: EventRef, event: EventInput): Promise<void> {
  await insertEvents(db, [{ message, event }]);
}

export async function insertEvents(db: Executor, events: { message: EventRef; event: EventInput }[]): Promise<void> {
  await db
    .insertInto('events')
    .values(
      events.map(({ message, event }) => ({
        message_id: message.id,
        tenant_id: message.tenant_id,
        tag: message.tag,
        route: message.route_name ?? '',
        type: event.type,
        detail: JSON.stringify(event.detail ?? {}),
      })),
    )
    .execute();
}

export async function findByIdempotencyKey(db: Executor, tenantId: string, key: string): Promise<{ id: string } | undefined> {
  return await db
    .selectFrom('messages')
    .select('id')
    .where('tenant_id', '=', tenantId)
    .where('idempotency_key', '=', key)
    .where('created_at', '>', new Date(Date.now() - 24 * 3600_000))
    .executeTakeFirst();
}

/**
 * One message, `mime` its bytes as built (decompressed: mime_compression says how they are
 * stored); tenantId undefined only for admin callers, who see every tenant.
 */
export async function findMessage(db: Executor, id: string, tenantId?: string): Promise<Message | undefined> {
  let q = db.selectFrom('messages').selectAll().where('id', '=', id);
  if (tenantId !== undefined) q = q.where('tenant_id', '=', tenantId);
  const row = await q.executeTakeFirst();
  return row && { ...row, mime: messageBytes(row) };
}

/** Every column but `mime` (up to 25 MiB): for callers that need the message, not its bytes. */
export type MessageMeta = Omit<Message, 'mime' | 'mime_compression'>;
const META_COLUMNS = [
  'id', 'tenant_id', 'api_key_id', 'status', 'tag', 'route_id', 'route_name', 'template_id', 'template_name', 'test_mode',
  'mail_from', 'from_address', 'subject', 'message_id_header', 'size', 'verdicts', 'attempts', 'job_id', 'next_attempt_at',
  'idempotency_key', 'created_at', 'updated_at', 'sent_at', 'first_opened_at', 'first_clicked_at',
] as const satisfies readonly (keyof MessageMeta)[];

/** One message without its bytes; tenantId undefined only for admin callers. */
export async function findMessageMeta(db: Executor, id: string, tenantId?: string): Promise<MessageMeta | undefined> {
  let q = db.selectFrom('messages').select(META_COLUMNS).where('id', '=', id);
  if (tenantId !== undefined) q = q.where('tenant_id', '=', tenantId);
  return await q.executeTakeFirst();
}

/** Locks the row for the rest of the transaction; the bytes are not read. */
export async function lockMessage(db: Executor, id: string): Promise<MessageMeta | undefined> {
  return await db.selectFrom('messages').select(META_COLUMNS).where('id', '=', id).forUpdate().executeTakeFirst();
}

export async function listRecipients(db: Executor, messageId: string): Promise<Recipient[]> {
  return await db.selectFrom('recipients').selectAll().where('message_id', '=', messageId).orderBy('id').execute();
}

/** What a delivery attempt starts from (loadForDelivery). */
export interface DeliveryLoad {
  /** `mime` as stored: messageBytes (stored-mime.ts) reads it, where a failure is the attempt's. */
  message: Message;
  /** Every recipient, in the order they were accepted. */
  recipients: Pick<Recipient, 'address' | 'status' | 'response'>[];
  /** The message's route, when it still exists (of the message's own tenant only). */
  route: Route | undefined;
}

/** Every column of the message, named (a prepared statement's result type must not change). */
const DELIVERY_COLUMNS = sql.join([...META_COLUMNS, 'mime', 'mime_compression'].map((c) => sql.ref(`m.${c}`)));

type DeliveryRow = Message & { recipient_list: DeliveryLoad['recipients']; route_row: RouteJson | null };

/** What loadForDelivery and loadManyForDelivery select, for the messages `where` picks. */
const deliverySelect = (where: RawBuilder<unknown>) => sql<DeliveryRow>`
    SELECT ${DELIVERY_COLUMNS},
           COALESCE((SELECT json_agg(json_build_object('address', r.address, 'status', r.status, 'response', r.response) ORDER BY r.id)
                       FROM recipients r
                      WHERE r.message_id = m.id), '[]'::json) AS recipient_list,
           to_jsonb(rt) AS route_row
      FROM messages m
      LEFT JOIN routes rt ON rt.id = m.route_id AND rt.tenant_id = m.tenant_id
     WHERE ${where}`;

function deliveryLoad(row: DeliveryRow): DeliveryLoad {
  const { recipient_list: recipients, route_row: route, ...message } = row;
  return { message, recipients, route: route ? routeFromJson(route) : undefined };
}

/**
 * A message with its recipients and its route, in one round trip: the first step of every
 * delivery. Prepared: planning it cost more than running it.
 */
export async function loadForDelivery(db: Executor, id: string): Promise<DeliveryLoad | undefined> {
  const r = await executePrepared(db, 'load_for_delivery', deliverySelect(sql`m.id = ${id}::uuid`).compile(db));
  return r.rows[0] && deliveryLoad(r.rows[0]);
}

/**
 * The messages of a fetched batch of jobs at once, those of at most `maxBytes` each (a larger one
 * is loaded on its own, at its turn): one round trip for the batch instead of one per message.
 */
export async function loadManyForDelivery(db: Executor, ids: readonly string[], maxBytes: number): Promise<Map<string, DeliveryLoad>> {
  const r = await executePrepared(db, 'load_many_for_delivery', deliverySelect(sql`m.id = ANY(${ids}::uuid[]) AND m.size <= ${maxBytes}::int`).compile(db));
  return new Map(r.rows.map((row) => [row.id, deliveryLoad(row)]));
}

/** A delivery attempt that ends the message: `sent` (some recipient delivered) or `failed`. */
export interface FinalAttempt {
  /** Recorded only while the message still waits on this job (see recordFinalAttempts). */
  jobId: string;
  message: EventRef;
  status: 'sent' | 'failed';
  attempt: { route_id: string | null; route_name: string; number: number; response: string | null; duration_ms: number };
  recipients: { address: string; status: MessageStatus; response: string | null }[];
  event: EventInput;
}

/**
 * Records final attempts in one statement (so one round trip and an implicit transaction), for
 * one message or several (the delivery worker groups those that end together, FinalRecords in
 * src/delivery/final-records.ts): each attempt, its recipients' results, its message's status
 * and its event. Written only for a message that still waits (queued or deferred) on the job
 * given, under its row lock: another worker that holds the same job (a pg-boss retry after a
 * lost heartbeat) and records first makes that message's part a no-op. Returns, in order,
 * whether each was written. One message at most once per call. Prepared, as loadForDelivery.
 */
export async function recordFinalAttempts(db: Executor, list: readonly FinalAttempt[]): Promise<boolean[]> {
  const r = await executePrepared(db, 'record_final_attempts', finalAttemptsStatement(db, list));
  const written = new Set(r.rows.map((row) => row.id));
  return list.map((a) => written.has(a.message.id));
}

/** The statement of recordFinalAttempts (exported for a test that reads its plan). */
export function finalAttemptsStatement(db: Executor, list: readonly FinalAttempt[]): CompiledQuery<{ id: string }> {
  const now = new Date();
  const column = <T>(f: (a: FinalAttempt) => T): T[] => list.map(f);
  const recipients = list.flatMap((a) => a.recipients.map((r) => ({ id: a.message.id, ...r })));
  const query = sql<{ id: string }>`
    WITH input AS (
      SELECT * FROM unnest(
        ${column((a) => a.message.id)}::uuid[], ${column((a) => a.jobId)}::uuid[], ${column((a) => a.status)}::text[],
        ${column((a) => a.attempt.route_id)}::uuid[], ${column((a) => a.attempt.route_name)}::text[], ${column((a) => a.attempt.number)}::int[],
        ${column((a) => a.attempt.response)}::text[], ${column((a) => a.attempt.duration_ms)}::int[],
        ${column((a) => a.message.tenant_id)}::uuid[], ${column((a) => a.message.tag)}::text[], ${column((a) => a.message.route_name ?? '')}::text[],
        ${column((a) => a.event.type)}::text[], ${column((a) => JSON.stringify(a.event.detail ?? {}))}::jsonb[]
      ) AS i (id, job_id, status, route_id, route_name, number, response, duration_ms, tenant_id, tag, event_route, event_type, detail)
    ), held AS MATERIALIZED (
      -- Each message by its primary key, its status checked once locked (below). Given the
      -- status, the planner may read a partial index of the waiting messages instead:
      -- statistics taken before a backlog (a burst, a slow upstream) make it look tiny, and each
      -- record then scans the whole backlog. In id order, as every statement that locks several
      -- messages does: no deadlock between them.
      SELECT msg.id, msg.status FROM (SELECT id, job_id FROM input ORDER BY id) i
       CROSS JOIN LATERAL (
         SELECT m.id, m.status FROM messages m WHERE m.id = i.id AND m.job_id = i.job_id FOR UPDATE) msg
    ), locked AS (
      SELECT id FROM held WHERE status IN ('queued', 'deferred')
    ), attempt AS (
      INSERT INTO attempts (message_id, route_id, route_name, number, outcome, response, duration_ms)
      SELECT i.id, i.route_id, i.route_name, i.number, i.status, i.response, i.duration_ms
        FROM locked JOIN input i USING (id)
    ), result AS (
      -- Each recipient's row through its index (the row mark keeps the planner from making the
      -- LATERAL a join, which it hashed against the whole table).
      SELECT r.id, u.status, u.response
        FROM locked
        JOIN unnest(${recipients.map((r) => r.id)}::uuid[], ${recipients.map((r) => r.address)}::text[], ${recipients.map((r) => r.status)}::text[], ${recipients.map((r) => r.response)}::text[])
             AS u (message_id, address, status, response) ON u.message_id = locked.id
       CROSS JOIN LATERAL (
         SELECT x.id FROM recipients x WHERE x.message_id = u.message_id AND x.address = u.address
            FOR NO KEY UPDATE) r
    ), recipient AS (
      UPDATE recipients r
         SET status = u.status, response = u.response, updated_at = ${now}::timestamptz
        FROM result u
       WHERE r.id = u.id
    ), message AS (
      UPDATE messages msg
         SET status = i.status, attempts = i.number, next_attempt_at = NULL, updated_at = ${now}::timestamptz,
             sent_at = CASE WHEN i.status = 'sent' THEN ${now}::timestamptz ELSE msg.sent_at END
        FROM locked JOIN input i USING (id)
       WHERE msg.id = locked.id
    ), event AS (
      INSERT INTO events (message_id, tenant_id, tag, route, type, detail, webhooks_dispatched)
      SELECT i.id, i.tenant_id, i.tag, i.event_route, i.event_type, i.detail, ${sql.raw(bornDispatched('i.tenant_id', 'w.tenant_id IN (SELECT tenant_id FROM input)'))}
        FROM locked JOIN input i USING (id)
    )
    SELECT id::text AS id FROM locked`;
  return query.compile(db);
}

/** One final attempt (recordFinalAttempts); whether it was written. */
export async function recordFinalAttempt(db: Executor, a: FinalAttempt): Promise<boolean> {
  return (await recordFinalAttempts(db, [a]))[0];
}

export async function listAttempts(db: Executor, messageId: string) {
  return await db.selectFrom('attempts').selectAll().where('message_id', '=', messageId).orderBy('id').execute();
}

export async function listEvents(db: Executor, messageId: string) {
  return await db.selectFrom('events').select(['type', 'at', 'detail']).where('message_id', '=', messageId).orderBy('id').execute();
}

export async function listAttachments(db: Executor, messageId: string) {
  return await db.selectFrom('attachments').select(['filename', 'content_type', 'size']).where('message_id', '=', messageId).orderBy('id').execute();
}

export async function insertAttempt(
  db: Executor,
  attempt: { message_id: string; route_id: string | null; route_name: string; number: number; outcome: 'sent' | 'deferred' | 'failed'; response: string | null; duration_ms: number },
): Promise<void> {
  await db.insertInto('attempts').values(attempt).execute();
}

export async function updateRecipient(db: Executor, messageId: string, address: string, status: MessageStatus, response: string | null): Promise<void> {
  await db
    .updateTable('recipients')
    .set({ status, response, updated_at: new Date() })
    .where('message_id', '=', messageId)
    .where('address', '=', address)
    .execute();
}

export async function updateMessage(
  db: Executor,
  id: string,
  patch: Partial<{ status: MessageStatus; attempts: number; job_id: string | null; next_attempt_at: Date | null; sent_at: Date | null; route_id: string | null; route_name: string }>,
): Promise<void> {
  await db.updateTable('messages').set({ ...patch, updated_at: new Date() }).where('id', '=', id).execute();
}

/**
 * Messages that should be waiting in the queue but whose job is gone (pg-boss lost or
 * expired it, or an enqueue was interrupted): the reconciler gives each a new job.
 */
export async function findOrphans(db: Executor, olderThanSeconds: number, limit: number): Promise<{ id: string; route_id: string; next_attempt_at: Date | null }[]> {
  const r = await sql<{ id: string; route_id: string; next_attempt_at: Date | null }>`
    SELECT m.id, m.route_id, m.next_attempt_at
      FROM messages m
     WHERE m.status IN ('queued', 'deferred')
       AND m.route_id IS NOT NULL
       AND m.updated_at < now() - make_interval(secs => ${olderThanSeconds})
       AND NOT EXISTS (
             SELECT 1 FROM pgboss.job j
              WHERE j.name = 'route.' || m.route_id::text
                AND j.id = m.job_id
                AND j.state IN ('created', 'retry', 'active'))
     ORDER BY m.updated_at
     LIMIT ${limit}`.execute(db);
  return r.rows;
}

export async function countByStatus(db: Executor, tenantId: string): Promise<Record<string, number>> {
  const rows = await db
    .selectFrom('messages')
    .select(['status', (eb) => eb.fn.countAll<number>().as('n')])
    .where('tenant_id', '=', tenantId)
    .groupBy('status')
    .execute();
  return Object.fromEntries(rows.map((r) => [r.status, Number(r.n)]));
}

export interface MessageListFilter {
  /** Undefined only for admin callers, who see every tenant. */
  tenantId?: string;
  tag?: string;
  status?: MessageStatus;
  /** Messages with this recipient (case-insensitive). */
  recipient?: string;
  since?: Date;
  until?: Date;
  /**
   * true: only messages held by capture (sent with a test key, or routed through a `capture`
   * route); false: only the others. Undefined: all.
   */
  captured?: boolean;
  /** Keyset pagination: only rows after this (created_at, id) in descending order. */
  before?: { createdAt: string; id: string };
  limit: number;
}

/** The ids of the `capture` routes: a tenant's, or every tenant's for admin callers. */
async function captureRouteIds(db: Executor, tenantId?: string): Promise<string[]> {
  let q = db.selectFrom('routes').select('id').where('transport', '=', 'capture');
  if (tenantId !== undefined) q = q.where('tenant_id', '=', tenantId);
  return (await q.execute()).map((r) => r.id);
}

/**
 * One page of messages, newest first, ordered by (created_at, id) descending so a page never
 * skips or repeats a row. `cursor_at` is created_at in full microsecond precision (a JS Date
 * would round it) for the next page's keyset.
 */
export async function listMessages(db: Executor, f: MessageListFilter) {
  let q = db
    .selectFrom('messages as m')
    .innerJoin('tenants as t', 't.id', 'm.tenant_id')
    .select([
      'm.id', 'm.tenant_id', 't.name as tenant_name', 'm.status', 'm.tag', 'm.route_name', 'm.template_name',
      'm.from_address', 'm.subject', 'm.size', 'm.attempts', 'm.test_mode', 'm.created_at', 'm.sent_at', 'm.next_attempt_at',
      sql<string>`to_char(m.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`.as('cursor_at'),
    ])
    .orderBy('m.created_at', 'desc')
    .orderBy('m.id', 'desc')
    .limit(f.limit);
  if (f.tenantId !== undefined) q = q.where('m.tenant_id', '=', f.tenantId);
  if (f.tag !== undefined) q = q.where('m.tag', '=', f.tag);
  if (f.status !== undefined) q = q.where('m.status', '=', f.status);
  if (f.recipient !== undefined) {
    const address = f.recipient.toLowerCase();
    q = q.where(sql<boolean>`EXISTS (SELECT 1 FROM recipients r WHERE lower(r.address) = ${address} AND r.message_id = m.id)`);
  }
  if (f.since !== undefined) q = q.where('m.created_at', '>=', f.since);
  if (f.until !== undefined) q = q.where('m.created_at', '<', f.until);
  if (f.captured !== undefined) {
    // The capture routes are looked up first and passed as values, not as a subquery: seeing
    // the ids, the planner knows how few messages they hold and reads messages_test_mode and
    // messages_route_created (a page in well under a millisecond); behind a subquery it
    // guessed half the log and walked the tenant's messages newest first until it had a page.
    const routeIds = await captureRouteIds(db, f.tenantId);
    // route_id is null for test-key messages and after a route is deleted: `NOT (… IN …)` on a
    // null would be null, so "not captured" spells out both halves.
    q = f.captured
      ? q.where((eb) => eb.or([eb('m.test_mode', '=', true), ...(routeIds.length ? [eb('m.route_id', 'in', routeIds)] : [])]))
      : q.where((eb) =>
          eb.and([eb('m.test_mode', '=', false), ...(routeIds.length ? [eb.or([eb('m.route_id', 'is', null), eb('m.route_id', 'not in', routeIds)])] : [])]),
        );
  }
  if (f.before) q = q.where(sql<boolean>`(m.created_at, m.id) < (${f.before.createdAt}::timestamptz, ${f.before.id}::uuid)`);
  return await q.execute();
}

/** The recipients of several messages at once (a list page), in insertion order. */
export async function listRecipientsOf(db: Executor, messageIds: string[]): Promise<Recipient[]> {
  if (messageIds.length === 0) return [];
  return await db.selectFrom('recipients').selectAll().where('message_id', 'in', messageIds).orderBy('id').execute();
}

/** Messages still waiting on a route (queued or deferred). */
export async function countPendingOnRoute(db: Executor, tenantId: string, routeId: string): Promise<number> {
  const r = await db
    .selectFrom('messages')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('tenant_id', '=', tenantId)
    .where('route_id', '=', routeId)
    .where('status', 'in', ['queued', 'deferred'])
    .executeTakeFirstOrThrow();
  return Number(r.n);
}

/**
 * Sets the status (and response, when given) of a message's recipients that are in one of
 * `from`; returns their addresses.
 */
export async function setRecipientsStatus(
  db: Executor,
  messageId: string,
  from: MessageStatus[],
  status: MessageStatus,
  response?: string,
): Promise<string[]> {
  const rows = await db
    .updateTable('recipients')
    .set({ status, ...(response === undefined ? {} : { response }), updated_at: new Date() })
    .where('message_id', '=', messageId)
    .where('status', 'in', from)
    .returning('address')
    .execute();
  return rows.map((r) => r.address);
}

/** Whether a worker holds the job right now (pg-boss state `active`): an attempt may be under way. */
export async function isJobActive(db: Executor, routeId: string, jobId: string): Promise<boolean> {
  const r = await sql<{ active: boolean }>`
    SELECT EXISTS (
      SELECT 1 FROM pgboss.job
       WHERE name = ${`route.${routeId}`} AND id = ${jobId}::uuid AND state = 'active') AS active`.execute(db);
  return r.rows[0]?.active === true;
}

export interface QueueDepthRow {
  tenant_id: string;
  tenant_name: string;
  route_id: string;
  route_name: string;
  paused: boolean;
  enabled: boolean;
  queued: number;
  deferred: number;
  /** created_at of the oldest message waiting (queued or deferred). */
  oldest_queued_at: Date | null;
  /** Its age by the database clock, in whole seconds. */
  oldest_age_seconds: number | null;
  /** The earliest retry due among the deferred ones. */
  next_attempt_at: Date | null;
}

/**
 * What waits on each route (every route, a tenant's, or one), counted from the messages table
 * through the partial index messages_route_waiting: one index range scan per route, over
 * waiting messages only, however many were ever sent.
 */
export async function queueDepths(db: Executor, filter: { tenantId?: string; routeId?: string }): Promise<QueueDepthRow[]> {
  const where = [
    ...(filter.tenantId !== undefined ? [sql`r.tenant_id = ${filter.tenantId}`] : []),
    ...(filter.routeId !== undefined ? [sql`r.id = ${filter.routeId}`] : []),
  ];
  const r = await sql<QueueDepthRow>`
    SELECT r.tenant_id, t.name AS tenant_name, r.id AS route_id, r.name AS route_name, r.paused, r.enabled,
           q.queued::int AS queued,
           q.deferred::int AS deferred,
           q.oldest AS oldest_queued_at,
           floor(extract(epoch FROM now() - q.oldest))::int AS oldest_age_seconds,
           q.next_attempt_at
      FROM routes r
      JOIN tenants t ON t.id = r.tenant_id
      CROSS JOIN LATERAL (
            SELECT count(*) FILTER (WHERE m.status = 'queued') AS queued,
                   count(*) FILTER (WHERE m.status = 'deferred') AS deferred,
                   min(m.created_at) AS oldest,
                   min(m.next_attempt_at) FILTER (WHERE m.status = 'deferred') AS next_attempt_at
              FROM messages m
             WHERE m.route_id = r.id
               AND m.tenant_id = r.tenant_id
               AND m.status IN ('queued', 'deferred')) q
     ${where.length ? sql`WHERE ${sql.join(where, sql` AND `)}` : sql``}
     ORDER BY t.name, r.name`.execute(db);
  return r.rows;
}
