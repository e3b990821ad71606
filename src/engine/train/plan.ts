// The job's plan, fixed before the first step: tokenized examples, the row length, which examples
// each optimizer step takes (a seeded shuffle per epoch), and the learning-rate schedule. The
// schedule is shared with DPO and reinforcement (trainingSchedule; their rows: rowLength in data/batching.ts).
// Everything is a pure function of the spec, which is what makes resume exact.

import type { LearningRateSchedule, TrainSpec } from '../contract.ts';
import type { ModelConfig } from '../models/config.ts';
import { ChatFormatter, type TokenizedExample } from '../data/chat-format.ts';
import { loadTokenizer } from '../data/tokenizer.ts';
import { tokenizeDataset, truncateDataset, type TokenizedDataset } from '../data/dataset.ts';
import { type Batch, bucketLength, buildBatch, chooseRowLengths, chunk, epochOrder, layoutStep, longestOf, rowLengthFor, toBigInt64 } from '../data/batching.ts';
import type { MicroBatch } from './runner.ts';
import { anyLengthLimit, type StepShape } from './step.ts';
import { EngineError, readingDataset } from '../errors.ts';

/** Tokens per micro-batch: bounds activation memory; a step accumulates as many as it needs. */
export const TOKENS_PER_MICRO_BATCH = 2048;

/**
 * What compiling one more row length costs, in tokens of training time: building a shape's step graph, creating its
 * ORT session and its first run, against a token's share of a step (measured at the SmolLM2-135M shape, README bench:job).
 */
export const COMPILE_TOKENS = 1024;

/**
 * The longest context a job trains `cfg` at (longer examples are truncated): the job's, or the
 * model's max_position_embeddings (a supervised job's plan shortens that to what memory allows, memoryContext).
 */
