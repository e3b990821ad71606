// Appending job events and applying lifecycle actions to stored jobs on behalf of a request: the API
// (cancel/pause/resume) and file validation. Workers and the queue move the jobs they hold with the
// store's `transition`, `tryClaim` and `requeueExpired`, which take their statuses from the same
// lifecycle (domain/jobs.ts).
import { nextStatus, type JobAction, type JobEventContent } from '../domain/jobs.ts';
import { nowSeconds } from '../domain/clock.ts';
import { ApiError } from '../domain/errors.ts';
import { newId } from '../domain/naming.ts';
import type { JobPatch, JobRecord, Store } from '../store/index.ts';

export async function appendEvent(store: Store, jobId: string, content: JobEventContent) {
  return store.events.add({
    id: newId('ftevent-'),
    job_id: jobId,
    created_at: nowSeconds(),
    level: content.level,
    type: content.type,
    message: content.message,
    data: content.data,
  });
}

/**
 * Moves the job by `action` (a 400 saying why when illegal), applying `patch` in the same
 * conditional update and appending `event`. Retries when another writer changed the status first.
 */
export async function applyJobAction(
  store: Store,
  jobId: string,
  action: JobAction,
  options: { patch?: JobPatch | ((job: JobRecord) => JobPatch); event?: JobEventContent; organizationId?: string } = {},
): Promise<JobRecord> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const job = await store.jobs.get(jobId, options.organizationId);
    if (!job) throw new ApiError(404, `No such fine-tuning job: '${jobId}'`, 'invalid_request_error', 'fine_tuning_job_id', 'fine_tuning_job_not_found');
    nextStatus(job.status, action); // a 400 saying why, when `action` is not possible
    const patch = typeof options.patch === 'function' ? options.patch(job) : (options.patch ?? {});
    // The status and its event land together: whoever sees the new status finds the event too.
    const updated = await store.transaction(async (tx) => {
      const changed = await tx.jobs.transition(jobId, action, patch, { status: job.status });
      if (changed && options.event) await appendEvent(tx, jobId, options.event);
      return changed;
    });
    if (updated) return updated;
  }
  throw new ApiError(409, `Fine-tuning job ${jobId} changed concurrently; retry the request.`, 'invalid_request_error', null, 'conflict');
}
