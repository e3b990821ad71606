// Fine-tuning jobs, their metadata index, and the queue's lease columns. A status changes only by an
// action of the lifecycle in domain/jobs.ts (`transition`, and the queue's claim and requeue, which
// ask the lifecycle too), as a conditional update (`where status in …`): concurrent API calls and
// workers cannot overwrite each other (the loser learns it from the returned `undefined`), and no
// status the lifecycle does not allow can be written. Every update bumps the row's `version`.
import { CompiledQuery, sql, type Compilable, type ExpressionBuilder } from 'kysely';
import { transitionOf, type JobAction } from '../domain/jobs.ts';
import type { JobStatus } from '../domain/job-status.ts';
import { inTransaction, type Db } from './database.ts';
import type { SqlDialectName } from './migrations.ts';
import { mapPage, pageQuery, toPage, type Page, type PageRequest } from './pagination.ts';
import type { Database, JobRow, JobUpdate } from './schema.ts';

/** A failed job's `error` as OpenAI shows it (scheduler/job-error.ts's JobError is what a run throws). */
export interface JobErrorDetails {
  code: string;
  message: string;
  param: string | null;
}

/** `{type, supervised|dpo|reinforcement: {hyperparameters…}}` as the API shows it. */
export type JobMethod = { type: string } & Record<string, any>;

export interface JobRecord {
  seq: number;
  id: string;
  organization_id: string;
  model: string;
  training_file: string;
  validation_file: string | null;
  status: JobStatus;
  method: JobMethod;
  suffix: string | null;
  seed: number;
  metadata: Record<string, string> | null;
  integrations: unknown[] | null;
  error: JobErrorDetails | null;
  fine_tuned_model: string | null;
  finished_at: number | null;
  trained_tokens: number | null;
  estimated_finish: number | null;
  result_files: string[];
  created_at: number;
  dataset: Record<string, unknown> | null;
  worker_id: string | null;
  lease_expires_at_ms: number | null;
  attempts: number;
  resume_point: string | null;
  /** Bumped by every update: what was built from a job stays valid while its version does. */
  version: number;
  /** Memory a worker needs to hold the job (the engine's estimate, else the model's size); null: unknown, any worker may. */
  memory_required_bytes: number | null;
}

/** A page of an organization's jobs, optionally by metadata: undefined = no filter; null = jobs without metadata; an object = jobs having every pair. */
export type JobPageRequest = PageRequest & { metadata?: Record<string, string> | null };

export type NewJob = Pick<
  JobRecord,
  'id' | 'organization_id' | 'model' | 'training_file' | 'validation_file' | 'status' | 'method' | 'suffix' | 'seed' | 'metadata' | 'integrations' | 'created_at'
> & Partial<Pick<JobRecord, 'memory_required_bytes'>>;

/** What may change beside a job's status; the status itself changes only through `transition`. */
export type JobPatch = Partial<
  Pick<
    JobRecord,
    | 'method' | 'error' | 'fine_tuned_model' | 'finished_at' | 'trained_tokens' | 'estimated_finish'
    | 'result_files' | 'dataset' | 'worker_id' | 'lease_expires_at_ms' | 'resume_point' | 'memory_required_bytes'
  >
>;

const json = (v: unknown) => (v === null || v === undefined ? null : JSON.stringify(v));

/** Set by every update of a job's row, whatever else it changes. */
const NEXT_VERSION = { version: sql<number>`version + 1` };

/** A job's id and version: enough to tell whether what was built from it is still current. */
export interface JobVersion {
  id: string;
  version: number;
}

function fromRow(row: JobRow): JobRecord {
  return {
    ...row,
    status: row.status as JobStatus,
    seq: Number(row.seq),
    seed: Number(row.seed),
    version: Number(row.version),
    created_at: Number(row.created_at),
    finished_at: row.finished_at === null ? null : Number(row.finished_at),
    trained_tokens: row.trained_tokens === null ? null : Number(row.trained_tokens),
    estimated_finish: row.estimated_finish === null ? null : Number(row.estimated_finish),
    lease_expires_at_ms: row.lease_expires_at_ms === null ? null : Number(row.lease_expires_at_ms),
    memory_required_bytes: row.memory_required_bytes === null ? null : Number(row.memory_required_bytes),
    method: JSON.parse(row.method),
    metadata: row.metadata ? JSON.parse(row.metadata) : null,
    integrations: row.integrations ? JSON.parse(row.integrations) : null,
    error: row.error ? JSON.parse(row.error) : null,
    result_files: JSON.parse(row.result_files),
    dataset: row.dataset ? JSON.parse(row.dataset) : null,
  };
}

