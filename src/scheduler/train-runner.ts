// The JobRunner that trains for real: turns a stored job into the engine's TrainSpec, maps the
// engine's events onto job events, checkpoints and the lease, and writes the result CSV.
// Plugging the engine in is `new Worker({ runJob: createTrainRunner(train, { modelsDir }), … })`;
// production passes `trainInChildProcess` (train-process.ts) so training never blocks the server.
//
// A job can run more than once: after a pause, or when its worker died and the lease expired. The
// engine then continues from the job's last resume point and re-runs the steps after it, with the
// same losses. What those steps already recorded (metrics events, checkpoints, the engine's own
// messages) is recorded once only: the runner skips what the job already has, so the event list of
// a job that was paused or recovered reads exactly like that of an uninterrupted one.
import path from 'node:path';
import { Readable } from 'node:stream';
import { JobError } from './job-error.ts';
import {
  EngineError, wantsResumePoint,
  type EngineErrorCode, type StepMetrics, type ResolvedHyperparameters, type TrainEvent, type TrainOptions, type TrainResult, type TrainSpec,
} from '../engine/index.ts';
import { jobEvents } from '../domain/jobs.ts';
import { BUILT_IN_TRAINING_OPTIONS, loraModuleNames, type TrainingOptions } from '../domain/training-options.ts';
import type { WandbJobLog, WandbLogger } from '../integrations/wandb.ts';
import { ModelCatalogue } from '../models/catalogue.ts';
import { FsBlobStore } from '../store/blobs.ts';
import { blobKeys, type BlobLease, type JobRecord } from '../store/index.ts';
import { jobStart } from './job-start.ts';
import type { JobRunContext, JobRunner, JobRunResult } from './worker.ts';
import type { CallModel, PythonSandboxOptions } from '../graders/index.ts';
import { jobGrader } from './rft-grading.ts';

export type TrainFunction = (spec: TrainSpec, options: TrainOptions) => Promise<TrainResult>;

export interface TrainRunnerOptions {
  modelsDir: string;
  /** A resumable state every N optimizer steps (pause and crash recovery continue from the last one). */
  checkpointEverySteps?: number;
  /** Sends metrics to Weights & Biases for jobs whose `integrations` ask for it. */
  wandb?: WandbLogger;
  /** Reinforcement: replaces our own inference for score_model/label_model graders (tests). */
  graderCallModel?: (organization: string) => CallModel;
  /** Reinforcement: the python grader sandbox (default: limits from PYTHON_GRADER_* env). */
  graderPython?: PythonSandboxOptions;
  /** Reinforcement: most tokens per sampled completion (default: the engine's). */
  rftMaxCompletionTokens?: number;
  /** Most bytes a job's training may use (TRAIN_MEMORY_LIMIT_MB); jobs estimated over it fail with insufficient_memory. */
  memoryLimitBytes?: number;
  /** Per-layer activation recomputation (TRAIN_RECOMPUTE; default auto). */
  recompute?: 'on' | 'off' | 'auto';
}

const loraSpec = (o: Pick<TrainingOptions, 'lora' | 'lora_r' | 'lora_alpha' | 'lora_dropout' | 'lora_trainable_modules'>): TrainSpec['lora'] =>
  o.lora ? { rank: o.lora_r!, alpha: o.lora_alpha!, dropout: o.lora_dropout!, targetModules: loraModuleNames(o.lora_trainable_modules!) } : null;

/**
 * A job's training options as the engine takes them. A job made before they existed trains as it
 * would have then (the built-in LoRA, the engine's own defaults), so the spec, and the fingerprint
 * of a resume point it wrote, stay the same.
 */
