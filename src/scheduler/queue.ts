// The durable job queue, on top of the jobs table: a worker claims the oldest queued job under a
// lease and keeps renewing it; a job whose lease expired (its worker died) goes back to the queue.
// Each organization has at most `maxRunningPerOrg` jobs running at once.
import { jobEvents } from '../domain/jobs.ts';
import type { JobRecord, Store } from '../store/index.ts';
import { appendEvent } from './job-events.ts';

export interface ClaimOptions {
  leaseMs: number;
  maxRunningPerOrg: number;
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
  for (const candidate of await store.jobs.claimCandidates(100)) {
    if (skippedOrgs.has(candidate.organization_id)) continue;
    // A first claim starts the job: `running` and "Fine-tuning job started" land together.
    const claimed = await store.transaction(async (tx) => {
      const job = await tx.jobs.tryClaim(candidate.id, workerId, { nowMs, leaseMs: options.leaseMs, maxRunningPerOrg: options.maxRunningPerOrg });
      if (job?.attempts === 1) await appendEvent(tx, job.id, jobEvents.started());
      return job;
    });
    if (claimed) return claimed;
    // Still queued: its organization is at its limit, so skip that organization's other jobs.
    // Otherwise another worker took it first: the next candidate may still be free.
    if ((await store.jobs.get(candidate.id))?.status === 'queued') skippedOrgs.add(candidate.organization_id);
  }
  return undefined;
}

/** Renews the lease; false when the job is no longer this worker's running job (cancelled, paused, lost). */
export async function renewLease(store: Store, jobId: string, workerId: string, leaseMs: number, nowMs = Date.now()): Promise<boolean> {
  return store.jobs.renewLease(jobId, workerId, nowMs + leaseMs);
}