function toUpdate(patch: JobPatch): JobUpdate {
  // Types keep `status` out of a patch; this keeps it out of one built without them.
  if (Object.hasOwn(patch, 'status')) throw new Error('a job status changes only through an action of its lifecycle (JobsRepository.transition)');
  const out: JobUpdate = {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === undefined) continue;
    (out as any)[k] = k === 'method' || k === 'error' || k === 'result_files' || k === 'dataset' ? json(v) : v;
  }
  return out;
}

/** A job a worker with `memoryBytes` can hold: its need unknown or within them (any job, when undefined). */
function fitsIn(eb: ExpressionBuilder<Database, 'jobs'>, memoryBytes: number | undefined) {
  if (memoryBytes === undefined) return eb.lit(true);
  return eb.or([eb('memory_required_bytes', 'is', null), eb('memory_required_bytes', '<=', memoryBytes)]);
}

/** PostgreSQL: until `db`'s transaction ends, others taking this organization's lock for `purpose` wait. */
async function advisoryOrganizationLock(db: Db, organizationId: string, purpose: 'claim' | 'create'): Promise<void> {
  await sql`select pg_advisory_xact_lock(hashtext(${`tuneforge-${purpose}:${organizationId}`}))`.execute(db);
}

/** A value a query is built with once, standing for each run's value at `index` (`CompiledOnce`). */
class Slot {
  constructor(readonly index: number) {}
}

/**
 * The SQL of the hottest reads (retrieving and listing jobs) compiled once per shape of the query,
 * then run with each call's values: Kysely builds and compiles a query at every call, which cost
 * more than SQLite's run of it (CPU profiles under bench:api). Past MAX_SHAPES the oldest goes.
 */
class CompiledOnce {
  private static readonly MAX_SHAPES = 256;
  private readonly shapes = new Map<string, { sql: string; parameters: readonly unknown[] }>();

  constructor(private readonly db: Db) {}

  /**
   * The rows of the query `build` makes from slots standing for `values`. `shape` names what else
   * decides its SQL (every value of `build`'s that is not a slot): one shape, one SQL text.
   */
  async rows<R>(shape: string, values: readonly unknown[], build: (slots: any[]) => Compilable<R>): Promise<R[]> {
    let compiled = this.shapes.get(shape);
    if (!compiled) {
      compiled = build(values.map((_, i) => new Slot(i))).compile();
      if (this.shapes.size >= CompiledOnce.MAX_SHAPES) this.shapes.delete(this.shapes.keys().next().value!);
      this.shapes.set(shape, compiled);
    }
    const parameters = compiled.parameters.map((p) => (p instanceof Slot ? values[p.index] : p));
    return (await this.db.executeQuery<R>(CompiledQuery.raw(compiled.sql, parameters))).rows;
  }
}

export class JobsRepository {
  private readonly compiled: CompiledOnce;

  constructor(
    private readonly db: Db,
    private readonly dialect: SqlDialectName,
  ) {
    this.compiled = new CompiledOnce(db);
  }

  async insert(job: NewJob): Promise<JobRecord> {
    await inTransaction(this.db, async (tx) => {
      await tx
        .insertInto('jobs')
        .values({
          ...job,
          method: JSON.stringify(job.method),
          metadata: json(job.metadata),
          integrations: json(job.integrations),
          error: null,
          fine_tuned_model: null,
          finished_at: null,
          trained_tokens: null,
          estimated_finish: null,
          result_files: '[]',
          dataset: null,
          worker_id: null,
          lease_expires_at_ms: null,
          attempts: 0,
          resume_point: null,
          memory_required_bytes: job.memory_required_bytes ?? null,
        })
        .execute();
      const pairs = Object.entries(job.metadata ?? {});
      if (pairs.length > 0) {
        await tx
          .insertInto('job_metadata')
          .values(pairs.map(([key, value]) => ({ job_id: job.id, key, value })))
          .execute();
      }
    });
    return (await this.get(job.id))!;
  }