function trainingOptionsSpec(job: JobRecord): Pick<TrainSpec, 'lora' | 'trainOnInputs' | 'contextLength' | 'schedule' | 'optimizer' | 'nCheckpoints' | 'nEvals' | 'earlyStoppingPatience'> {
  const o: TrainingOptions | undefined = job.method.training_options;
  if (!o) return { lora: loraSpec(BUILT_IN_TRAINING_OPTIONS) };
  return {
    lora: loraSpec(o),
    ...(o.train_on_inputs ? { trainOnInputs: true } : {}),
    ...(o.context_length !== null ? { contextLength: o.context_length } : {}),
    schedule: { warmupRatio: o.warmup_ratio, type: o.lr_scheduler.lr_scheduler_type, minLrRatio: o.lr_scheduler.lr_scheduler_args.min_lr_ratio },
    optimizer: { weightDecay: o.weight_decay, maxGradNorm: o.max_grad_norm },
    ...(o.n_checkpoints ? { nCheckpoints: o.n_checkpoints } : {}),
    ...(o.n_evals ? { nEvals: o.n_evals } : {}),
    ...(o.early_stopping_patience ? { earlyStoppingPatience: o.early_stopping_patience } : {}),
  };
}

/**
 * What a run reads, as folders and files on this host (pulled through the blob cache, where they
 * are not here already), and the blob keys they come from: the resume point's fingerprint takes
 * the keys, so a worker on another host, with the same inputs in other folders, can continue it.
 */
export interface TrainInputs {
  baseModelDir: string;
  initialAdapterDir: string | null;
  trainingFile: string;
  validationFile: string | null;
  resumeFrom: string | null;
  names: NonNullable<TrainSpec['inputNames']>;
}

async function trainInputs(job: JobRecord, ctx: JobRunContext, modelsDir: string, lease: BlobLease): Promise<TrainInputs> {
  const catalogue = new ModelCatalogue(ctx.store, modelsDir);
  const start = await jobStart(job, ctx.store, catalogue);
  const training = blobKeys.file(job.training_file);
  const validation = job.validation_file ? blobKeys.file(job.validation_file) : null;
  return {
    baseModelDir: await catalogue.localDir(start.weights, lease),
    initialAdapterDir: start.adapter && (await catalogue.localDir(start.adapter, lease)),
    trainingFile: await lease.file(training),
    validationFile: validation && (await lease.file(validation)),
    resumeFrom: job.resume_point && (await lease.dir(job.resume_point)),
    names: { baseModel: start.weights, initialAdapter: start.adapter, trainingFile: training, validationFile: validation },
  };
}

export function trainSpecFor(job: JobRecord, ctx: Pick<JobRunContext, 'workDir'>, inputs: TrainInputs, options: TrainRunnerOptions): TrainSpec {
  const hp = job.method[job.method.type]?.hyperparameters as Record<string, number>;
  const hyperparameters: ResolvedHyperparameters = {
    n_epochs: hp.n_epochs,
    batch_size: hp.batch_size,
    learning_rate_multiplier: hp.learning_rate_multiplier,
    ...(hp.beta !== undefined ? { beta: hp.beta } : {}),
  };
  const rft = job.method.type === 'reinforcement' ? (job.method.reinforcement as { grader?: unknown } | undefined) : undefined;
  if (rft) {
    const h = hp as unknown as Record<string, unknown>;
    for (const key of ['compute_multiplier', 'eval_interval', 'eval_samples'] as const) if (typeof h[key] === 'number') hyperparameters[key] = h[key] as number;
    if (typeof h.reasoning_effort === 'string') hyperparameters.reasoning_effort = h.reasoning_effort;
  }
  return {
    baseModelDir: inputs.baseModelDir,
    ...(inputs.initialAdapterDir ? { initialAdapterDir: inputs.initialAdapterDir } : {}),
    inputNames: inputs.names,
    method: job.method.type as TrainSpec['method'],
    trainingFile: inputs.trainingFile,
    ...(inputs.validationFile ? { validationFile: inputs.validationFile } : {}),
    hyperparameters,
    seed: job.seed,
    ...trainingOptionsSpec(job),
    outputDir: ctx.workDir,
    ...(inputs.resumeFrom ? { resumeFrom: inputs.resumeFrom } : {}),
    ...(options.checkpointEverySteps !== undefined ? { checkpointEverySteps: options.checkpointEverySteps } : {}),
    ...(options.memoryLimitBytes ? { memoryLimitBytes: options.memoryLimitBytes } : {}),
    ...(options.recompute ? { recompute: options.recompute } : {}),
    ...(rft ? { grader: rft.grader, ...(options.rftMaxCompletionTokens ? { maxCompletionTokens: options.rftMaxCompletionTokens } : {}) } : {}),
  };
}

