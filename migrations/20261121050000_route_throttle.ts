// Route limits that hold across every worker process (issue 5: "coordinated in PostgreSQL, not
// per process"): a route's max_per_second is a schedule of send times every worker reserves from
// (route_throttle), and its concurrency a fixed set of slots a delivery leases for its duration
// (route_slots). Both read the database clock, so processes with skewed clocks agree.
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    -- The route's next free send time. A worker takes greatest(next_at, now) as its own and moves
    -- next_at on by 1/max_per_second, in one statement: the row lock orders the reservations.
    -- per_second is the rate the schedule was made for: a changed rate starts a new schedule.
    CREATE TABLE route_throttle (
      route_id uuid PRIMARY KEY REFERENCES routes(id) ON DELETE CASCADE,
      per_second double precision NOT NULL CHECK (per_second > 0),
      next_at timestamptz NOT NULL
    );

    -- Slots 0 .. concurrency-1 of a route. A delivery claims a free one (lease set, expires_at in
    -- the future) with SKIP LOCKED and frees it when the upstream exchange is over; its process
    -- renews expires_at meanwhile, so the slots of a process that died free themselves.
    CREATE TABLE route_slots (
      route_id uuid NOT NULL REFERENCES routes(id) ON DELETE CASCADE,
      slot integer NOT NULL CHECK (slot >= 0),
      lease uuid,
      -- host:pid of the worker holding it, for an operator wondering who does.
      holder text,
      expires_at timestamptz,
      PRIMARY KEY (route_id, slot)
    );
    CREATE INDEX route_slots_lease ON route_slots (lease) WHERE lease IS NOT NULL;
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    DROP TABLE route_slots;
    DROP TABLE route_throttle;
  `.execute(db);
}
