import type { Db } from './database.ts';
import { fetchPage, type Page, type PageRequest } from './pagination.ts';
import type { FileRow, NewFileRow } from './schema.ts';

export class FilesRepository {
  constructor(private readonly db: Db) {}

  async insert(file: NewFileRow): Promise<FileRow> {
    await this.db.insertInto('files').values(file).execute();
    return (await this.get(file.id))!;
  }

  /** With `organizationId`, another organization's file reads as absent. */
  async get(id: string, organizationId?: string): Promise<FileRow | undefined> {
    let q = this.db.selectFrom('files').selectAll().where('id', '=', id);
    if (organizationId !== undefined) q = q.where('organization_id', '=', organizationId);
    return q.executeTakeFirst();
  }

  async list(organizationId: string, page: PageRequest & { purpose?: string }): Promise<Page<FileRow>> {
    let q = this.db.selectFrom('files').selectAll().where('organization_id', '=', organizationId);
    if (page.purpose) q = q.where('purpose', '=', page.purpose);
    return fetchPage(q, 'files', page);
  }

  async delete(id: string, organizationId: string): Promise<boolean> {
    const res = await this.db
      .deleteFrom('files')
      .where('id', '=', id)
      .where('organization_id', '=', organizationId)
      .executeTakeFirst();
    return Number(res.numDeletedRows) > 0;
  }
}
