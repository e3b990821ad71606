import { inTransaction, type Db } from './database.ts';
import type { ModelRow } from './schema.ts';

/** A fine-tuned model registered when its job succeeds (a models row without its cursor). */
export type FineTunedModelRecord = Omit<ModelRow, 'seq'>;

const fromRow = ({ seq: _seq, ...r }: any): FineTunedModelRecord => ({ ...r, created_at: Number(r.created_at) });

export class ModelsRepository {
  constructor(private readonly db: Db) {}

  async add(model: FineTunedModelRecord): Promise<FineTunedModelRecord> {
    await this.db.insertInto('models').values(model).execute();
    return model;
  }

  async get(id: string, organizationId?: string): Promise<FineTunedModelRecord | undefined> {
    let q = this.db.selectFrom('models').selectAll().where('id', '=', id);
    if (organizationId !== undefined) q = q.where('organization_id', '=', organizationId);
    const row = await q.executeTakeFirst();
    return row && fromRow(row);
  }

  async list(organizationId: string): Promise<FineTunedModelRecord[]> {
    const rows = await this.db.selectFrom('models').selectAll().where('organization_id', '=', organizationId).orderBy('seq').execute();
    return rows.map(fromRow);
  }

  /**
   * Deletes the model and its job's final checkpoint, which has the same name: left behind, that
   * checkpoint would keep the name listed and servable. The deleted row (its blobs are the caller's
   * to remove), or undefined when there was none.
   */
  async delete(id: string, organizationId: string): Promise<FineTunedModelRecord | undefined> {
    return inTransaction(this.db, async (tx) => {
      const row = await tx.deleteFrom('models').where('id', '=', id).where('organization_id', '=', organizationId).returningAll().executeTakeFirst();
      if (!row) return undefined;
      await tx.deleteFrom('checkpoints').where('fine_tuned_model_checkpoint', '=', id).where('organization_id', '=', organizationId).execute();
      return fromRow(row);
    });
  }
}
