// The fine-tuning job state machine, and the events a job emits, worded as OpenAI's.
import { ApiError } from './errors.ts';
import type { StepMetrics } from '../engine/index.ts';
import type { JobStatus } from './job-status.ts';


/**
 * What can happen to a job. `validated`/`invalid` end file validation; `start`/`succeed`/`fail` come
 * from the worker; `cancel`/`pause`/`resume` from the user; `requeue` from recovery when a worker lost
 * its lease on a running job.
 */
export type JobAction = 'validated' | 'invalid' | 'start' | 'succeed' | 'fail' | 'cancel' | 'pause' | 'resume' | 'requeue';

const TRANSITIONS: Record<JobAction, Partial<Record<JobStatus, JobStatus>>> = {
  validated: { validating_files: 'queued' },
  invalid: { validating_files: 'failed' },
  start: { queued: 'running' },
  succeed: { running: 'succeeded' },
  // A job can fail at any point before it ends (e.g. the base model vanished while it was queued).
  fail: { validating_files: 'failed', queued: 'failed', running: 'failed', paused: 'failed' },
  cancel: { validating_files: 'cancelled', queued: 'cancelled', running: 'cancelled', paused: 'cancelled' },
  // As OpenAI: only a running job can be paused; a paused job resumes by going back to the queue.
  pause: { running: 'paused' },
  resume: { paused: 'queued' },
  requeue: { running: 'queued' },
};

/** How each action reads in an error message: "Cannot {verb} a job …; only … can be {done}". */
const ACTION_WORDS: Record<JobAction, { verb: string; done: string }> = {
  validated: { verb: 'mark as validated', done: 'marked as validated' },
  invalid: { verb: 'mark as invalid', done: 'marked as invalid' },
  start: { verb: 'start', done: 'started' },
  succeed: { verb: 'complete', done: 'completed' },
  fail: { verb: 'fail', done: 'failed' },
  cancel: { verb: 'cancel', done: 'cancelled' },
  pause: { verb: 'pause', done: 'paused' },
  resume: { verb: 'resume', done: 'resumed' },
  requeue: { verb: 'requeue', done: 'requeued' },
};

const ALREADY_ENDED: Partial<Record<JobStatus, string>> = {
  succeeded: 'the job has already completed',
  failed: 'the job has already failed',
  cancelled: 'the job has already been cancelled',
};

/** Whether `action` is legal for a job in `status`. */
export function canTransition(status: JobStatus, action: JobAction): boolean {
  return TRANSITIONS[action][status] !== undefined;
}

/** The statuses from which `action` is legal. */
export function statusesAllowing(action: JobAction): JobStatus[] {
  return Object.keys(TRANSITIONS[action]) as JobStatus[];
}

/**
 * Where `action` leads: every action has one target status. The store writes a status change only as
 * `where status in from … set status = to`, so no other change can reach the database.
 */
export function transitionOf(action: JobAction): { from: JobStatus[]; to: JobStatus } {
  const targets = new Set(Object.values(TRANSITIONS[action]));
  if (targets.size !== 1) throw new Error(`job action ${action} must lead to one status`);
  return { from: statusesAllowing(action), to: [...targets][0]! };
}

/**
 * The status after `action`, or a 400 `invalid_job_status` that says why the action is not possible
 * (e.g. "Cannot pause a job with status queued; only jobs with status running can be paused.").
 */
export function nextStatus(status: JobStatus, action: JobAction): JobStatus {
  const next = TRANSITIONS[action][status];
  if (next !== undefined) return next;
  const { verb, done } = ACTION_WORDS[action];
  const why = ALREADY_ENDED[status] ?? `only jobs with status ${statusesAllowing(action).join(', ')} can be ${done}`;
  throw new ApiError(400, `Cannot ${verb} a job with status ${status}; ${why}.`, 'invalid_request_error', null, 'invalid_job_status');
}

// ---------------------------------------------------------------------------------------------
// Events. Builders return the event's content; the store adds id, object and created_at.

