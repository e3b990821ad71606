// The job's plan, fixed before the first step: tokenized examples, the row length, which examples
// each optimizer step takes (a seeded shuffle per epoch), and the learning-rate schedule. The
// schedule and the row length are shared with DPO and reinforcement (trainingSchedule, rowLength).
// Everything is a pure function of the spec, which is what makes resume exact.

import type { LearningRateSchedule, TrainSpec } from '../contract.ts';
import type { ModelConfig } from '../models/config.ts';
import { ChatFormatter, type TokenizedExample } from '../data/chat-format.ts';
import { loadTokenizer } from '../data/tokenizer.ts';
import { tokenizeDataset, type TokenizedDataset } from '../data/dataset.ts';
import { buildBatch, chunk, epochOrder, packRows, toBigInt64 } from '../data/batching.ts';
import type { MicroBatch } from './runner.ts';
import { EngineError, readingDataset } from '../errors.ts';

/** Longest context the engine trains at (longer examples are truncated). */
export const MAX_CONTEXT = 2048;
/** Tokens per micro-batch: bounds activation memory; a step accumulates as many as it needs. */
export const TOKENS_PER_MICRO_BATCH = 2048;

/** The longest context a job trains `cfg` at (longer examples are truncated): the job's, or the model's up to MAX_CONTEXT. */
export function trainingContext(spec: TrainSpec, cfg: ModelConfig): number {
  if (spec.contextLength === undefined) return Math.min(cfg.maxPositionEmbeddings, MAX_CONTEXT);
  if (spec.contextLength > cfg.maxPositionEmbeddings) {
    throw new Error(`context length ${spec.contextLength} is beyond the model's ${cfg.maxPositionEmbeddings} positions`);
  }
  return spec.contextLength;
}

const DEFAULT_SCHEDULE: LearningRateSchedule = { warmupRatio: 0.05, type: 'linear', minLrRatio: 0 };

/**
 * The learning rate of step `step` (0-based) of `totalSteps`: a linear warmup to `peak` over the
 * first ⌊warmupRatio · totalSteps⌋ steps, then the schedule's decay from `peak` towards minLrRatio · peak.
 */
export function learningRate(schedule: LearningRateSchedule, peak: number, totalSteps: number): (step: number) => number {
  const warmup = Math.floor(schedule.warmupRatio * totalSteps);
  const floor = schedule.minLrRatio * peak;
  return (step) => {
    if (step < warmup) return (peak * (step + 1)) / (warmup + 1);
    // 1 at the first step after warmup, 1/(decay steps) at the last: the last step still learns.
    const left = (totalSteps - step) / (totalSteps - warmup);
    switch (schedule.type) {
      case 'constant':
        return peak;
      case 'linear':
        return floor + (peak - floor) * left;
      case 'cosine':
        return floor + (peak - floor) * 0.5 * (1 + Math.cos(Math.PI * (1 - left)));
    }
  };
}

/** The row length for sequences of up to `longest` tokens: a multiple of 32, within `context`. */
export const rowLength = (longest: number, context: number) => Math.min(context, Math.ceil(longest / 32) * 32);

/**
 * How every method (supervised, DPO, reinforcement) walks its data: `count` items (examples,
 * preference pairs or prompts) in steps of `batch_size` (at most all of them), `n_epochs` passes, each
 * in its own seeded order; the learning rate follows the spec's schedule (learningRate).
 */
export interface TrainingSchedule {
  /** Items per optimizer step. */
  batchSize: number;
  stepsPerEpoch: number;
  totalSteps: number;
  /** The item indices of optimizer step `step` (0-based). */
  stepItems(step: number): number[];
  /** Indices into `count` validation items: all of them, or a `batchSize` window that moves with `step`. */
  validationItems(count: number, step?: number): number[];
  lr(step: number): number;
}

export function trainingSchedule(spec: TrainSpec, cfg: ModelConfig, count: number): TrainingSchedule {
  const hp = spec.hyperparameters;
  const batchSize = Math.max(1, Math.min(hp.batch_size, count));
  const stepsPerEpoch = Math.ceil(count / batchSize);
  const totalSteps = stepsPerEpoch * hp.n_epochs;
  const order = new Map<number, number[][]>();
  const peak = baseLearningRate(cfg, spec.lora !== null) * hp.learning_rate_multiplier;
  return {
    batchSize,
    stepsPerEpoch,
    totalSteps,
    stepItems(step) {
      const epoch = Math.floor(step / stepsPerEpoch);
      if (!order.has(epoch)) order.set(epoch, chunk(epochOrder(count, spec.seed, epoch), batchSize));
      return order.get(epoch)![step % stepsPerEpoch];
    },
    validationItems(validCount, step) {
      if (step === undefined) return Array.from({ length: validCount }, (_, i) => i);
      return Array.from({ length: Math.min(batchSize, validCount) }, (_, i) => (step * batchSize + i) % validCount);
    },
    lr: learningRate(spec.schedule ?? DEFAULT_SCHEDULE, peak, totalSteps),
  };
}