const CHECKPOINT_METRICS = [
  'step', 'train_loss', 'train_mean_token_accuracy', 'valid_loss', 'valid_mean_token_accuracy', 'full_valid_loss', 'full_valid_mean_token_accuracy',
  'train_reward_mean', 'valid_reward_mean', // reinforcement
] as const;

/** The metrics a checkpoint object shows (OpenAI's keys; no total_steps). */
function checkpointMetrics(m: StepMetrics): Record<string, number> {
  const out: Record<string, number> = {};
  for (const key of CHECKPOINT_METRICS) if (typeof m[key] === 'number') out[key] = m[key] as number;
  return out;
}

const CSV_COLUMNS = ['step', 'train_loss', 'train_accuracy', 'valid_loss', 'valid_mean_token_accuracy'] as const;
/** Reinforcement jobs' result CSV: OpenAI's five columns, then these. */
const RFT_CSV_COLUMNS = ['train_reward_mean', 'train_reward_std', 'valid_reward_mean', 'kl'] as const;
/** DPO jobs' result CSV: OpenAI's five columns, then these (rewards on the step's pairs and the validation window). */
const DPO_CSV_COLUMNS = [
  'train_rewards_chosen', 'train_rewards_rejected', 'train_reward_accuracy', 'train_reward_margin',
  'valid_rewards_chosen', 'valid_rewards_rejected', 'valid_reward_accuracy', 'valid_reward_margin',
] as const;

/** Every event of a job, oldest first. */
async function allEvents(job: JobRecord, ctx: JobRunContext) {
  const events = [];
  let after: string | undefined;
  for (;;) {
    const page = await ctx.store.events.list(job.id, { after, limit: 1000, order: 'asc' });
    events.push(...page.data);
    if (!page.hasMore) break;
    after = page.data[page.data.length - 1].id;
  }
  return events;
}

/** OpenAI's result file: one row per step, empty cells where a step had no validation. */
async function resultCsv(job: JobRecord, ctx: JobRunContext): Promise<string> {
  const rows = new Map<number, Record<string, unknown>>();
  for (const e of await allEvents(job, ctx)) if (e.type === 'metrics' && e.data) rows.set(Number(e.data.step), e.data);
  const cell = (v: unknown) => (typeof v === 'number' ? String(v) : '');
  const extra = job.method.type === 'dpo' ? DPO_CSV_COLUMNS : job.method.type === 'reinforcement' ? RFT_CSV_COLUMNS : [];
  const lines = [[...CSV_COLUMNS, ...extra].join(',')];
  for (const step of [...rows.keys()].sort((a, b) => a - b)) {
    const d = rows.get(step)!;
    lines.push([step, cell(d.train_loss), cell(d.train_mean_token_accuracy), cell(d.valid_loss), cell(d.valid_mean_token_accuracy), ...extra.map((k) => cell(d[k]))].join(','));
  }
  return lines.join('\n') + '\n';
}

/** What an earlier run of this job already recorded. */
async function alreadyRecorded(job: JobRecord, ctx: JobRunContext) {
  const metricSteps = new Set<number>();
  const messages = new Set<string>();
  for (const e of await allEvents(job, ctx)) {
    if (e.type === 'metrics' && e.data) metricSteps.add(Number(e.data.step));
    else messages.add(e.message);
  }
  const checkpointSteps = new Set((await ctx.store.checkpoints.listForJob(job.id, { limit: 1000 })).data.map((c) => c.step_number));
  return { metricSteps, messages, checkpointSteps };
}