  /** With `organizationId`, another organization's job reads as absent. */
  async get(id: string, organizationId?: string): Promise<JobRecord | undefined> {
    let q = this.db.selectFrom('jobs').selectAll().where('id', '=', id);
    if (organizationId !== undefined) q = q.where('organization_id', '=', organizationId);
    const row = await q.executeTakeFirst();
    return row && fromRow(row);
  }

  /**
   * A page of the organization's jobs, newest first, as ids and versions: a fraction of reading whole
   * rows, which `getMany` reads for the jobs a reader has not built yet (api/fine-tuning/job-json.ts).
   */
  async listVersions(organizationId: string, page: JobPageRequest): Promise<Page<JobVersion>> {
    const { after, limit, order = 'desc', metadata } = page;
    const pairs = metadata ? Object.entries(metadata) : [];
    const filter = metadata === undefined ? 'all' : metadata === null ? 'none' : pairs.length;
    const rows = await this.compiled.rows(
      `listVersions ${filter} ${after ? 'after' : 'first'} ${order} ${limit}`,
      [organizationId, after, ...pairs.flat()],
      ([org, afterSlot, ...pairSlots]) => {
        const slotPairs = metadata ? pairs.map((_, i): [string, string] => [pairSlots[2 * i], pairSlots[2 * i + 1]]) : metadata;
        return pageQuery(this.listed(org, slotPairs).select(['id', 'version']), 'jobs', { after: after && afterSlot, limit, order });
      },
    );
    return mapPage(toPage(rows, limit), (row) => ({ id: row.id, version: Number(row.version) }));
  }

  /** The organization's jobs among `ids` (in no particular order; those not found are absent). */
  async getMany(ids: readonly string[], organizationId: string): Promise<JobRecord[]> {
    if (ids.length === 0) return [];
    const rows = await this.db.selectFrom('jobs').selectAll().where('id', 'in', ids).where('organization_id', '=', organizationId).execute();
    return rows.map(fromRow);
  }

  /** The job's version; undefined when there is no such job (of `organizationId`). */
  async version(id: string, organizationId: string): Promise<number | undefined> {
    const [row] = await this.compiled.rows('version', [id, organizationId], ([idSlot, org]) =>
      this.db.selectFrom('jobs').select('version').where('id', '=', idSlot).where('organization_id', '=', org),
    );
    return row && Number(row.version);
  }

  /** The organization's jobs a list shows: all (`metadata` undefined), those without metadata (null), or those having every pair. */
  private listed(organizationId: string, metadata: [key: string, value: string][] | null | undefined) {
    let q = this.db.selectFrom('jobs').where('organization_id', '=', organizationId);
    if (metadata === null) {
      q = q.where((eb) => eb.not(eb.exists(eb.selectFrom('job_metadata').select('key').whereRef('job_metadata.job_id', '=', 'jobs.id'))));
    } else if (metadata) {
      for (const [key, value] of metadata) {
        q = q.where((eb) =>
          eb.exists(
            eb
              .selectFrom('job_metadata')
              .select('key')
              .whereRef('job_metadata.job_id', '=', 'jobs.id')
              .where('job_metadata.key', '=', key)
              .where('job_metadata.value', '=', value),
          ),
        );
      }
    }
    return q;
  }

  /** Applies `patch` (no status: see `transition`) only while the job's status is one of `whileStatus` (any, when omitted). */
  async update(id: string, patch: JobPatch, whileStatus?: readonly JobStatus[]): Promise<JobRecord | undefined> {
    let q = this.db.updateTable('jobs').set({ ...toUpdate(patch), ...NEXT_VERSION }).where('id', '=', id);
    if (whileStatus) q = q.where('status', 'in', whileStatus);
    const res = await q.executeTakeFirst();
    if (Number(res.numUpdatedRows) === 0) return undefined;
    return this.get(id);
  }

