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
   * checkpoint would keep the name listed and servable.
   */
  async delete(id: string, organizationId: string): Promise<boolean> {
    return inTransaction(this.db, async (tx) => {
      const res = await tx.deleteFrom('models').where('id', '=', id).where('organization_id', '=', organizationId).executeTakeFirst();
      if (Number(res.numDeletedRows) === 0) return false;
      await tx.deleteFrom('checkpoints').where('fine_tuned_model_checkpoint', '=', id).where('organization_id', '=', organizationId).execute();
      return true;
    });
  }
}
