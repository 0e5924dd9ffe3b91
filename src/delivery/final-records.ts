// Group recording of final attempts, as the accepting side's group commit (src/pipeline/commit.ts):
// a delivery that ends while another's record is being written waits for it, then goes with
// every other one that waited, in one statement (recordFinalAttempts). Under load the statements,
// round trips and fsyncs per delivered message shrink with the group; an idle worker records
// each delivery at once, alone. Each delivery still learns whether its own record was written
// (the job guard) before its job is completed.
import type { Executor } from '../db/database.ts';
import { recordFinalAttempts, type FinalAttempt } from '../db/messages.repository.ts';

/** Records in one statement at most. */
const MAX_GROUP = 100;

interface Waiting {
  attempt: FinalAttempt;
  resolve: (written: boolean) => void;
  reject: (err: unknown) => void;
}

export class FinalRecords {
  readonly #db: Executor;
  #waiting: Waiting[] = [];
  #writing = false;

  constructor(db: Executor) {
    this.#db = db;
  }

  /** Writes `attempt` (with others that end meanwhile); whether it was written (the job guard). */
  record(attempt: FinalAttempt): Promise<boolean> {
    return new Promise((resolve, reject) => {
      this.#waiting.push({ attempt, resolve, reject });
      this.#next();
    });
  }

  #next(): void {
    if (this.#writing || this.#waiting.length === 0) return;
    const group = this.#take();
    this.#writing = true;
    void this.#write(group).finally(() => {
      this.#writing = false;
      this.#next();
    });
  }

  /** The next group: in arrival order, each message once (a second record of one waits its turn). */
  #take(): Waiting[] {
    const group: Waiting[] = [];
    const messages = new Set<string>();
    const rest: Waiting[] = [];
    for (const w of this.#waiting) {
      if (group.length < MAX_GROUP && !messages.has(w.attempt.message.id)) {
        messages.add(w.attempt.message.id);
        group.push(w);
      } else {
        rest.push(w);
      }
    }
    this.#waiting = rest;
    return group;
  }

  async #write(group: Waiting[]): Promise<void> {
    try {
      const written = await recordFinalAttempts(this.#db, group.map((w) => w.attempt));
      group.forEach((w, i) => w.resolve(written[i]));
    } catch (err) {
      if (group.length === 1) return group[0].reject(err);
      // Nothing of the group was written. Whatever failed it (one odd record, or the database),
      // each is now written alone and gets its own answer.
      await Promise.all(group.map((w) => recordFinalAttempts(this.#db, [w.attempt]).then(([written]) => w.resolve(written), w.reject)));
    }
  }
}
