// A worker: claims queued jobs one at a time and runs each with an injected `JobRunner` (the
// training engine behind `createTrainRunner`, or a stand-in in tests). While a job runs, a timer
// renews its lease; when the renewal fails (the job was cancelled or paused through the API, or
// the lease was lost) the runner's AbortSignal fires. The worker records the outcome by an action of
// the job's lifecycle (domain/jobs.ts: succeed, fail, requeue); it never overwrites a status the API
// set meanwhile (every write is conditional on the job still running under this worker).
// While started, the worker is registered in the store with its capacity and heartbeats, so the queue
// knows which jobs some worker can hold and /metrics can show it; it claims only jobs that fit its memory.
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { jobEvents, type JobEventContent } from '../domain/jobs.ts';
import { checkpointModelName, fineTunedModelName, newId } from '../domain/naming.ts';
import { blobKeys, type CheckpointRecord, type JobRecord, type Store } from '../store/index.ts';
import { artifactKey, jobWorkDir, pushFolder, removeJobArtifacts, removeResumePoints, removeScratch } from './job-artifacts.ts';
import { nowSeconds } from '../domain/clock.ts';
import { availableMemoryBytes } from '../config.ts';
import { appendEvent } from './job-events.ts';
import { claimNextJob, renewLease } from './queue.ts';

export interface JobRunContext {
  /** Fires within about one heartbeat after the job is cancelled or paused, or the worker stops. */
  signal: AbortSignal;
  workerId: string;
  store: Store;
  /**
   * The local folder the engine writes this job's files into (job-artifacts.ts: the store's own
   * folder with the local store, scratch otherwise); checkpoint and setResumePoint push what they get.
   */
  workDir: string;
  /** DATA_DIR of this worker's host. */
  dataDir: string;
  /** The name the final model will have: ft:{base}:{org}:{suffix}:{short-id}. */
  fineTunedModel: string;
  /** Renews the lease now; false when the job is no longer ours (the signal then fires too). */
  heartbeat(): Promise<boolean>;
  event(content: JobEventContent): Promise<void>;
  /**
   * Records a usable checkpoint `…:ckpt-step-N` (its folder `dir` pushed to the store, a row with its
   * key, an event, pruning to 3: the newest, or RFT's best); returns the pruned ones, whose blobs the
   * caller removes (removeArtifact). The `final` one, at the job's last step, becomes the fine-tuned
   * model itself when the job succeeds: it is renamed `fineTunedModel` and announced then.
   */
  checkpoint(
    step: number,
    metrics: Record<string, number>,
    dir: string | null,
    options: { final: boolean },
  ): Promise<{ checkpoint: CheckpointRecord; pruned: CheckpointRecord[] }>;
  /**
   * Pushes the resume point in `dir` and records it as where to continue from after a pause or a lost
   * worker (on any host); its key, or null when the job is no longer ours.
   */
  setResumePoint(dir: string): Promise<string | null>;
  /** Removes a checkpoint's or resume point's blobs (and this host's scratch copy) by key. */
  removeArtifact(key: string): Promise<void>;
  setEstimatedFinish(unixSeconds: number | null): Promise<void>;
  /** Stores a file with purpose fine-tune-results for this job's organization; returns its id. */
  createResultFile(filename: string, content: Readable | AsyncIterable<Buffer>): Promise<string>;
}

export interface JobRunResult {
  trainedTokens: number;
  resultFiles?: string[];
}

export type JobRunner = (job: JobRecord, ctx: JobRunContext) => Promise<JobRunResult>;

export interface WorkerOptions {
  store: Store;
  runJob: JobRunner;
  dataDir: string;
  workerId?: string;
  leaseMs?: number;
  heartbeatMs?: number;
  pollMs?: number;
  maxRunningPerOrg?: number;
  /** What this worker can hold (config.worker); default: this machine's memory and CPUs. */
  capacity?: WorkerCapacity;
  /** Newest checkpoints kept per job (OpenAI keeps 3). */
  keepCheckpoints?: number;
  log?: (msg: string, extra?: Record<string, unknown>) => void;
  /** Called after this worker ended a job (webhooks); cancellations are reported where they happen (the API). */
  onJobFinished?: JobFinishedListener;
}

export interface WorkerCapacity {
  /** Most memory a job may use here: the worker claims only jobs needing at most this. */
  memoryBytes: number;
  cores: number;
}