  /**
   * Moves the job by `action` of its lifecycle (domain/jobs.ts), applying `patch` in the same
   * statement: only while its status is one `action` leaves from and, when given, is `expected.status`
   * and the job is held by `expected.workerId`. Undefined when it was not.
   */
  async transition(
    id: string,
    action: JobAction,
    patch: JobPatch = {},
    expected: { status?: JobStatus; workerId?: string } = {},
  ): Promise<JobRecord | undefined> {
    const { from, to } = transitionOf(action);
    const fromStatuses = expected.status === undefined ? from : from.filter((status) => status === expected.status);
    if (fromStatuses.length === 0) return undefined;
    let q = this.db.updateTable('jobs').set({ ...toUpdate(patch), status: to, ...NEXT_VERSION }).where('id', '=', id).where('status', 'in', fromStatuses);
    if (expected.workerId !== undefined) q = q.where('worker_id', '=', expected.workerId);
    const res = await q.executeTakeFirst();
    if (Number(res.numUpdatedRows) === 0) return undefined;
    return this.get(id);
  }

  /** How many jobs the organization created at or after `since` (Unix seconds), and the first one's time. */
  async createdSince(organizationId: string, since: number): Promise<{ count: number; first: number | null }> {
    const row = await this.db
      .selectFrom('jobs')
      .select((eb) => [eb.fn.countAll<number>().as('count'), eb.fn.min('created_at').as('first')])
      .where('organization_id', '=', organizationId)
      .where('created_at', '>=', since)
      .executeTakeFirstOrThrow();
    return { count: Number(row.count), first: row.first === null ? null : Number(row.first) };
  }

  /** How many jobs there are in each status (statuses without jobs are absent). */
  async countByStatus(): Promise<Record<string, number>> {
    const rows = await this.db.selectFrom('jobs').select((eb) => ['status', eb.fn.countAll<number>().as('n')]).groupBy('status').execute();
    return Object.fromEntries(rows.map((r) => [r.status, Number(r.n)]));
  }

  /** Every job in `status`, oldest first (recovery after a restart). */
  async listByStatus(status: JobStatus): Promise<JobRecord[]> {
    const rows = await this.db.selectFrom('jobs').selectAll().where('status', '=', status).orderBy('seq').execute();
    return rows.map(fromRow);
  }

  // ---- queue ----------------------------------------------------------------------------

  /** Queued jobs a worker with `memoryBytes` can hold (any, when undefined), oldest first. */
  async claimCandidates(limit: number, memoryBytes?: number): Promise<JobRecord[]> {
    const rows = await this.db
      .selectFrom('jobs')
      .selectAll()
      .where('status', '=', 'queued')
      .where((eb) => fitsIn(eb, memoryBytes))
      .orderBy('seq')
      .limit(limit)
      .execute();
    return rows.map(fromRow);
  }

  /** Queued jobs needing more than `memoryBytes`, oldest first: no worker that size can take them. */
  async queuedNeedingMoreThan(memoryBytes: number): Promise<JobRecord[]> {
    const rows = await this.db
      .selectFrom('jobs')
      .selectAll()
      .where('status', '=', 'queued')
      .where('memory_required_bytes', '>', memoryBytes)
      .orderBy('seq')
      .execute();
    return rows.map(fromRow);
  }

  /** Running jobs per worker id (workers running none are absent). */
  async countRunningByWorker(): Promise<Record<string, number>> {
    const rows = await this.db
      .selectFrom('jobs')
      .select((eb) => ['worker_id', eb.fn.countAll<number>().as('n')])
      .where('status', '=', 'running')
      .where('worker_id', 'is not', null)
      .groupBy('worker_id')
      .execute();
    return Object.fromEntries(rows.map((r) => [r.worker_id!, Number(r.n)]));
  }

  /** Running jobs whose worker stopped renewing the lease before `nowMs`. */
  async expiredLeases(nowMs: number): Promise<JobRecord[]> {
    const rows = await this.db
      .selectFrom('jobs')
      .selectAll()
      .where('status', '=', 'running')
      .where('lease_expires_at_ms', '<', nowMs)
      .orderBy('seq')
      .execute();
    return rows.map(fromRow);
  }

  /** Puts a running job whose lease expired before `nowMs` back in the queue (`requeue`); false if it was not. */
  async requeueExpired(id: string, nowMs: number): Promise<boolean> {
    const requeue = transitionOf('requeue');
    const res = await this.db
      .updateTable('jobs')
      .set({ status: requeue.to, worker_id: null, lease_expires_at_ms: null, estimated_finish: null, ...NEXT_VERSION })
      .where('id', '=', id)
      .where('status', 'in', requeue.from)
      .where('lease_expires_at_ms', '<', nowMs)
      .executeTakeFirst();
    return Number(res.numUpdatedRows) > 0;
  }

