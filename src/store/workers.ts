// Worker processes, as they state themselves: host, memory and cores, and a heartbeat. The queue
// hands a job only to a worker that can hold it (scheduler/queue.ts) and tells when no live worker
// can; /metrics shows each one. A worker is live while its heartbeat is recent (the caller says how
// recent: the job lease's length).
import type { Db } from './database.ts';
import type { WorkerRow } from './schema.ts';

/** A worker's row, its numbers as numbers (PostgreSQL returns its bigints as strings). */
export type WorkerRecord = WorkerRow;

export type NewWorker = Pick<WorkerRecord, 'id' | 'host' | 'memory_bytes' | 'cores'>;

function fromRow(row: WorkerRow): WorkerRecord {
  return {
    ...row,
    memory_bytes: Number(row.memory_bytes),
    cores: Number(row.cores),
    started_at_ms: Number(row.started_at_ms),
    heartbeat_at_ms: Number(row.heartbeat_at_ms),
  };
}

export class WorkersRepository {
  constructor(private readonly db: Db) {}

  /** Records the worker as started now (again, under the same id: its capacity is replaced). */
  async register(worker: NewWorker, nowMs: number): Promise<void> {
    const row = { ...worker, started_at_ms: nowMs, heartbeat_at_ms: nowMs };
    await this.db
      .insertInto('workers')
      .values(row)
      .onConflict((oc) => oc.column('id').doUpdateSet(row))
      .execute();
  }

  /** False when the worker has no row (removed as silent): it should register again. */
  async heartbeat(id: string, nowMs: number): Promise<boolean> {
    const res = await this.db.updateTable('workers').set({ heartbeat_at_ms: nowMs }).where('id', '=', id).executeTakeFirst();
    return Number(res.numUpdatedRows) > 0;
  }

  async remove(id: string): Promise<void> {
    await this.db.deleteFrom('workers').where('id', '=', id).execute();
  }

  /** Forgets workers silent since before `beforeMs` (killed without stopping). */
  async removeSilentSince(beforeMs: number): Promise<void> {
    await this.db.deleteFrom('workers').where('heartbeat_at_ms', '<', beforeMs).execute();
  }

  /** Every registered worker, live or not, by id. */
  async list(): Promise<WorkerRecord[]> {
    return (await this.db.selectFrom('workers').selectAll().orderBy('id').execute()).map(fromRow);
  }

  /** The most memory any worker (but `exceptId`) heard from at or after `sinceMs` has; null when none was. */
  async largestLiveMemory(sinceMs: number, exceptId?: string): Promise<number | null> {
    let q = this.db
      .selectFrom('workers')
      .select((eb) => eb.fn.max('memory_bytes').as('most'))
      .where('heartbeat_at_ms', '>=', sinceMs);
    if (exceptId !== undefined) q = q.where('id', '!=', exceptId);
    const row = await q.executeTakeFirst();
    return row?.most === null || row?.most === undefined ? null : Number(row.most);
  }
}
