// DPO training: preference pairs, reference log-probs from the frozen base, and the step loop.
//
// Reference: π_ref is the model before training. Its sequence log-probs are computed once per
// example, before the first step, by an eval graph of the base model without adapters (LoRA: the
// same resident base weights, no second copy, plus the adapter the job starts from when it tunes a
// LoRA fine-tune again; full fine-tuning: the initial weights, before they are trained), and cached
// in memory for the whole job. A resumed job recomputes them from the starting weights before
// loading the resume point, so they are the same numbers.
//
// Layout: one sequence per row, a micro-batch of P pairs = 2P rows (chosen rows, then rejected
// rows; see dpo-loss.ts). A step takes `batch_size` pairs (a seeded shuffle per epoch, as for
// supervised jobs) in as many micro-batches as it needs; learning rate and schedule as supervised.

import type { StepMetrics, TrainEvent, TrainOptions, TrainResult, TrainSpec } from '../contract.ts';
import type { ModelConfig } from '../models/config.ts';
import { loadHfModel } from '../io/hf-model.ts';
import { ChatFormatter } from '../data/chat-format.ts';
import { loadTokenizer } from '../data/tokenizer.ts';
import { chunk, rowLength } from '../data/batching.ts';
import { tokenizePreferenceDataset, type PreferenceDataset, type TokenizedPair } from '../data/preference.ts';
import { CompiledGraph, type HostArray, type SessionSettings } from '../runtime/session.ts';
import { startingState } from './checkpoint.ts';
import { TOKENS_PER_MICRO_BATCH, trainingContext, trainingSchedule } from './plan.ts';
import { SeededRandom } from '../data/random.ts';
import { microBatchFeeds, StepRunner, type MicroBatch, type OptimizerState } from './runner.ts';
import { modelSetup, startingTensors } from './setup.ts';
import { ensureStepFits } from './memory-estimate.ts';
import { buildStepGraph, type ModelSetup, type StepShape } from './step.ts';
import { adamwSettings, DEFAULT_ADAMW, type AdamWSettings } from './adamw.ts';
import { dpoNames, dpoObjective } from './dpo-loss.ts';
import { trainingAborted } from './pause.ts';
import { runTrainingLoop } from './loop.ts';
import { EngineError, readingDataset } from '../errors.ts';

/** OpenAI's default (and `auto`) β. */
export const DEFAULT_BETA = 0.1;

/** A micro-batch of P pairs: 2P rows, plus reference log-probs and pair weights [P]. */
export interface DpoMicroBatch extends MicroBatch {
  /** Indices of the pairs (into the dataset) it holds; −1 for padding pairs. */
  pairIds: number[];
  refChosen: Float32Array;
  refRejected: Float32Array;
  pairWeights: Float32Array;
}

export interface DpoSums {
  lossSum: number;
  chosenRewardSum: number;
  rejectedRewardSum: number;
  correct: number;
  pairs: number;
}

export interface DpoMeans {
  loss: number;
  rewardsChosen: number;
  rewardsRejected: number;
  rewardAccuracy: number;
  rewardMargin: number;
}

export function dpoMeans(s: DpoSums): DpoMeans {
  const n = s.pairs || 1;
  const chosen = s.chosenRewardSum / n;
  const rejected = s.rejectedRewardSum / n;
  return { loss: s.lossSum / n, rewardsChosen: chosen, rewardsRejected: rejected, rewardAccuracy: s.correct / n, rewardMargin: chosen - rejected };
}

const emptySums = (): DpoSums => ({ lossSum: 0, chosenRewardSum: 0, rejectedRewardSum: 0, correct: 0, pairs: 0 });

