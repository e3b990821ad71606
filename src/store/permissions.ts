import type { Db } from './database.ts';
import { fetchPage, mapPage, type Page, type PageRequest } from './pagination.ts';
import type { PermissionRow } from './schema.ts';

/** A permissions row without its cursor. */
export type PermissionRecord = Omit<PermissionRow, 'seq'>;

const fromRow = ({ seq: _seq, ...r }: any): PermissionRecord => ({ ...r, created_at: Number(r.created_at) });

export class PermissionsRepository {
  constructor(private readonly db: Db) {}

  async add(permission: PermissionRecord): Promise<PermissionRecord> {
    await this.db.insertInto('permissions').values(permission).execute();
    return permission;
  }

  async list(checkpoint: string, page: PageRequest & { projectId?: string }): Promise<Page<PermissionRecord>> {
    let q = this.db.selectFrom('permissions').selectAll().where('checkpoint', '=', checkpoint);
    if (page.projectId) q = q.where('project_id', '=', page.projectId);
    return mapPage(await fetchPage(q, 'permissions', page), fromRow);
  }

  async find(checkpoint: string, projectId: string): Promise<PermissionRecord | undefined> {
    const row = await this.db
      .selectFrom('permissions')
      .selectAll()
      .where('checkpoint', '=', checkpoint)
      .where('project_id', '=', projectId)
      .executeTakeFirst();
    return row && fromRow(row);
  }

  /** Checkpoint names shared with `projectId` (an organization id here). */
  async sharedWith(projectId: string): Promise<string[]> {
    const rows = await this.db.selectFrom('permissions').select('checkpoint').where('project_id', '=', projectId).execute();
    return rows.map((r) => r.checkpoint);
  }

  async delete(checkpoint: string, id: string): Promise<boolean> {
    const res = await this.db.deleteFrom('permissions').where('checkpoint', '=', checkpoint).where('id', '=', id).executeTakeFirst();
    return Number(res.numDeletedRows) > 0;
  }
}