/** The job errors of the engine's codes (OpenAI's code and param); any other failure is training_failed. */
const JOB_ERRORS: Partial<Record<EngineErrorCode, { code: string; param: string | null }>> = {
  invalid_training_file: { code: 'invalid_training_file', param: 'training_file' },
  invalid_validation_file: { code: 'invalid_validation_file', param: 'validation_file' },
  insufficient_memory: { code: 'insufficient_memory', param: null },
};

/** A training failure as the job's error; paths of the server's blob store become the job's file ids. */
function jobErrorOf(err: unknown, job: JobRecord, spec: TrainSpec): unknown {
  if (!(err instanceof Error) || err instanceof JobError || err.name === 'AbortError') return err;
  const replacements: [string | undefined, string][] = [
    [spec.validationFile, `validation file ${job.validation_file}`],
    [spec.trainingFile, `training file ${job.training_file}`],
    [spec.outputDir, '<job folder>'],
  ];
  let message = err.message;
  for (const [path, name] of replacements) if (path) message = message.split(path).join(name);
  const mapped = err instanceof EngineError ? JOB_ERRORS[err.code] : undefined;
  return new JobError(message, mapped?.code ?? 'training_failed', mapped?.param ?? null, err instanceof EngineError ? err.neededBytes : undefined);
}