/** Lays out `pairIds` (−1 = padding) as a [2P, seqLen] micro-batch, one sequence a row (never packed: its step graphs are unpacked); reference log-probs from `ref` when given. */
export function pairMicroBatch(pairs: TokenizedPair[], pairIds: number[], seqLen: number, padId: number, ref?: Reference): DpoMicroBatch {
  const P = pairIds.length;
  const n = 2 * P * seqLen;
  const b: DpoMicroBatch = {
    inputIds: new BigInt64Array(n).fill(BigInt(padId)),
    positionIds: new BigInt64Array(n),
    segmentIds: new BigInt64Array(n),
    labels: new BigInt64Array(n),
    lossWeights: new Float32Array(n),
    pairIds,
    refChosen: new Float32Array(P),
    refRejected: new Float32Array(P),
    pairWeights: new Float32Array(P),
  };
  const lay = (row: number, ids: Int32Array, weights: Float32Array) => {
    const at = row * seqLen;
    for (let t = 0; t < ids.length; t++) {
      b.inputIds[at + t] = BigInt(ids[t]);
      b.positionIds[at + t] = BigInt(t);
      b.segmentIds[at + t] = 1n;
      if (t + 1 < ids.length && weights[t + 1] !== 0) {
        b.labels[at + t] = BigInt(ids[t + 1]);
        b.lossWeights[at + t] = weights[t + 1];
      }
    }
  };
  pairIds.forEach((id, p) => {
    if (id < 0) return;
    lay(p, pairs[id].chosen.ids, pairs[id].chosen.weights);
    lay(P + p, pairs[id].rejected.ids, pairs[id].rejected.weights);
    b.pairWeights[p] = 1;
    if (ref) {
      b.refChosen[p] = ref.chosen[id];
      b.refRejected[p] = ref.rejected[id];
    }
  });
  return b;
}

/** Reference sequence log-probs of every pair of a dataset. */
export interface Reference {
  chosen: Float32Array;
  rejected: Float32Array;
}

export interface DpoPlan {
  seqLen: number;
  pairsPerMicro: number;
  stepsPerEpoch: number;
  totalSteps: number;
  padId: number;
  train: PreferenceDataset;
  valid: PreferenceDataset | null;
  /** Pair indices of optimizer step `step`, in micro-batches of `pairsPerMicro` (last one padded with −1). */
  stepPairs(step: number): number[][];
  /** Validation pair indices in micro-batches: all of them, or a `batch_size` window for step `step`. */
  validPairs(step?: number): number[][];
  lr(step: number): number;
}

export function makeDpoPlan(spec: TrainSpec, cfg: ModelConfig): DpoPlan {
  const formatter = new ChatFormatter(loadTokenizer(spec.baseModelDir));
  const context = trainingContext(spec, cfg);
  const train = readingDataset('training', () => tokenizePreferenceDataset(spec.trainingFile, formatter, context));
  const validationFile = spec.validationFile;
  const validSet = validationFile ? readingDataset('validation', () => tokenizePreferenceDataset(validationFile, formatter, context)) : null;
  const valid = validSet && validSet.pairs.length > 0 ? validSet : null;
  if (train.pairs.length === 0) throw new EngineError('invalid_training_file', 'the training file has no examples');
  let longest = 1;
  for (const p of [...train.pairs, ...(valid?.pairs ?? [])]) longest = Math.max(longest, p.chosen.ids.length, p.rejected.ids.length);
  const seqLen = rowLength(longest, context);
  const padId = cfg.padTokenId ?? 0;

  const schedule = trainingSchedule(spec, cfg, train.pairs.length);
  const { stepsPerEpoch, totalSteps, lr } = schedule;
  const pairsPerMicro = Math.max(1, Math.min(schedule.batchSize, Math.floor(TOKENS_PER_MICRO_BATCH / (2 * seqLen))));
  const inMicros = (ids: number[]) =>
    chunk(ids, pairsPerMicro).map((group) => {
      while (group.length < pairsPerMicro) group.push(-1);
      return group;
    });
  const stepPairs = (step: number) => inMicros(schedule.stepItems(step));
  const validPairs = (step?: number) => (valid ? inMicros(schedule.validationItems(valid.pairs.length, step)) : []);
  return { seqLen, pairsPerMicro, stepsPerEpoch, totalSteps, padId, train, valid, stepPairs, validPairs, lr };
}

/**
 * Sequence log-probs of every pair under the model in `weights`: base weights (for full
 * fine-tuning, the initial ones), and under LoRA the adapter the job starts from when `weights`
 * holds its tensors (none: the base alone). One eval session, released after.
 */
