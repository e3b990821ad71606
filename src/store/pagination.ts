// Cursor pagination shared by the repositories: `after` is an object id, order follows `seq`
// (insertion order), and one extra row is fetched to learn `hasMore`.
import { sql, type SelectQueryBuilder } from 'kysely';
import type { Database } from './schema.ts';
export interface PageRequest {
  after?: string | null;
  limit: number;
  order?: 'asc' | 'desc';
}

export interface Page<T> {
  data: T[];
  hasMore: boolean;
}

export function toPage<T>(rows: T[], limit: number): Page<T> {
  return { data: rows.slice(0, limit), hasMore: rows.length > limit };
}

export function mapPage<T, U>(page: Page<T>, map: (row: T) => U): Page<U> {
  return { data: page.data.map(map), hasMore: page.hasMore };
}

export const cursorOp = (order: 'asc' | 'desc') => (order === 'asc' ? '>' : '<');

/** The tables listed page by page (each has `seq` and `id`). */
type PagedTable = 'files' | 'jobs' | 'events' | 'checkpoints' | 'permissions';

/** `query` (a filtered select from `table`) limited to one page: after `page.after`'s row in `seq` order (newest first by default), and one row more. */
export function pageQuery<T extends PagedTable, O>(query: SelectQueryBuilder<Database, T, O>, table: T, page: PageRequest) {
  const order = page.order ?? 'desc';
  const after = page.after;
  // Kysely cannot resolve column references over a generic table; every PagedTable has these two.
  let q = query as unknown as SelectQueryBuilder<Database, 'files', O>;
  if (after) q = q.where('seq', cursorOp(order), (eb) => eb.selectFrom(table as 'files').select('seq').where('id', '=', after));
  if (!Number.isSafeInteger(page.limit) || page.limit < 0) throw new RangeError(`a page's limit must be a whole number, not ${page.limit}`);
  // The limit written into the SQL, not bound: SQLite prepares a statement again at every run when
  // a bound value may change its plan, as a LIMIT's does (a third of a list's query, bench:api).
  return q.orderBy('seq', order).limit(sql.lit(page.limit + 1));
}

/** One page of `query` (a filtered select from `table`): after `page.after`'s row in `seq` order (newest first by default). */
export async function fetchPage<T extends PagedTable, O>(query: SelectQueryBuilder<Database, T, O>, table: T, page: PageRequest): Promise<Page<O>> {
  return toPage(await pageQuery(query, table, page).execute(), page.limit);
}