export function createTrainRunner(train: TrainFunction, options: TrainRunnerOptions): JobRunner {
  const run = async (job: JobRecord, ctx: JobRunContext, lease: BlobLease): Promise<JobRunResult> => {
    const spec = trainSpecFor(job, ctx, await trainInputs(job, ctx, options.modelsDir, lease), options);
    const removeArtifact = (key: string) => ctx.removeArtifact(key).catch(() => undefined);
    const seen = await alreadyRecorded(job, ctx);
    const wandb: WandbJobLog | undefined = options.wandb?.startJob({
      id: job.id,
      model: job.model,
      integrations: job.integrations,
      config: { method: job.method.type, ...spec.hyperparameters, seed: job.seed, training_file: job.training_file, validation_file: job.validation_file, training_options: job.method.training_options ?? null },
    });

    // A resume point is recorded once what precedes it is: an epoch-end resume point comes just
    // before that epoch's checkpoint, and continuing from it must not skip the checkpoint.
    let pendingResume: { step: number; dir: string } | null = null;
    let currentResume = job.resume_point;
    const flushResume = async () => {
      if (!pendingResume) return;
      const { dir } = pendingResume;
      pendingResume = null;
      // Not ours any more (paused, cancelled): the recorded resume point stays, and so does its folder.
      const key = await ctx.setResumePoint(dir);
      if (!key) return;
      if (currentResume && currentResume !== key) await removeArtifact(currentResume);
      currentResume = key;
    };

    // estimated_finish from the measured wall time per step (steps, evaluations and checkpoints).
    let lastStepAt = 0;
    let secondsPerStep = 0;
    let lastEstimate: number | null = null;
    const estimate = async (m: StepMetrics, stepSeconds: number) => {
      const now = Date.now();
      const measured = lastStepAt ? (now - lastStepAt) / 1000 : stepSeconds;
      lastStepAt = now;
      secondsPerStep = secondsPerStep ? 0.8 * secondsPerStep + 0.2 * measured : measured;
      const at = Math.ceil(now / 1000 + (m.total_steps - m.step) * secondsPerStep);
      if (at !== lastEstimate) {
        lastEstimate = at;
        await ctx.setEstimatedFinish(at);
      }
    };

    const onEvent = async (event: TrainEvent) => {
      switch (event.type) {
        case 'message': {
          if (seen.messages.has(event.message)) break;
          seen.messages.add(event.message);
          await ctx.event({ level: event.level, type: 'message', message: event.message, data: {} });
          break;
        }
        case 'metrics': {
          await flushResume();
          const m = event.metrics;
          if (!Number.isFinite(m.train_loss)) {
            throw new JobError(
              `Training diverged: the training loss became ${m.train_loss} at step ${m.step}. Try a lower learning_rate_multiplier or check the training data.`,
              'training_diverged',
            );
          }
          if (!seen.metricSteps.has(m.step)) {
            seen.metricSteps.add(m.step);
            const content = jobEvents.metrics(m);
            // Method-specific metrics (DPO rewards, …) ride along after OpenAI's keys.
            for (const [key, value] of Object.entries(m)) if (typeof value === 'number' && !(key in content.data)) content.data[key] = value;
            await ctx.event(content);
            wandb?.log({ ...m });
          }
          await estimate(m, event.stepSeconds);
          break;
        }
        case 'checkpoint': {
          if (!seen.checkpointSteps.has(event.step)) {
            seen.checkpointSteps.add(event.step);
            // The run's last checkpoint is the final model: at the last step, or where early stopping ended it.
            const final = event.final ?? event.step === event.metrics.total_steps;
            const { checkpoint, pruned } = await ctx.checkpoint(event.step, checkpointMetrics(event.metrics), event.dir, { final });
            for (const old of pruned) if (old.dir && old.dir !== checkpoint.dir) await removeArtifact(old.dir);
          }
          if (pendingResume && pendingResume.step <= event.step) await flushResume();
          break;
        }
        case 'resume_point':
          await flushResume();
          pendingResume = { step: event.step, dir: event.dir };
          break;
      }
    };

    if (job.resume_point) {
      const step = /step-(\d+)$/.exec(job.resume_point)?.[1];
      await ctx.event({ level: 'info', type: 'message', message: `Training continues from its last resume point${step ? ` (step ${step})` : ''}`, data: {} });
    }
    const grading = spec.method === 'reinforcement'
      ? jobGrader(spec.grader, {
          modelsDir: options.modelsDir,
          store: ctx.store,
          organization: job.organization_id,
          callModel: options.graderCallModel?.(job.organization_id),
          python: options.graderPython,
          // Python grader code sees none of the server's data: DATA_DIR (= jobs/<id>/../..: every
          // organization's files, the database) and the blob folder the training file comes from.
          hidePaths: [ctx.dataDir, ...(ctx.store.blobs instanceof FsBlobStore ? [path.dirname(ctx.store.blobs.pathOf('files'))] : [])],
        })
      : null;
    let result: TrainResult;
    try {
      result = await train(spec, { signal: ctx.signal, onEvent, ...(grading ? { grade: grading.grade } : {}) });
    } catch (err) {
      await grading?.close();
      if (ctx.signal.aborted) {
        // Paused: the engine wrote a resume point at the step it reached; the job continues from there.
        if (wantsResumePoint(ctx.signal.reason)) await flushResume();
        // Cancelled: the W&B run ends too. Paused or handed back: it continues when the job does.
        const status = (await ctx.store.jobs.get(job.id))?.status;
        if (status === 'cancelled') await wandb?.finish('cancelled');
        throw err;
      }
      const described = jobErrorOf(err, job, spec);
      await wandb?.finish('failed', { error: (described as Error).message });
      throw described;
    }
    await grading?.close();
    // Resume points are only needed while the job can still continue.
    await removeArtifact(`${blobKeys.job(job.id)}/resume`);
    const csvId = await ctx.createResultFile('step_metrics.csv', Readable.from([Buffer.from(await resultCsv(job, ctx))]));
    await wandb?.finish('succeeded', { ...result.finalMetrics, trained_tokens: result.trainedTokens });
    return { trainedTokens: result.trainedTokens, resultFiles: [csvId] };
  };
  return async (job, ctx) => {
    // What the run reads stays on this host (out of the cache's eviction) while it trains.
    const lease = ctx.store.cache.lease();
    try {
      return await run(job, ctx, lease);
    } finally {
      lease.release();
    }
  };
}