export async function referenceLogps(
  setup: ModelSetup,
  weights: Map<string, Float32Array>,
  pairs: TokenizedPair[],
  shape: { pairsPerMicro: number; seqLen: number; padId: number },
  settings: SessionSettings = {},
): Promise<Reference> {
  const P = shape.pairsPerMicro;
  const withAdapter = setup.lora !== null && setup.trainable.every((name) => weights.has(name));
  const model: ModelSetup = { ...setup, lora: withAdapter ? setup.lora : null, trainable: [], packed: false };
  const graph = buildStepGraph(model, { rows: 2 * P, seqLen: shape.seqLen, packs: false }, 'eval', dpoObjective(1, P));
  const session = await CompiledGraph.compile(graph, settings);
  const ref: Reference = { chosen: new Float32Array(pairs.length), rejected: new Float32Array(pairs.length) };
  try {
    for (const [name, data] of weights) session.setResident(name, data);
    const ids = [...pairs.keys()];
    for (const group of chunk(ids, P)) {
      while (group.length < P) group.push(-1);
      const b = pairMicroBatch(pairs, group, shape.seqLen, shape.padId);
      const out = await session.run(dpoFeeds(b), [dpoNames.logps]);
      const logps = out[dpoNames.logps] as Float32Array;
      group.forEach((id, p) => {
        if (id < 0) return;
        ref.chosen[id] = logps[p];
        ref.rejected[id] = logps[P + p];
      });
    }
  } finally {
    await session.release();
  }
  return ref;
}

function dpoFeeds(b: DpoMicroBatch): Record<string, HostArray> {
  return {
    ...microBatchFeeds(b),
    [dpoNames.refChosen]: b.refChosen,
    [dpoNames.refRejected]: b.refRejected,
    [dpoNames.pairWeights]: b.pairWeights,
  };
}

/** The step runner with the DPO objective: same sessions, optimizer and state as supervised. */
export class DpoRunner extends StepRunner {
  constructor(
    setup: ModelSetup,
    shape: StepShape & { pairs: number },
    frozen: Map<string, Float32Array>,
    state: OptimizerState,
    beta: number,
    adamw: AdamWSettings = DEFAULT_ADAMW,
    settings: SessionSettings = {},
  ) {
    if (shape.rows !== 2 * shape.pairs) throw new Error('a DPO micro-batch has two rows per pair');
    super(setup, shape, frozen, state, adamw, settings, dpoObjective(beta, shape.pairs));
  }

  protected override batchFeeds(b: MicroBatch): Record<string, HostArray> {
    return dpoFeeds(b as DpoMicroBatch);
  }

  private static add(sums: DpoSums, out: Record<string, HostArray>) {
    sums.lossSum += (out.loss_sum as Float32Array)[0];
    sums.chosenRewardSum += (out.rewards_chosen_sum as Float32Array)[0];
    sums.rejectedRewardSum += (out.rewards_rejected_sum as Float32Array)[0];
    sums.correct += (out.correct as Float32Array)[0];
  }

  /** One optimizer step over the pairs of `micro`: the mean DPO loss of the step's pairs. */
  async dpoStep(micro: DpoMicroBatch[], lr: number, rng?: SeededRandom, signal?: AbortSignal): Promise<DpoSums & { gradNorm: number }> {
    const pairs = micro.reduce((s, b) => s + b.pairWeights.reduce((a, w) => a + w, 0), 0);
    const sums = { ...emptySums(), pairs };
    const gradNorm = await this.optimizerStep(micro, pairs > 0 ? 1 / pairs : 0, lr, rng, (out) => DpoRunner.add(sums, out), signal);
    return { ...sums, gradNorm };
  }

  /** DPO sums over `batches` with the current weights (no dropout, no update). */
  async dpoEvaluate(batches: DpoMicroBatch[]): Promise<DpoSums> {
    const s = await this.session('eval');
    const sums = emptySums();
    for (const b of batches) {
      const out = await s.run({ ...this.paramFeeds(), ...this.batchFeeds(b) }, ['loss_sum', 'rewards_chosen_sum', 'rewards_rejected_sum', 'correct']);
      DpoRunner.add(sums, out);
      sums.pairs += b.pairWeights.reduce((a, w) => a + w, 0);
    }
    return sums;
  }
}

/** StepMetrics fields of DPO means: OpenAI's loss/accuracy keys plus the reward ones. */
export function dpoMetrics(prefix: 'train' | 'valid' | 'full_valid', m: DpoMeans): Partial<StepMetrics> {
  return {
    [`${prefix}_loss`]: m.loss,
    [`${prefix}_mean_token_accuracy`]: m.rewardAccuracy,
    [`${prefix}_rewards_chosen`]: m.rewardsChosen,
    [`${prefix}_rewards_rejected`]: m.rewardsRejected,
    [`${prefix}_reward_accuracy`]: m.rewardAccuracy,
    [`${prefix}_reward_margin`]: m.rewardMargin,
  };
}

