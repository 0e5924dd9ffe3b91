// Opens and clicks (SPEC §6): the event, and whether it is the message's first, in one
// transaction.
//
// These queries find the message by id alone, not by tenant: the caller is a stranger's mail
// client holding a token we signed, and the signed message id is the whole authority. The event
// is filed under the tenant the message row names, never one from the request.
import { sql } from 'kysely';
import type { Db } from './database.ts';
import { insertEvent } from './messages.repository.ts';

export type Engagement = 'opened' | 'clicked';

const FIRST_COLUMN = { opened: 'first_opened_at', clicked: 'first_clicked_at' } as const;

/**
 * Records an `opened` or `clicked` event with `detail.first` set on the message's first one
 * (the stats roll-up counts those as unique). Returns undefined, recording nothing, when the
 * message no longer exists (deleted with its tenant, or never stored: a duplicate's tokens).
 *
 * Race-free without a lock of our own: of two first opens at once, both UPDATEs want the row;
 * the second waits for the first to commit, re-checks `IS NULL` on the new row version (READ
 * COMMITTED) and matches nothing, so it records `first: false`. Only the first open writes the
 * row; later ones only read it.
 */
export async function recordEngagement(
  db: Db,
  messageId: string,
  type: Engagement,
  detail: Record<string, unknown>,
): Promise<{ first: boolean } | undefined> {
  const column = FIRST_COLUMN[type];
  return await db.transaction().execute(async (trx) => {
    const claimed = await trx
      .updateTable('messages')
      .set({ [column]: sql<Date>`now()` })
      .where('id', '=', messageId)
      .where(column, 'is', null)
      .returning(['id', 'tenant_id', 'tag', 'route_name'])
      .executeTakeFirst();
    const message =
      claimed ?? (await trx.selectFrom('messages').select(['id', 'tenant_id', 'tag', 'route_name']).where('id', '=', messageId).executeTakeFirst());
    if (!message) return undefined;
    const first = claimed !== undefined;
    await insertEvent(trx, message, { type, detail: { first, ...detail } });
    return { first };
  });
}
