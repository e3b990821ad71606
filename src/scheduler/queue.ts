// The durable job queue, on top of the jobs table: a worker claims the oldest queued job under a
// lease and keeps renewing it; a job whose lease expired (its worker died) goes back to the queue.
// Each organization has at most `maxRunningPerOrg` jobs running at once, and a worker claims only
// jobs that fit its memory (a job's memory_required_bytes); one no live worker can hold stays queued,
// with an event saying so.
import { jobEvents } from '../domain/jobs.ts';
import type { JobRecord, Store } from '../store/index.ts';
import { appendEvent } from './job-events.ts';

export interface ClaimOptions {
  leaseMs: number;
  maxRunningPerOrg: number;
  /** The claiming worker's memory: jobs needing more are left for others (undefined: any job). */
  memoryBytes?: number;
  /** Injectable clock (Unix milliseconds, the lease's unit) for tests. */
  nowMs?: number;
}

/** Returns running jobs with an expired lease to the queue, with a warning event each. */
export async function requeueExpiredJobs(store: Store, nowMs = Date.now()): Promise<string[]> {
  const requeued: string[] = [];
  for (const job of await store.jobs.expiredLeases(nowMs)) {
    const done = await store.transaction(async (tx) => {
      if (!(await tx.jobs.requeueExpired(job.id, nowMs))) return false;
      await appendEvent(tx, job.id, jobEvents.requeued());
      return true;
    });
    if (done) requeued.push(job.id);
  }
  return requeued;
}

/**
 * Claims the oldest queued job whose organization is under its running limit, atomically
 * (a conditional update: two workers never get the same job). Undefined when there is none.
 */
export async function claimNextJob(store: Store, workerId: string, options: ClaimOptions): Promise<JobRecord | undefined> {
  const nowMs = options.nowMs ?? Date.now();
  await requeueExpiredJobs(store, nowMs);
  const skippedOrgs = new Set<string>();
  for (const candidate of await store.jobs.claimCandidates(100, options.memoryBytes)) {
    if (skippedOrgs.has(candidate.organization_id)) continue;
    // A first claim starts the job: `running` and "Fine-tuning job started" land together.
    const claimed = await store.transaction(async (tx) => {
      const job = await tx.jobs.tryClaim(candidate.id, workerId, { nowMs, leaseMs: options.leaseMs, maxRunningPerOrg: options.maxRunningPerOrg, memoryBytes: options.memoryBytes });
      if (job?.attempts === 1) await appendEvent(tx, job.id, jobEvents.started());
      return job;
    });
    if (claimed) return claimed;
    // Still queued: its organization is at its limit, so skip that organization's other jobs.
    // Otherwise another worker took it first: the next candidate may still be free.
    if ((await store.jobs.get(candidate.id))?.status === 'queued') skippedOrgs.add(candidate.organization_id);
  }
  if (options.memoryBytes !== undefined) await reportJobsNoWorkerCanHold(store, nowMs - options.leaseMs);
  return undefined;
}

/**
 * Tells each queued job that needs more memory than every worker heard from since `liveSinceMs`
 * has why it waits: one event, repeated only when the largest worker changes. Such a job is not
 * failed: a bigger worker may join (a training host added to the cluster) and take it.
 */
export async function reportJobsNoWorkerCanHold(store: Store, liveSinceMs: number): Promise<void> {
  const largest = await store.workers.largestLiveMemory(liveSinceMs);
  if (largest === null) return;
  for (const job of await store.jobs.queuedNeedingMoreThan(largest)) {
    const event = jobEvents.waitingForMemory(job.memory_required_bytes!, largest);
    await store.transaction(async (tx) => {
      // Workers polling at once take turns here, so each sees the others' event.
      await tx.jobs.lockOrganization(job.organization_id, 'claim');
      const [last] = (await tx.events.list(job.id, { limit: 1, order: 'desc' })).data;
      if (last?.message !== event.message) await appendEvent(tx, job.id, event);
    });
  }
}

/** Renews the lease; false when the job is no longer this worker's running job (cancelled, paused, lost). */
export async function renewLease(store: Store, jobId: string, workerId: string, leaseMs: number, nowMs = Date.now()): Promise<boolean> {
  return store.jobs.renewLease(jobId, workerId, nowMs + leaseMs);
}