/** train() for `method: 'dpo'`: the supervised loop's events, checkpoints and resume points, with the DPO loss. */
export async function trainDpo(spec: TrainSpec, options: TrainOptions): Promise<TrainResult> {
  const emit = async (e: TrainEvent) => void (await options.onEvent?.(e));
  const beta = spec.hyperparameters.beta ?? DEFAULT_BETA;
  if (!(beta > 0)) throw new Error(`beta must be positive (got ${beta})`);

  const model = loadHfModel(spec.baseModelDir);
  const plan = makeDpoPlan(spec, model.config);
  if (plan.train.truncatedCount) await emit({ type: 'message', level: 'warn', message: `${plan.train.truncatedCount} training pairs were truncated to ${plan.seqLen} tokens` });
  if (plan.train.untrainableCount) await emit({ type: 'message', level: 'warn', message: `${plan.train.untrainableCount} training pairs have a response with no tokens left` });
  const setup = ensureStepFits(spec, modelSetup(model.config, spec.lora), { rows: 2 * plan.pairsPerMicro, seqLen: plan.seqLen, packs: false }, dpoObjective(beta, plan.pairsPerMicro));
  const base = new Map([...model.weights].map(([n, t]) => [n, t.data]));
  const { frozen, params } = startingTensors(spec, setup, base);
  model.weights.clear();
  base.clear();

  // π_ref: the model before any training (and before a resume point replaces the weights): the
  // base, or under LoRA the base with the adapter the job starts from.
  const refWeights = !setup.lora ? params : spec.initialAdapterDir ? new Map([...frozen, ...params]) : frozen;
  const refShape = { pairsPerMicro: plan.pairsPerMicro, seqLen: plan.seqLen, padId: plan.padId };
  const trainRef = await referenceLogps(setup, refWeights, plan.train.pairs, refShape);
  const validRef = plan.valid ? await referenceLogps(setup, refWeights, plan.valid.pairs, refShape) : null;
  if (options.signal?.aborted) throw trainingAborted(); // nothing trained yet: no resume point to keep

  const { state, meta } = startingState(spec, setup, params);
  const P = plan.pairsPerMicro;
  const runner = new DpoRunner(setup, { rows: 2 * P, seqLen: plan.seqLen, packs: false, pairs: P }, frozen, state, beta, adamwSettings(spec));
  await emit({ type: 'message', level: 'info', message: `DPO (beta ${beta}): ${plan.totalSteps} steps of ≤${spec.hyperparameters.batch_size} preference pairs, rows of ${plan.seqLen} tokens, ${setup.trainable.length} trainable tensors` });

  const trainBatches = (ids: number[][]) => ids.map((g) => pairMicroBatch(plan.train.pairs, g, plan.seqLen, plan.padId, trainRef));
  const validBatches = (ids: number[][]) => ids.map((g) => pairMicroBatch(plan.valid!.pairs, g, plan.seqLen, plan.padId, validRef!));
  const { metrics, finalDir, steps } = await runTrainingLoop({
    spec,
    resumedFrom: meta,
    signal: options.signal,
    emit,
    totalSteps: plan.totalSteps,
    stepsPerEpoch: plan.stepsPerEpoch,
    setup,
    state: () => runner.state,
    rawConfig: model.rawConfig,
    trainStep: async (step) => {
      const r = dpoMeans(await runner.dpoStep(trainBatches(plan.stepPairs(step)), plan.lr(step), SeededRandom.derive(spec.seed, `dropout-${step}`), options.signal));
      return { step: step + 1, total_steps: plan.totalSteps, train_loss: r.loss, train_mean_token_accuracy: r.rewardAccuracy, ...dpoMetrics('train', r) };
    },
    validation: plan.valid
      ? {
          every: Math.max(1, Math.ceil(plan.totalSteps / 20)),
          alsoAt: 'epoch-end',
          run: async (step, whole) => ({
            ...dpoMetrics('valid', dpoMeans(await runner.dpoEvaluate(validBatches(plan.validPairs(step))))),
            ...(whole ? dpoMetrics('full_valid', dpoMeans(await runner.dpoEvaluate(validBatches(plan.validPairs())))) : {}),
          }),
        }
      : undefined,
    release: () => runner.release(),
  });
  return {
    trainedTokens: Math.round((plan.train.tokenCount * steps) / plan.stepsPerEpoch),
    steps,
    finalDir,
    finalMetrics: metrics,
  };
}
