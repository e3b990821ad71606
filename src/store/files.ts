import { nowSeconds } from '../domain/clock.ts';
import { TERMINAL_STATUSES } from '../domain/job-status.ts';
import type { Db } from './database.ts';
import { fetchPage, type Page, type PageRequest } from './pagination.ts';
import type { FileRow, NewFileRow } from './schema.ts';

export class FilesRepository {
  /** `now`: the clock (Unix seconds) that decides which files have expired. */
  constructor(
    private readonly db: Db,
    private readonly now: () => number = nowSeconds,
  ) {}

  async insert(file: NewFileRow): Promise<FileRow> {
    await this.db.insertInto('files').values(file).execute();
    return (await this.db.selectFrom('files').selectAll().where('id', '=', file.id).executeTakeFirst())!;
  }

  /** Files past `expires_at` read as absent at once, before any sweep removes them. */
  private live() {
    return this.db
      .selectFrom('files')
      .selectAll()
      .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', this.now())]));
  }

  /**
   * With `organizationId`, another organization's file reads as absent. `includeExpired`: for a job
   * created before its file expired (the sweep keeps such files until the job ends).
   */
  async get(id: string, organizationId?: string, includeExpired = false): Promise<FileRow | undefined> {
    let q = (includeExpired ? this.db.selectFrom('files').selectAll() : this.live()).where('id', '=', id);
    if (organizationId !== undefined) q = q.where('organization_id', '=', organizationId);
    return q.executeTakeFirst();
  }

  async list(organizationId: string, page: PageRequest & { purpose?: string }): Promise<Page<FileRow>> {
    let q = this.live().where('organization_id', '=', organizationId);
    if (page.purpose) q = q.where('purpose', '=', page.purpose);
    return fetchPage(q, 'files', page);
  }

  /** Files expired at `now` that no unfinished job still trains on: the sweep may remove them. */
  async listRemovable(now: number): Promise<FileRow[]> {
    return this.db
      .selectFrom('files')
      .selectAll()
      .where('expires_at', '<=', now)
      .where((eb) =>
        eb.not(
          eb.exists(
            eb
              .selectFrom('jobs')
              .select('jobs.id')
              .where('jobs.status', 'not in', TERMINAL_STATUSES) // an unfinished job still needs its files
              .where((j) => j.or([j('jobs.training_file', '=', j.ref('files.id')), j('jobs.validation_file', '=', j.ref('files.id'))])),
          ),
        ),
      )
      .orderBy('seq')
      .execute();
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