  /**
   * Takes queued job `id` for `workerId` (`start`): only if it is still queued, fits the worker's
   * `memoryBytes` (when given) and its organization has fewer than `maxRunningPerOrg` jobs running
   * under a live lease.
   */
  async tryClaim(
    id: string,
    workerId: string,
    options: { nowMs: number; leaseMs: number; maxRunningPerOrg: number; memoryBytes?: number },
  ): Promise<JobRecord | undefined> {
    const { nowMs, leaseMs, maxRunningPerOrg, memoryBytes } = options;
    const start = transitionOf('start');
    const claim = async (db: Db) => {
      const res = await db
        .updateTable('jobs')
        .set((eb) => ({
          status: start.to,
          worker_id: workerId,
          lease_expires_at_ms: nowMs + leaseMs,
          attempts: eb('attempts', '+', 1),
          ...NEXT_VERSION,
        }))
        .where('id', '=', id)
        .where('status', 'in', start.from)
        .where((eb) => fitsIn(eb, memoryBytes))
        .where(
          (eb) =>
            eb
              .selectFrom('jobs as other')
              .select((o) => o.fn.countAll<number>().as('n'))
              .whereRef('other.organization_id', '=', 'jobs.organization_id')
              .where('other.status', '=', 'running')
              .where('other.lease_expires_at_ms', '>=', nowMs),
          '<',
          maxRunningPerOrg,
        )
        .executeTakeFirst();
      return Number(res.numUpdatedRows) > 0;
    };
    // SQLite runs one write at a time, so the single statement is enough. PostgreSQL runs
    // concurrent claims side by side, each counting the organization's running jobs without seeing
    // the others' claims: there, claims for one organization take turns.
    const claimed =
      this.dialect === 'sqlite'
        ? await claim(this.db)
        : await inTransaction(this.db, async (tx) => {
            const job = await tx.selectFrom('jobs').select('organization_id').where('id', '=', id).executeTakeFirst();
            if (!job) return false;
            await advisoryOrganizationLock(tx, job.organization_id, 'claim');
            return claim(tx);
          });
    return claimed ? this.get(id) : undefined;
  }

  /**
   * Inside a transaction: until it ends, other transactions taking the same lock for the same
   * organization wait. PostgreSQL: a transaction-scoped advisory lock. SQLite needs none: it runs one
   * write transaction at a time (callers write before they read).
   */
  async lockOrganization(organizationId: string, purpose: 'claim' | 'create'): Promise<void> {
    if (this.dialect === 'postgres') await advisoryOrganizationLock(this.db, organizationId, purpose);
  }

  /** Extends the lease; false when the job is no longer this worker's running job. */
  async renewLease(id: string, workerId: string, leaseUntilMs: number): Promise<boolean> {
    const res = await this.db
      .updateTable('jobs')
      .set({ lease_expires_at_ms: leaseUntilMs, ...NEXT_VERSION })
      .where('id', '=', id)
      .where('worker_id', '=', workerId)
      .where('status', '=', 'running')
      .executeTakeFirst();
    return Number(res.numUpdatedRows) > 0;
  }

  /** Applies `patch` (no status: see `transition`) only while `workerId` still holds the running job. */
  async updateOwned(id: string, workerId: string, patch: JobPatch): Promise<JobRecord | undefined> {
    const res = await this.db
      .updateTable('jobs')
      .set({ ...toUpdate(patch), ...NEXT_VERSION })
      .where('id', '=', id)
      .where('worker_id', '=', workerId)
      .where('status', '=', 'running')
      .executeTakeFirst();
    if (Number(res.numUpdatedRows) === 0) return undefined;
    return this.get(id);
  }

  async countRunning(organizationId: string, nowMs: number): Promise<number> {
    const row = await this.db
      .selectFrom('jobs')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('organization_id', '=', organizationId)
      .where('status', '=', 'running')
      .where('lease_expires_at_ms', '>=', nowMs)
      .executeTakeFirstOrThrow();
    return Number(row.n);
  }
}
