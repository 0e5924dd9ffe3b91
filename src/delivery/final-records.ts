// Final attempts recorded in groups (GroupedWrites, as the accepting side's group commit): a
// delivery that ends while another's record is being written waits for it, then goes with every
// other one that waited, in one statement (recordFinalAttempts). Each delivery still learns
// whether its own record was written (the job guard) before its job is completed. A message's
// records never share a statement (recordFinalAttempts takes each message once).
import type { Executor } from '../db/database.ts';
import { GroupedWrites } from '../db/grouped-writes.ts';
import { recordFinalAttempt, recordFinalAttempts, type FinalAttempt } from '../db/messages.repository.ts';

/** Records in one statement at most. */
const MAX_GROUP = 100;

export class FinalRecords {
  readonly #grouped: GroupedWrites<FinalAttempt, boolean>;

  constructor(db: Executor) {
    this.#grouped = new GroupedWrites({
      writeMany: (attempts) => recordFinalAttempts(db, attempts),
      writeOne: (attempt) => recordFinalAttempt(db, attempt),
      maxGroup: MAX_GROUP,
      keyOf: (attempt) => attempt.message.id,
    });
  }

  /** Writes `attempt` (with others that end meanwhile); whether it was written (the job guard). */
  record(attempt: FinalAttempt): Promise<boolean> {
    return this.#grouped.write(attempt);
  }
}
