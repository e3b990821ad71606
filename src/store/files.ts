import type { Db } from './database.ts';
import { cursorOp, toPage, type Page, type PageRequest } from './pagination.ts';
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
    const order = page.order ?? 'desc';
    let q = this.db.selectFrom('files').selectAll().where('organization_id', '=', organizationId);
    if (page.purpose) q = q.where('purpose', '=', page.purpose);
    if (page.after) {
      const after = page.after;
      q = q.where('seq', cursorOp(order), (eb) => eb.selectFrom('files').select('seq').where('id', '=', after));
    }
    const rows = await q.orderBy('seq', order).limit(page.limit + 1).execute();
    return toPage(rows, page.limit);
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
