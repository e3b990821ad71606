import type { Db } from './database.ts';
import { fetchPage, mapPage, type Page, type PageRequest } from './pagination.ts';

export interface EventRecord {
  id: string;
  job_id: string;
  created_at: number;
  level: 'info' | 'warn' | 'error';
  type: 'message' | 'metrics';
  message: string;
  data: Record<string, unknown> | null;
}

export class EventsRepository {
  constructor(private readonly db: Db) {}

  async add(event: EventRecord): Promise<EventRecord> {
    await this.db
      .insertInto('events')
      // Messages may quote what a user's file or grader printed; PostgreSQL text cannot hold NUL.
      .values({ ...event, message: event.message.replaceAll('\u0000', '\ufffd'), data: event.data === null ? null : JSON.stringify(event.data) })
      .execute();
    return event;
  }

  /** Newest first, as OpenAI lists events. */
  async list(jobId: string, page: PageRequest): Promise<Page<EventRecord>> {
    const q = this.db.selectFrom('events').selectAll().where('job_id', '=', jobId);
    return mapPage(await fetchPage(q, 'events', page), ({ seq: _seq, ...r }) => ({
      ...r,
      created_at: Number(r.created_at),
      level: r.level as EventRecord['level'],
      type: r.type as EventRecord['type'],
      data: r.data ? JSON.parse(r.data) : null,
    }));
  }
}