export type JobEventLevel = 'info' | 'warn' | 'error';
export interface JobEventContent {
  level: JobEventLevel;
  type: 'message' | 'metrics';
  message: string;
  data: Record<string, unknown>;
}

const info = (message: string, data: Record<string, unknown> = {}): JobEventContent => ({ level: 'info', type: 'message', message, data });
const warn = (message: string): JobEventContent => ({ level: 'warn', type: 'message', message, data: {} });

/** Losses as OpenAI prints them in metrics events: 2 decimals. */
const formatLoss = (loss: number) => loss.toFixed(2);

const gigabytes = (bytes: number) => `${(bytes / 1e9).toFixed(2)} GB`;

export const jobEvents = {
  created: (jobId: string) => info(`Created fine-tuning job: ${jobId}`),

  validating: (trainingFileId: string, validationFileId?: string | null) =>
    info(
      validationFileId
        ? `Validating training file: ${trainingFileId} and validation file: ${validationFileId}`
        : `Validating training file: ${trainingFileId}`,
    ),

  /**
   * Something in a file that does not stop the job but may not be what the user meant, e.g.
   * "Training file file-…: 3 example(s) have no user message (first: example 7)". `warning` is one of
   * the datasets module's aggregated warnings (one per kind of problem, with its count).
   */
  datasetWarning: (role: 'training' | 'validation', fileId: string, warning: string) =>
    warn(`${role === 'training' ? 'Training' : 'Validation'} file ${fileId}: ${warning}`),

  validated: () => info('Files validated, moving job to queued state'),

  started: () => info('Fine-tuning job started'),

  /** "Step 12/300: training loss=0.53[, validation loss=…][, full validation loss=…]", data = the metrics. */
  metrics: (m: StepMetrics): JobEventContent => {
    let message = `Step ${m.step}/${m.total_steps}: training loss=${formatLoss(m.train_loss)}`;
    if (m.valid_loss !== undefined) message += `, validation loss=${formatLoss(m.valid_loss)}`;
    if (m.full_valid_loss !== undefined) message += `, full validation loss=${formatLoss(m.full_valid_loss)}`;
    const data: Record<string, unknown> = {
      step: m.step,
      total_steps: m.total_steps,
      train_loss: m.train_loss,
      train_mean_token_accuracy: m.train_mean_token_accuracy,
    };
    for (const key of ['valid_loss', 'valid_mean_token_accuracy', 'full_valid_loss', 'full_valid_mean_token_accuracy'] as const) {
      if (m[key] !== undefined) data[key] = m[key];
    }
    return { level: 'info', type: 'metrics', message, data };
  },

  checkpointCreated: (step: number, checkpointModel: string) =>
    info(`Checkpoint created at step ${step} with Snapshot ID: ${checkpointModel}`),

  newModel: (fineTunedModel: string) => info(`New fine-tuned model created: ${fineTunedModel}`),

  succeeded: () => info('The job has successfully completed'),

  failed: (reason: string): JobEventContent => ({ level: 'error', type: 'message', message: `The job failed: ${reason}`, data: {} }),

  cancelled: () => info('The job has been cancelled'),

  paused: () => info('The job has been paused'),

  resumed: () => info('The job has been resumed'),

  /** Recovery put a running job back in the queue because its worker stopped renewing its lease. */
  requeued: () => warn('The worker running the job stopped responding; the job is back in the queue'),

  /** The engine's estimate is over this worker's memory, and a live worker has enough: the job goes to it. */
  requeuedForMemory: (neededBytes: number, workerBytes: number) =>
    warn(`Training needs an estimated ${gigabytes(neededBytes)} of memory, more than this worker's ${gigabytes(workerBytes)}; the job is back in the queue for a worker with enough`),

  /** The queue: no live worker has the memory the job needs; it stays queued until one joins. */
  waitingForMemory: (neededBytes: number, largestBytes: number) =>
    warn(`The job needs ${gigabytes(neededBytes)} of memory and no worker has that much (the largest has ${gigabytes(largestBytes)}); it stays queued until one joins`),
};
