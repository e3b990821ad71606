import type { Db } from './database.ts';
import type { UploadPartRow, UploadRow, UploadsTable } from './schema.ts';
import type { Insertable, Updateable } from 'kysely';

export class UploadsRepository {
  constructor(private readonly db: Db) {}

  async insert(upload: Insertable<UploadsTable>): Promise<UploadRow> {
    await this.db.insertInto('uploads').values(upload).execute();
    return (await this.get(upload.id))!;
  }

  async get(id: string, organizationId?: string): Promise<UploadRow | undefined> {
    let q = this.db.selectFrom('uploads').selectAll().where('id', '=', id);
    if (organizationId !== undefined) q = q.where('organization_id', '=', organizationId);
    return q.executeTakeFirst();
  }

  /** Updates only while the upload is still `expectStatus`; false when it no longer was. */
  async updateIfStatus(id: string, expectStatus: string, patch: Updateable<UploadsTable>): Promise<boolean> {
    const res = await this.db
      .updateTable('uploads')
      .set(patch)
      .where('id', '=', id)
      .where('status', '=', expectStatus)
      .executeTakeFirst();
    return Number(res.numUpdatedRows) > 0;
  }

  /** Pending uploads whose lifetime ended at or before `now`. */
  async listExpiredPending(now: number): Promise<UploadRow[]> {
    return this.db.selectFrom('uploads').selectAll().where('status', '=', 'pending').where('expires_at', '<=', now).orderBy('seq').execute();
  }

  async addPart(part: { id: string; upload_id: string; bytes: number; created_at: number }): Promise<UploadPartRow> {
    await this.db.insertInto('upload_parts').values(part).execute();
    return (await this.db.selectFrom('upload_parts').selectAll().where('id', '=', part.id).executeTakeFirst())!;
  }

  async parts(uploadId: string): Promise<UploadPartRow[]> {
    return this.db.selectFrom('upload_parts').selectAll().where('upload_id', '=', uploadId).orderBy('seq').execute();
  }

  async deleteParts(uploadId: string): Promise<void> {
    await this.db.deleteFrom('upload_parts').where('upload_id', '=', uploadId).execute();
  }
}
