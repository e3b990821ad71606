// Jobs as the JSON text the API sends, built once per version of their row: retrieving and listing
// jobs read ids and versions, and only rows that changed since are read whole, turned into objects
// and stringified (CPU profiles under `npm run bench:api` put most of a list there). While the
// store's change stamp stays the same, a retrieve or list answered before is answered again without
// a query (half a list's CPU time, bench:api).
import type { JobRecord, Store } from '../../store/index.ts';
import type { JobPageRequest } from '../../store/jobs.ts';
import { listJson } from '../pagination.ts';

/** About 1 KB each: bounds the cache near 10 MB; past it the oldest entry goes. */
const MAX_ENTRIES = 10_000;
/** Answers kept by request (a list's up to ~100 KB): past it the oldest goes. */
const MAX_ANSWERS = 256;

export class JobJsonCache {
  private readonly built = new Map<string, { version: number; json: string }>();
  private readonly answers = new Map<string, { stamp: string; json: string | undefined }>();

  constructor(
    private readonly store: Store,
    /** The job's API object (the same record always gives the same object). */
    private readonly render: (job: JobRecord) => unknown,
  ) {}

  /** The job's JSON; undefined when the organization has no such job. */
  one(id: string, organizationId: string): Promise<string | undefined> {
    return this.whileUnchanged(`one ${organizationId} ${id}`, () => this.readOne(id, organizationId));
  }

  private async readOne(id: string, organizationId: string): Promise<string | undefined> {
    const version = await this.store.jobs.version(id, organizationId);
    if (version === undefined) return undefined;
    const cached = this.built.get(id);
    if (cached?.version === version) return cached.json;
    const [job] = await this.store.jobs.getMany([id], organizationId);
    return job && this.build(job);
  }

  /** A list object's JSON for a page of the organization's jobs. */
  async page(organizationId: string, page: JobPageRequest): Promise<string> {
    const key = `page ${organizationId} ${JSON.stringify([page.after, page.limit, page.order, page.metadata])}`;
    return (await this.whileUnchanged(key, () => this.readPage(organizationId, page)))!;
  }

  /** `read`'s answer, or the one it gave before when no row has changed since (the stamp is taken before reading). */
  private async whileUnchanged(key: string, read: () => Promise<string | undefined>): Promise<string | undefined> {
    const stamp = this.store.changeStamp();
    if (stamp === null) return read();
    const kept = this.answers.get(key);
    if (kept?.stamp === stamp) return kept.json;
    const json = await read();
    this.answers.delete(key);
    if (this.answers.size >= MAX_ANSWERS) this.answers.delete(this.answers.keys().next().value!);
    this.answers.set(key, { stamp, json });
    return json;
  }

  private async readPage(organizationId: string, page: JobPageRequest): Promise<string> {
    const { data, hasMore } = await this.store.jobs.listVersions(organizationId, page);
    const json = new Map<string, string>();
    const stale: string[] = [];
    for (const { id, version } of data) {
      const cached = this.built.get(id);
      if (cached?.version === version) json.set(id, cached.json);
      else stale.push(id);
    }
    // Rows read now may be newer than the versions listed: newer is what a reader wants.
    for (const job of await this.store.jobs.getMany(stale, organizationId)) json.set(job.id, this.build(job));
    return listJson(data.filter(({ id }) => json.has(id)).map(({ id }) => ({ id, json: json.get(id)! })), hasMore);
  }

  private build(job: JobRecord): string {
    const json = JSON.stringify(this.render(job));
    this.built.delete(job.id);
    if (this.built.size >= MAX_ENTRIES) this.built.delete(this.built.keys().next().value!);
    this.built.set(job.id, { version: job.version, json });
    return json;
  }
}
