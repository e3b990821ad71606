import type { Db } from './database.ts';
import { fetchPage, mapPage, type Page, type PageRequest } from './pagination.ts';
import type { CheckpointRow } from './schema.ts';

/** A checkpoints row without its cursor, metrics parsed. */
export interface CheckpointRecord extends Omit<CheckpointRow, 'seq' | 'metrics'> {
  metrics: Record<string, number>;
}

function fromRow(r: any): CheckpointRecord {
  const { seq: _seq, ...rest } = r;
  return {
    ...rest,
    created_at: Number(r.created_at),
    step_number: Number(r.step_number),
    metrics: JSON.parse(r.metrics),
  };
}

export class CheckpointsRepository {
  constructor(private readonly db: Db) {}

  async add(checkpoint: CheckpointRecord): Promise<CheckpointRecord> {
    await this.db
      .insertInto('checkpoints')
      .values({ ...checkpoint, metrics: JSON.stringify(checkpoint.metrics) })
      .execute();
    return checkpoint;
  }

  async rename(id: string, name: string): Promise<void> {
    await this.db.updateTable('checkpoints').set({ fine_tuned_model_checkpoint: name }).where('id', '=', id).execute();
  }

  /** Newest first. */
  async listForJob(jobId: string, page: PageRequest): Promise<Page<CheckpointRecord>> {
    const q = this.db.selectFrom('checkpoints').selectAll().where('job_id', '=', jobId);
    return mapPage(await fetchPage(q, 'checkpoints', page), fromRow);
  }

  async listForOrganization(organizationId: string): Promise<CheckpointRecord[]> {
    const rows = await this.db
      .selectFrom('checkpoints')
      .selectAll()
      .where('organization_id', '=', organizationId)
      .orderBy('seq')
      .execute();
    return rows.map(fromRow);
  }

  async getByName(name: string): Promise<CheckpointRecord | undefined> {
    const row = await this.db.selectFrom('checkpoints').selectAll().where('fine_tuned_model_checkpoint', '=', name).executeTakeFirst();
    return row && fromRow(row);
  }

  /**
   * Removes a job's checkpoints beyond `keep`, in this order of keeping: the newest first (it is the
   * final model), then the newer ones, or with `bestBy` those with the highest value of that metric
   * (OpenAI keeps reinforcement jobs' 3 best by valid_reward_mean; ties keep the newer).
   */
  async prune(jobId: string, keep: number, bestBy?: string): Promise<CheckpointRecord[]> {
    const [newest, ...older] = (await this.db.selectFrom('checkpoints').selectAll().where('job_id', '=', jobId).orderBy('seq', 'desc').execute()).map(fromRow);
    if (!newest) return [];
    const score = (c: CheckpointRecord) => (bestBy !== undefined && Number.isFinite(c.metrics[bestBy]) ? c.metrics[bestBy] : -Infinity);
    if (bestBy !== undefined) older.sort((a, b) => score(b) - score(a)); // stable: newer first among equals
    const dropped = [newest, ...older].slice(keep);
    if (dropped.length > 0) {
      await this.db.deleteFrom('checkpoints').where('id', 'in', dropped.map((c) => c.id)).execute();
    }
    return dropped;
  }
}
