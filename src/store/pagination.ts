// Cursor pagination shared by the repositories: `after` is an object id, order follows `seq`
// (insertion order), and one extra row is fetched to learn `hasMore`.
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

export const cursorOp = (order: 'asc' | 'desc') => (order === 'asc' ? '>' : '<');
