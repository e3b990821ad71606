// Jobs as the JSON text the API sends, built once per version of their row: retrieving and listing
// jobs read ids and versions, and only rows that changed since are read whole, turned into objects
// and stringified (CPU profiles under `npm run bench:api` put most of a list there).
import type { JobRecord, Store } from '../../store/index.ts';
import type { JobPageRequest } from '../../store/jobs.ts';
import { listJson } from '../pagination.ts';

/** About 1 KB each: bounds the cache near 10 MB; past it the oldest entry goes. */
const MAX_ENTRIES = 10_000;

export class JobJsonCache {
  private readonly built = new Map<string, { version: number; json: string }>();

  constructor(
    private readonly store: Store,
    /** The job's API object (the same record always gives the same object). */
    private readonly render: (job: JobRecord) => unknown,
  ) {}

  /** The job's JSON; undefined when the organization has no such job. */
  async one(id: string, organizationId: string): Promise<string | undefined> {
    const version = await this.store.jobs.version(id, organizationId);
    if (version === undefined) return undefined;
    const cached = this.built.get(id);
    if (cached?.version === version) return cached.json;
    const [job] = await this.store.jobs.getMany([id], organizationId);
    return job && this.build(job);
  }

  /** A list object's JSON for a page of the organization's jobs. */
  async page(organizationId: string, page: JobPageRequest): Promise<string> {
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