/** A registered worker not heard from for this many leases is forgotten (killed without stopping). */
const FORGET_AFTER_LEASES = 10;

export type JobOutcomeStatus = 'succeeded' | 'failed' | 'cancelled';
export type JobFinishedListener = (jobId: string, status: JobOutcomeStatus) => void;

class StoppedError extends Error {}

export class Worker {
  readonly id: string;
  private readonly opts: Required<Omit<WorkerOptions, 'workerId' | 'log' | 'onJobFinished'>> & Pick<WorkerOptions, 'log' | 'onJobFinished'>;
  private loop: Promise<void> | null = null;
  private stopping = false;
  private wake: (() => void) | null = null;
  private readonly running = new Map<string, AbortController>();
  private registration: ReturnType<typeof setInterval> | null = null;
  /** The registration or heartbeat in flight, one at a time: stop() waits for it before deregistering. */
  private beat: Promise<void> = Promise.resolve();

  constructor(options: WorkerOptions) {
    this.id = options.workerId ?? `worker-${os.hostname()}-${process.pid}-${crypto.randomBytes(3).toString('hex')}`;
    this.opts = {
      leaseMs: 30_000,
      heartbeatMs: 2_000,
      pollMs: 1_000,
      maxRunningPerOrg: 2,
      capacity: { memoryBytes: availableMemoryBytes(), cores: os.availableParallelism() },
      keepCheckpoints: 3,
      ...options,
    };
  }

  /** What the worker's own status changes expect: the job still running, under this worker. */
  private get holding() {
    return { status: 'running' as const, workerId: this.id };
  }