export function trainingContext(spec: TrainSpec, cfg: ModelConfig): number {
  if (spec.contextLength === undefined) return cfg.maxPositionEmbeddings;
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

/** Whether a micro-batch's rows pack several examples (else its step graph masks attention causally only). */
const packs = (group: number[][]) => group.some((row) => row.length > 1);

function microBatch(b: Batch, shape: StepShape): MicroBatch {
  return {
    shape,
    inputIds: toBigInt64(b.inputIds),
    positionIds: toBigInt64(b.positionIds),
    segmentIds: toBigInt64(b.segmentIds),
    labels: toBigInt64(b.targets),
    lossWeights: b.lossWeights,
  };
}

/** One step's examples as micro-batches of rows of `seqLen` tokens (layoutStep). */
export function microBatches(examples: TokenizedExample[], seqLen: number, padId: number): MicroBatch[] {
  const { rows, microBatches } = layoutStep(examples.map((e) => e.ids.length), seqLen, TOKENS_PER_MICRO_BATCH);
  return microBatches.map((group) => microBatch(buildBatch(examples, group, seqLen, padId), { rows, seqLen, packs: packs(group) }));
}

/** One example as a micro-batch for the step graph for any length: one row, exactly as long as the example. */
export function anyLengthMicroBatch(example: TokenizedExample, padId: number): MicroBatch {
  const seqLen = example.ids.length;
  return microBatch(buildBatch([example], [[0]], seqLen, padId), { rows: 1, seqLen, packs: false, anyLength: true });
}

export interface Plan {
  /** Longest row (examples longer are truncated to it). */
  context: number;
  /** The micro-batch shape with the most tokens (the longest rows among equals): what memory is checked at. */
  largestShape: StepShape;
  /** Every micro-batch shape the steps and validations use. */
  shapes: StepShape[];
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

/**
 * Without a context_length, how long a row may be: the model's context, unless a row of the
 * `longest` example would not fit memory; then the longest bucketed row length that does. Rows up
 * to TOKENS_PER_MICRO_BATCH are what every micro-batch may hold anyway (the step shapes are checked
 * when training starts), so only longer ones are estimated, one row at a time, down the buckets.
 */
export function memoryContext(longest: number, modelContext: number, fits: (shape: StepShape) => boolean): number {
  for (let seqLen = bucketLength(longest, modelContext); seqLen > TOKENS_PER_MICRO_BATCH; seqLen = bucketLength(Math.ceil((2 * seqLen) / 3), modelContext)) {
    if (fits({ rows: 1, seqLen })) return seqLen >= longest ? modelContext : seqLen;
  }
  return longest <= TOKENS_PER_MICRO_BATCH ? modelContext : Math.min(modelContext, TOKENS_PER_MICRO_BATCH);
}

/**
 * `fits`: whether a micro-batch of a shape fits the worker's memory (none: no limit). A job that
 * sets no context_length trains at the model's context as far as it does (memoryContext).
 */
export function makePlan(spec: TrainSpec, cfg: ModelConfig, fits?: (shape: StepShape) => boolean): Plan {
  const formatter = new ChatFormatter(loadTokenizer(spec.baseModelDir));
  const modelContext = trainingContext(spec, cfg);
  const tokenize = (file: string) => tokenizeDataset(file, formatter, modelContext, { trainOnInputs: spec.trainOnInputs ?? false });
  let train = readingDataset('training', () => tokenize(spec.trainingFile));
  const validationFile = spec.validationFile;
  const validSet = validationFile ? readingDataset('validation', () => tokenize(validationFile)) : null;
  let valid = validSet && validSet.examples.length > 0 ? validSet : null;
  if (train.examples.length === 0) throw new EngineError('invalid_training_file', 'the training file has no examples');
  const longest = [...train.examples, ...(valid?.examples ?? [])].reduce((m, e) => Math.max(m, e.ids.length), 1);
  const context = spec.contextLength === undefined && fits ? memoryContext(longest, modelContext, fits) : modelContext;
  if (context < longest) {
    train = truncateDataset(train, context);
    valid = valid && truncateDataset(valid, context);
  }
  const padId = cfg.padTokenId ?? 0;

  const schedule = trainingSchedule(spec, cfg, train.examples.length);
  const { stepsPerEpoch, totalSteps, lr } = schedule;
  const stepExamples = (step: number): TokenizedExample[] => schedule.stepItems(step).map((i) => train.examples[i]);
  const validExamples = (step?: number): TokenizedExample[] =>
    valid ? schedule.validationItems(valid.examples.length, step).map((i) => valid.examples[i]) : [];

  // A step of one example that the graph for any length takes runs that graph, unpadded. The row
  // lengths of the others are chosen for the training steps and one pass over the validation set
  // (whose longest example every validation window's row then holds); then every shape the run will meet.
  const lengthsOf = (examples: TokenizedExample[]) => examples.map((e) => e.ids.length);
  const anyLength = (lengths: number[]) => lengths.length === 1 && lengths[0] <= anyLengthLimit(cfg);
  const steps = Array.from({ length: totalSteps }, (_, s) => lengthsOf(stepExamples(s)));
  const rowLengths = chooseRowLengths([...steps, lengthsOf(validExamples())].filter((l) => !anyLength(l)), context, TOKENS_PER_MICRO_BATCH, COMPILE_TOKENS);
  const seqLenOf = (lengths: number[]) => rowLengthFor(longestOf(lengths), rowLengths);
  const shapes = new Map<string, StepShape>();
  const windows = valid ? Array.from({ length: totalSteps }, (_, s) => lengthsOf(validExamples(s))) : [];
  for (const lengths of [...steps, ...windows, lengthsOf(validExamples())].filter((l) => l.length > 0)) {
    if (anyLength(lengths)) {
      // One entry, at the longest row it will be fed (what memory is checked at).
      shapes.set('any', { rows: 1, seqLen: Math.max(lengths[0], shapes.get('any')?.seqLen ?? 0), packs: false, anyLength: true });
      continue;
    }
    const { rows, seqLen, microBatches } = layoutStep(lengths, seqLenOf(lengths), TOKENS_PER_MICRO_BATCH);
    for (const group of microBatches) shapes.set(`${rows}×${seqLen} ${packs(group)}`, { rows, seqLen, packs: packs(group) });
  }
  // Among equal sizes the packed graph is the largest: it masks every tile.
  const met = [...shapes.values()].sort((a, b) => a.seqLen - b.seqLen || a.rows - b.rows || Number(a.packs) - Number(b.packs));
  const largestShape = met.reduce((a, b) => (b.rows * b.seqLen > a.rows * a.seqLen || (b.rows * b.seqLen === a.rows * a.seqLen && b.seqLen >= a.seqLen) ? b : a));
  const batchesOf = (examples: TokenizedExample[]) =>
    anyLength(lengthsOf(examples)) ? [anyLengthMicroBatch(examples[0], padId)] : microBatches(examples, seqLenOf(lengthsOf(examples)), padId);

  return {
    context, largestShape, shapes: met, stepsPerEpoch, totalSteps, padId, train, valid, lr,
    microBatches: (step) => batchesOf(stepExamples(step)),
    validBatches: (step) => batchesOf(validExamples(step)),
  };
}
