// The JobRunner that trains for real: turns a stored job into the engine's TrainSpec, maps the
// engine's events onto job events, checkpoints and the lease, and writes the result CSV.
// Plugging the engine in is `new Worker({ runJob: createTrainRunner(train, { modelsDir }), … })`.
import { Readable } from 'node:stream';
import type { LoraSettings, StepMetrics, ResolvedHyperparameters, TrainEvent, TrainOptions, TrainResult, TrainSpec } from '../engine/contract.ts';
import { jobEvents } from '../domain/jobs.ts';
import { blobKeys, type JobRecord } from '../store/index.ts';
import { findBaseModel } from '../store/base-models.ts';
import type { JobRunContext, JobRunner } from './worker.ts';

export type TrainFunction = (spec: TrainSpec, options: TrainOptions) => Promise<TrainResult>;

export const DEFAULT_LORA: LoraSettings = { rank: 8, alpha: 16, dropout: 0, targetModules: ['q_proj', 'v_proj'] };

export interface TrainRunnerOptions {
  modelsDir: string;
  /** LoRA settings, or null for full fine-tuning. */
  lora?: LoraSettings | null;
  checkpointEverySteps?: number;
}

class JobInputError extends Error {
  constructor(message: string, readonly code: string, readonly param: string | null) {
    super(message);
  }
}

async function baseModelDir(job: JobRecord, ctx: JobRunContext, modelsDir: string): Promise<string> {
  const base = await findBaseModel(modelsDir, job.model);
  if (base) return base.dir;
  const tuned = await ctx.store.models.get(job.model, job.organization_id);
  if (tuned?.dir) return tuned.dir;
  throw new JobInputError(`Model ${job.model} is no longer available.`, 'model_not_available', 'model');
}

export function trainSpecFor(job: JobRecord, ctx: JobRunContext, modelDir: string, options: TrainRunnerOptions): TrainSpec {
  const hp = job.method[job.method.type]?.hyperparameters as Record<string, number>;
  const hyperparameters: ResolvedHyperparameters = {
    n_epochs: hp.n_epochs,
    batch_size: hp.batch_size,
    learning_rate_multiplier: hp.learning_rate_multiplier,
    ...(hp.beta !== undefined ? { beta: hp.beta } : {}),
  };
  return {
    baseModelDir: modelDir,
    method: job.method.type as TrainSpec['method'],
    trainingFile: ctx.store.blobs.localPath(blobKeys.file(job.training_file)),
    ...(job.validation_file ? { validationFile: ctx.store.blobs.localPath(blobKeys.file(job.validation_file)) } : {}),
    hyperparameters,
    seed: job.seed,
    lora: options.lora === undefined ? DEFAULT_LORA : options.lora,
    outputDir: ctx.workDir,
    ...(job.resume_point ? { resumeFrom: job.resume_point } : {}),
    ...(options.checkpointEverySteps !== undefined ? { checkpointEverySteps: options.checkpointEverySteps } : {}),
  };
}

const CHECKPOINT_METRICS = ['step', 'train_loss', 'train_mean_token_accuracy', 'valid_loss', 'valid_mean_token_accuracy', 'full_valid_loss', 'full_valid_mean_token_accuracy'] as const;

/** The metrics a checkpoint object shows (OpenAI's keys; no total_steps). */
function checkpointMetrics(m: StepMetrics): Record<string, number> {
  const out: Record<string, number> = {};
  for (const key of CHECKPOINT_METRICS) if (typeof m[key] === 'number') out[key] = m[key] as number;
  return out;
}

const CSV_COLUMNS = ['step', 'train_loss', 'train_accuracy', 'valid_loss', 'valid_mean_token_accuracy'] as const;

/** OpenAI's result file: one row per step, empty cells where a step had no validation. */
async function resultCsv(job: JobRecord, ctx: JobRunContext): Promise<string> {
  const rows = new Map<number, Record<string, unknown>>();
  let after: string | undefined;
  for (;;) {
    const page = await ctx.store.events.list(job.id, { after, limit: 1000, order: 'asc' });
    for (const e of page.data) if (e.type === 'metrics' && e.data) rows.set(Number(e.data.step), e.data);
    if (!page.hasMore) break;
    after = page.data[page.data.length - 1].id;
  }
  const cell = (v: unknown) => (typeof v === 'number' ? String(v) : '');
  const lines = [CSV_COLUMNS.join(',')];
  for (const step of [...rows.keys()].sort((a, b) => a - b)) {
    const d = rows.get(step)!;
    lines.push([step, cell(d.train_loss), cell(d.train_mean_token_accuracy), cell(d.valid_loss), cell(d.valid_mean_token_accuracy)].join(','));
  }
  return lines.join('\n') + '\n';
}

export function createTrainRunner(train: TrainFunction, options: TrainRunnerOptions): JobRunner {
  return async (job, ctx) => {
    const spec = trainSpecFor(job, ctx, await baseModelDir(job, ctx, options.modelsDir), options);
    const onEvent = async (event: TrainEvent) => {
      switch (event.type) {
        case 'message':
          await ctx.event({ level: event.level, type: 'message', message: event.message, data: {} });
          break;
        case 'metrics': {
          await ctx.event(jobEvents.metrics(event.metrics));
          const left = event.metrics.total_steps - event.metrics.step;
          await ctx.setEstimatedFinish(Math.ceil(Date.now() / 1000 + left * event.stepSeconds));
          break;
        }
        case 'checkpoint':
          await ctx.checkpoint(event.step, checkpointMetrics(event.metrics), event.dir);
          break;
        case 'resume_point':
          await ctx.setResumePoint(event.dir);
          break;
      }
    };
    const result = await train(spec, { signal: ctx.signal, onEvent });
    const csvId = await ctx.createResultFile('step_metrics.csv', Readable.from([Buffer.from(await resultCsv(job, ctx))]));
    return { trainedTokens: result.trainedTokens, resultFiles: [csvId], modelDir: result.finalDir };
  };
}