  /** Polls the queue until `stop()`. */
  start(): void {
    if (this.loop) return;
    this.stopping = false;
    const beat = (what: () => Promise<void>) => {
      this.beat = this.beat.then(what).catch((err) => this.opts.log?.('worker registration failed', { err: String(err) }));
      return this.beat;
    };
    this.registration = setInterval(() => void beat(() => this.heartbeat()), this.opts.heartbeatMs);
    this.loop = (async () => {
      await beat(() => this.register());
      while (!this.stopping) {
        let ran = false;
        try {
          ran = await this.runOnce();
        } catch (err) {
          this.opts.log?.('worker loop error', { err: String(err) });
        }
        if (!ran && !this.stopping) await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, this.opts.pollMs);
          this.wake = () => { clearTimeout(t); resolve(); };
        });
        this.wake = null;
      }
    })();
  }

  /** Checks the queue now instead of at the next poll. */
  poke(): void {
    this.wake?.();
  }

  /** Stops polling; a running job is aborted and put back in the queue for another worker. */
  async stop(): Promise<void> {
    this.stopping = true;
    for (const controller of this.running.values()) controller.abort(new StoppedError('worker stopping'));
    this.wake?.();
    await this.loop;
    this.loop = null;
    clearInterval(this.registration!);
    this.registration = null;
    await this.beat;
    await this.opts.store.workers.remove(this.id).catch((err) => this.opts.log?.('worker deregistration failed', { err: String(err) }));
  }

  /** States this worker's capacity in the store, and forgets workers long silent. */
  private async register(): Promise<void> {
    const { store, capacity, leaseMs } = this.opts;
    const now = Date.now();
    await store.workers.removeSilentSince(now - FORGET_AFTER_LEASES * leaseMs);
    await store.workers.register({ id: this.id, host: os.hostname(), memory_bytes: capacity.memoryBytes, cores: capacity.cores }, now);
  }

  private async heartbeat(): Promise<void> {
    if (!(await this.opts.store.workers.heartbeat(this.id, Date.now()))) await this.register();
  }

  /** Claims and runs one job; false when the queue had nothing for this worker. */
  async runOnce(): Promise<boolean> {
    const { store, leaseMs, maxRunningPerOrg, capacity } = this.opts;
    const job = await claimNextJob(store, this.id, { leaseMs, maxRunningPerOrg, memoryBytes: capacity.memoryBytes });
    if (!job) return false;
    await this.run(job);
    return true;
  }

  private async run(job: JobRecord): Promise<void> {
    const { store, leaseMs, heartbeatMs, runJob } = this.opts;
    const controller = new AbortController();
    this.running.set(job.id, controller);
    const fineTunedModel = fineTunedModelName(job.model, job.organization_id, job.suffix, job.id);
    const workDir = jobWorkDir(store.blobs, this.opts.dataDir, job.id);
    await fs.mkdir(workDir, { recursive: true });

    const heartbeat = async () => {
      if (controller.signal.aborted) return false;
      const ours = await renewLease(store, job.id, this.id, leaseMs);
      if (!ours && !controller.signal.aborted) {
        // Paused through the API: the engine keeps the steps done so far in a resume point
        // before it stops (SaveResumePointReason). Cancelled or lost: it just stops.
        const now = await store.jobs.get(job.id);
        const paused = now?.status === 'paused' && now.worker_id === this.id;
        controller.abort(paused ? { saveResumePoint: true } : new Error('job is no longer running on this worker'));
      }
      return ours;
    };
    const timer = setInterval(() => void heartbeat().catch(() => undefined), heartbeatMs);

    const ctx: JobRunContext = {
      signal: controller.signal,
      workerId: this.id,
      store,
      workDir,
      dataDir: this.opts.dataDir,
      fineTunedModel,
      heartbeat,
      event: async (content) => {
        await appendEvent(store, job.id, content);
      },
      checkpoint: async (step, metrics, dir, { final }) => {
        // Pushed before its row exists: a row never names blobs that are not there.
        const key = dir && artifactKey(job.id, workDir, dir);
        if (dir && key) await pushFolder(store.blobs, dir, key);
        const checkpoint = await store.checkpoints.add({
          id: newId('ftckpt_'),
          job_id: job.id,
          organization_id: job.organization_id,
          created_at: nowSeconds(),
          fine_tuned_model_checkpoint: checkpointModelName(fineTunedModel, step),
          step_number: step,
          metrics,
          dir: key,
        });
        if (!final) await appendEvent(store, job.id, jobEvents.checkpointCreated(step, checkpoint.fine_tuned_model_checkpoint));
        const bestBy = job.method.type === 'reinforcement' ? 'valid_reward_mean' : undefined;
        // A job that asks for n_checkpoints keeps them all.
        const keep = job.method.training_options?.n_checkpoints ?? this.opts.keepCheckpoints;
        const pruned = await store.checkpoints.prune(job.id, keep, bestBy);
        return { checkpoint, pruned };
      },
      setResumePoint: async (dir) => {
        const key = artifactKey(job.id, workDir, dir);
        await pushFolder(store.blobs, dir, key);
        if (await store.jobs.updateOwned(job.id, this.id, { resume_point: key })) return key;
        // A job paused while this worker held it: the pause's own resume point is still ours to record.
        const now = await store.jobs.get(job.id);
        if (now?.status !== 'paused' || now.worker_id !== this.id) return null;
        return (await store.jobs.update(job.id, { resume_point: key }, ['paused'])) ? key : null;
      },
      removeArtifact: async (key) => {
        await store.blobs.removePrefix(key);
        await fs.rm(path.join(workDir, ...key.split('/').slice(2)), { recursive: true, force: true });
      },
      setEstimatedFinish: async (at) => {
        await store.jobs.updateOwned(job.id, this.id, { estimated_finish: at });
      },
      createResultFile: async (filename, content) => {
        const id = newId('file-');
        const { bytes } = await store.blobs.put(blobKeys.file(id), content);
        await store.files.insert({
          id,
          organization_id: job.organization_id,
          filename,
          purpose: 'fine-tune-results',
          bytes,
          created_at: nowSeconds(),
          expires_at: null,
          status: 'processed',
          status_details: null,
        });
        return id;
      },
    };

    try {
      const result = await runJob(job, ctx);
      if (controller.signal.aborted) return this.afterAbort(job, controller.signal);
      await this.succeed(job, fineTunedModel, result);
    } catch (err) {
      if (controller.signal.aborted) return this.afterAbort(job, controller.signal);
      await this.fail(job, err);
    } finally {
      clearInterval(timer);
      this.running.delete(job.id);
    }
  }

  /**
   * Cancel/pause: the API already set the status; a cancelled job's partial artifacts go now that
   * nothing writes them any more. Worker stop: hand the job back to the queue.
   */
  private async afterAbort(job: JobRecord, signal: AbortSignal) {
    const { store } = this.opts;
    if (signal.reason instanceof StoppedError) {
      await store.transaction(async (tx) => {
        const requeued = await tx.jobs.transition(job.id, 'requeue', { worker_id: null, lease_expires_at_ms: null, estimated_finish: null }, this.holding);
        if (requeued) await appendEvent(tx, job.id, jobEvents.requeued());
      });
      return;
    }
    if ((await store.jobs.get(job.id))?.status === 'cancelled') await removeJobArtifacts(store, this.opts.dataDir, job.id);
  }

  private async succeed(job: JobRecord, fineTunedModel: string, result: JobRunResult) {
    const { store } = this.opts;
    await removeScratch(this.opts.dataDir, job.id); // every file of the run is in the store by now
    // One transaction: whoever sees `succeeded` finds the model and the closing events too.
    const finished = await store.transaction(async (tx) => {
      const updated = await tx.jobs.transition(job.id, 'succeed', {
        fine_tuned_model: fineTunedModel,
        finished_at: nowSeconds(),
        trained_tokens: result.trainedTokens,
        result_files: result.resultFiles ?? [],
        estimated_finish: null,
        lease_expires_at_ms: null,
      }, this.holding);
      if (!updated) return false;
      // The newest checkpoint is the final step's (every method checkpoints its last step): it is the
      // model, so it takes the model's name. Renamed only now, so a job that fails never leaves a
      // checkpoint named like a model that does not exist.
      const [last] = (await tx.checkpoints.listForJob(job.id, { limit: 1 })).data;
      if (last) {
        await tx.checkpoints.rename(last.id, fineTunedModel);
        await appendEvent(tx, job.id, jobEvents.checkpointCreated(last.step_number, fineTunedModel));
      }
      await tx.models.add({
        id: fineTunedModel,
        organization_id: job.organization_id,
        created_at: nowSeconds(),
        job_id: job.id,
        base_model: job.model,
        dir: last?.dir ?? null,
      });
      await appendEvent(tx, job.id, jobEvents.newModel(fineTunedModel));
      await appendEvent(tx, job.id, jobEvents.succeeded());
      return true;
    });
    if (!finished) {
      // Cancelled at the very end: the API's status stands, and what the run wrote goes.
      if ((await store.jobs.get(job.id))?.status === 'cancelled') await removeJobArtifacts(store, this.opts.dataDir, job.id);
      return;
    }
    this.opts.onJobFinished?.(job.id, 'succeeded');
  }

  private async fail(job: JobRecord, err: unknown) {
    const { store } = this.opts;
    const e = err as { message?: string; code?: unknown; param?: unknown; neededBytes?: unknown };
    const error = {
      code: typeof e?.code === 'string' ? e.code : 'training_failed',
      message: e?.message ?? String(err),
      param: typeof e?.param === 'string' ? e.param : null,
    };
    // The engine's estimate: recorded, so that only a worker with that much claims the job again.
    const neededBytes = error.code === 'insufficient_memory' && typeof e?.neededBytes === 'number' ? e.neededBytes : undefined;
    if (neededBytes !== undefined && (await this.handOverForMemory(job, neededBytes))) return;
    this.opts.log?.('job failed', { job: job.id, error });
    const failed = await store.transaction(async (tx) => {
      const updated = await tx.jobs.transition(job.id, 'fail', { error, finished_at: nowSeconds(), estimated_finish: null, lease_expires_at_ms: null, memory_required_bytes: neededBytes }, this.holding);
      if (updated) await appendEvent(tx, job.id, jobEvents.failed(error.message));
      return updated;
    });
    if (!failed) return;
    await removeResumePoints(store, this.opts.dataDir, job.id);
    this.opts.onJobFinished?.(job.id, 'failed');
  }

  /**
   * A job the engine estimates to need more memory than this worker has goes back to the queue when
   * another live worker has enough (it then claims it); false when none has, and the job fails.
   */
  private async handOverForMemory(job: JobRecord, neededBytes: number): Promise<boolean> {
    const { store, capacity, leaseMs } = this.opts;
    if (neededBytes <= capacity.memoryBytes) return false;
    const largest = await store.workers.largestLiveMemory(Date.now() - leaseMs, this.id);
    if (largest === null || largest < neededBytes) return false;
    return store.transaction(async (tx) => {
      const patch = { worker_id: null, lease_expires_at_ms: null, estimated_finish: null, memory_required_bytes: neededBytes };
      const requeued = await tx.jobs.transition(job.id, 'requeue', patch, this.holding);
      if (requeued) await appendEvent(tx, job.id, jobEvents.requeuedForMemory(neededBytes, capacity.memoryBytes));
      return Boolean(requeued);
    });
  }
}