/** Examples packed into rows of `seqLen`, cut into fixed-shape micro-batches of `rowsPerMicro` rows. */
export function microBatches(examples: TokenizedExample[], seqLen: number, rowsPerMicro: number, padId: number): MicroBatch[] {
  const rows = packRows(examples.map((e) => e.ids.length), seqLen);
  return chunk(rows, rowsPerMicro).map((group) => {
    while (group.length < rowsPerMicro) group.push([]); // empty rows: all padding, no loss
    const b = buildBatch(examples, group, seqLen, padId);
    return {
      inputIds: toBigInt64(b.inputIds),
      positionIds: toBigInt64(b.positionIds),
      segmentIds: toBigInt64(b.segmentIds),
      labels: toBigInt64(b.targets),
      lossWeights: b.lossWeights,
    };
  });
}

export interface Plan {
  seqLen: number;
  rowsPerMicro: number;
  stepsPerEpoch: number;
  totalSteps: number;
  padId: number;
  train: TokenizedDataset;
  valid: TokenizedDataset | null;
  /** The micro-batches of optimizer step `step` (0-based). */
  microBatches(step: number): MicroBatch[];
  /** All validation examples as micro-batches, or a `batch_size` window of them for step `step`. */
  validBatches(step?: number): MicroBatch[];
  lr(step: number): number;
}

/**
 * Base learning rate per model, before `learning_rate_multiplier`: the usual LoRA / full
 * fine-tuning rates, ×10 for toy models (hidden ≤ 256), whose random-init weights need larger steps.
 */
export function baseLearningRate(cfg: ModelConfig, lora: boolean): number {
  return (lora ? 2e-4 : 2e-5) * (cfg.hiddenSize <= 256 ? 10 : 1);
}

export function makePlan(spec: TrainSpec, cfg: ModelConfig): Plan {
  const formatter = new ChatFormatter(loadTokenizer(spec.baseModelDir));
  const context = trainingContext(spec, cfg);
  const tokenize = (file: string) => tokenizeDataset(file, formatter, context, { trainOnInputs: spec.trainOnInputs ?? false });
  const train = readingDataset('training', () => tokenize(spec.trainingFile));
  const validationFile = spec.validationFile;
  const validSet = validationFile ? readingDataset('validation', () => tokenize(validationFile)) : null;
  const valid = validSet && validSet.examples.length > 0 ? validSet : null;
  if (train.examples.length === 0) throw new EngineError('invalid_training_file', 'the training file has no examples');
  const longest = [...train.examples, ...(valid?.examples ?? [])].reduce((m, e) => Math.max(m, e.ids.length), 1);
  const seqLen = rowLength(longest, context);
  const padId = cfg.padTokenId ?? 0;

  const schedule = trainingSchedule(spec, cfg, train.examples.length);
  const { stepsPerEpoch, totalSteps, lr } = schedule;
  const stepExamples = (step: number): TokenizedExample[] => schedule.stepItems(step).map((i) => train.examples[i]);
  let maxRows = 1;
  for (let s = 0; s < Math.min(totalSteps, 4 * stepsPerEpoch); s++) {
    maxRows = Math.max(maxRows, packRows(stepExamples(s).map((e) => e.ids.length), seqLen).length);
  }
  const rowsPerMicro = Math.max(1, Math.min(Math.floor(TOKENS_PER_MICRO_BATCH / seqLen), maxRows));

  const validBatches = (step?: number): MicroBatch[] => {
    if (!valid) return [];
    const exs = schedule.validationItems(valid.examples.length, step).map((i) => valid.examples[i]);
    return microBatches(exs, seqLen, rowsPerMicro, padId);
  };
  return {
    seqLen, rowsPerMicro, stepsPerEpoch, totalSteps, padId, train, valid, lr, validBatches,
    microBatches: (step) => microBatches(stepExamples(step), seqLen, rowsPerMicro, padId),
  };
}
