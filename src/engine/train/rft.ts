// Reinforcement fine-tuning (OpenAI's method.type "reinforcement"), GRPO-style:
//   for each batch of prompts: sample k completions per prompt from the current policy
//   (temperature 1), grade them (TrainOptions.grade: the control plane runs the job's grader),
//   normalise the rewards within each prompt's group, and take one AdamW step on
//     (1/G) Σ_i (1/T_i) Σ_t [ −A_i · log π(y_t) + β · KL_t(π ‖ π_ref) ]
//   with the reference π_ref = the model before training (LoRA: the same base with the adapter as it starts).
// See rft-step.ts for how the supervised step graphs compute that gradient, rft-sampler.ts for
// sampling from the current weights, rft-objective.ts for the numbers.
//
// Hyperparameters: k = max(2, round(4 × compute_multiplier)) samples per prompt; batch_size
// prompts per step; n_epochs passes over the training prompts; learning rate = the supervised base
// rate × learning_rate_multiplier (warmup 5%, linear decay); every eval_interval steps (and at the
// last step) eval_samples completions per validation prompt are graded: valid_reward_mean.
// reasoning_effort is accepted and has no effect (no reasoning models here).
// Data order, sampling seeds and evaluation seeds are functions of (seed, step), so a resumed run
// continues exactly as the original would have.

import type { RftSample, TrainEvent, TrainOptions, TrainResult, TrainSpec } from '../contract.ts';
import { ChatFormatter, type ChatMessage, type ToolDefinition } from '../data/chat-format.ts';
import { buildBatch, chunk, packRows, rowLength, toBigInt64 } from '../data/batching.ts';
import { readJsonlSync } from '../data/jsonl.ts';
import { loadTokenizer } from '../data/tokenizer.ts';
import { loadHfModel } from '../io/hf-model.ts';
import { startingState } from './checkpoint.ts';
import { TOKENS_PER_MICRO_BATCH, trainingContext, trainingSchedule } from './plan.ts';
import { SeededRandom } from '../data/random.ts';
import type { MicroBatch } from './runner.ts';
import { modelSetup, startingTensors } from './setup.ts';
import { ensureStepFits } from './memory-estimate.ts';
import type { ModelSetup } from './step.ts';
import { adamwSettings } from './adamw.ts';
import { groupAdvantages, meanStd, rftObjective, rftTokenTerms } from './rft-objective.ts';
import { PolicySampler, stopTokenIds } from './rft-sampler.ts';
import { RftStepRunner } from './rft-step.ts';
import { runTrainingLoop } from './loop.ts';
import { EngineError, readingDataset } from '../errors.ts';

/** Most tokens per sampled completion unless the spec says otherwise. */
export const DEFAULT_MAX_COMPLETION_TOKENS = 128;
/** Weight of the KL penalty to the reference (GRPO's 0.04). */
export const KL_BETA = 0.04;

export function samplesPerPrompt(computeMultiplier = 1): number {
  return Math.max(2, Math.round(4 * computeMultiplier));
}

export interface RftPrompt {
  ids: number[];
  /** The dataset line, for `{{item.KEY}}`. */
  item: Record<string, unknown>;
}

/** Reinforcement lines: `messages` ending with a user turn (+ `tools`); prompt ids via the chat template. */
export function loadPrompts(path: string, formatter: ChatFormatter, context: number): RftPrompt[] {
  return readJsonlSync(path).map(({ line, value }) => {
    const record = value as Record<string, unknown>;
    if (!record || typeof record !== 'object' || !Array.isArray(record.messages)) {
      throw new Error(`${path}: example on line ${line}: a reinforcement example needs "messages"`);
    }
    const ids = formatter.promptIds(record.messages as ChatMessage[], record.tools as ToolDefinition[] | undefined);
    if (ids.length >= context) throw new Error(`${path}: example on line ${line}: the prompt has ${ids.length} tokens; the context is ${context}`);
    return { ids, item: record };
  });
}

const seedOf = (seed: number, label: string) => SeededRandom.derive(seed, label).nextUint32();

interface Sampled {
  prompt: RftPrompt;
  completion: number[];
  text: string;
}

export async function trainReinforcement(spec: TrainSpec, options: TrainOptions = {}): Promise<TrainResult> {
  const grade = options.grade;
  if (!grade) throw new Error('reinforcement training needs a grader (TrainOptions.grade)');
  const emit = async (e: TrainEvent) => void (await options.onEvent?.(e));
  const signal = options.signal;
  const checkAbort = () => {
    if (signal?.aborted) throw new DOMException('training aborted', 'AbortError');
  };
  const hp = spec.hyperparameters;
  const k = samplesPerPrompt(hp.compute_multiplier);
  const evalSamples = Math.max(1, hp.eval_samples ?? 1);

  const model = loadHfModel(spec.baseModelDir);
  const cfg = model.config;
  const tokenizer = loadTokenizer(spec.baseModelDir);
  const formatter = new ChatFormatter(tokenizer);
  const context = trainingContext(spec, cfg);
  const train = readingDataset('training', () => loadPrompts(spec.trainingFile, formatter, context));
  const validationFile = spec.validationFile;
  const validAll = validationFile ? readingDataset('validation', () => loadPrompts(validationFile, formatter, context)) : [];
  if (train.length === 0) throw new EngineError('invalid_training_file', 'the training file has no examples');
  const longestPrompt = [...train, ...validAll].reduce((m, p) => Math.max(m, p.ids.length), 1);
  // Rows fit the longest prompt plus a full completion, up to the context; a prompt near the context
  // gets the room left (at least one token), the others keep the full budget.
  const maxNew = Math.max(1, Math.min(spec.maxCompletionTokens ?? DEFAULT_MAX_COMPLETION_TOKENS, context - 1));
  const seqLen = rowLength(longestPrompt + maxNew, context);
  const padId = cfg.padTokenId ?? 0;

  const schedule = trainingSchedule(spec, cfg, train.length);
  const { batchSize: bs, stepsPerEpoch, totalSteps, lr } = schedule;
  const evalInterval = Math.max(1, hp.eval_interval ?? Math.ceil(stepsPerEpoch / 4));
  const stepPrompts = (step: number): RftPrompt[] => schedule.stepItems(step).map((i) => train[i]);

  const rowsPerMicro = Math.max(1, Math.min(Math.floor(TOKENS_PER_MICRO_BATCH / seqLen), bs * k));
  const setup: ModelSetup = ensureStepFits(spec, modelSetup(cfg, spec.lora), { rows: rowsPerMicro, seqLen });
  const base = new Map([...model.weights].map(([name, t]) => [name, t.data]));
  model.weights.clear();
  const { frozen, params } = startingTensors(spec, setup, base);
  // The reference: a copy of the starting trainables (the runner updates its state's arrays in
  // place). LoRA: the same frozen base with the adapter as it starts (B = 0: the base itself; an
  // adapter tuned again: the model it was); full: the original weights.
  const reference = new Map([...params].map(([name, p]) => [name, p.slice()]));
  const { state, meta } = startingState(spec, setup, params);
  let trainedTokens = Number(meta?.trainedTokens ?? 0);

  const runner = new RftStepRunner(setup, { rows: rowsPerMicro, seqLen }, frozen, state, adamwSettings(spec));
  const sampler = new PolicySampler(setup, setup.lora ? frozen : base, tokenizer, stopTokenIds(cfg, spec.baseModelDir, tokenizer));

  /** `abortable` false: an evaluation after an update finishes, so the step's metrics are recorded before a pause. */
  const sampleAll = async (prompts: RftPrompt[], perPrompt: number, label: string, abortable = true): Promise<Sampled[]> => {
    const out: Sampled[] = [];
    for (let i = 0; i < prompts.length; i++) {
      const prompt = prompts[i];
      for (let j = 0; j < perPrompt; j++) {
        if (abortable) checkAbort();
        const room = Math.min(maxNew, seqLen - prompt.ids.length);
        const r = await sampler.sample(prompt.ids, room, seedOf(spec.seed, `${label}-${i}-${j}`), abortable ? signal : undefined);
        out.push({ prompt, completion: r.tokenIds, text: r.text });
      }
    }
    return out;
  };
  const rewardsOf = async (samples: Sampled[]): Promise<number[]> => {
    const batch: RftSample[] = samples.map((s) => ({ outputText: s.text, item: s.prompt.item }));
    const rewards = await grade(batch);
    if (rewards.length !== samples.length) throw new Error(`the grader returned ${rewards.length} rewards for ${samples.length} samples`);
    return rewards.map((r) => (Number.isFinite(r) ? r : 0));
  };
  const evaluate = async (abortable = true): Promise<number> => {
    // The same seeds at every evaluation: differences between evaluations are the policy's.
    const samples = await sampleAll(validAll, evalSamples, 'eval', abortable);
    return meanStd(await rewardsOf(samples)).mean;
  };

  await emit({
    type: 'message',
    level: 'info',
    message: `${totalSteps} reinforcement steps of ${bs} prompts × ${k} samples (≤${maxNew} tokens each), rows of ${seqLen} tokens, ${setup.trainable.length} trainable tensors`,
  });

  const { metrics, finalDir } = await runTrainingLoop({
    spec,
    signal,
    emit,
    totalSteps,
    stepsPerEpoch,
    setup,
    state: () => runner.state,
    rawConfig: model.rawConfig,
    resumeMeta: () => ({ trainedTokens }),
    resumedFrom: meta,
    start: async () => {
      await sampler.refresh(runner.state.params);
      if (validAll.length > 0 && runner.state.step === 0) {
        await emit({ type: 'message', level: 'info', message: `Validation reward before training: ${(await evaluate()).toFixed(4)}` });
      }
    },
    trainStep: async (step) => {
      const prompts = stepPrompts(step);
      const samples = await sampleAll(prompts, k, `sample-${step}`);
      const rewards = await rewardsOf(samples);
      const advantages = groupAdvantages(rewards, k);

      // Prompt + completion per sample, loss on the completion only; packed into rows.
      const examples = samples.map((s) => {
        const ids = Int32Array.from([...s.prompt.ids, ...s.completion]);
        const weights = new Float32Array(ids.length);
        weights.fill(1, s.prompt.ids.length);
        return { ids, weights, promptLength: s.prompt.ids.length };
      });
      const tokens = samples.map((s) => s.completion.length);
      const nllMean = new Float64Array(samples.length);
      const klMean = new Float64Array(samples.length);
      let hits = 0;
      let counted = 0;
      const micro: MicroBatch[] = [];
      for (const group of chunk(packRows(examples.map((e) => e.ids.length), seqLen), rowsPerMicro)) {
        while (group.length < rowsPerMicro) group.push([]);
        const b = buildBatch(examples, group, seqLen, padId);
        const sampleAt = new Int32Array(rowsPerMicro * seqLen).fill(-1);
        group.forEach((row, r) => {
          let offset = r * seqLen;
          for (const i of row) {
            const e = examples[i];
            for (let t = e.promptLength - 1; t < e.ids.length - 1; t++) sampleAt[offset + t] = i;
            offset += e.ids.length;
          }
        });
        const batch: MicroBatch = {
          inputIds: toBigInt64(b.inputIds),
          positionIds: toBigInt64(b.positionIds),
          segmentIds: toBigInt64(b.segmentIds),
          labels: toBigInt64(b.targets),
          lossWeights: b.lossWeights,
        };
        const policy = await runner.score(batch);
        const ref = await runner.score(batch, reference);
        const terms = rftTokenTerms(sampleAt, tokens, advantages, policy.nll, ref.nll, KL_BETA, { nllMean, klMean });
        for (let p = 0; p < sampleAt.length; p++) {
          if (sampleAt[p] < 0) continue;
          hits += policy.hit[p];
          counted++;
        }
        micro.push({ ...batch, lossWeights: terms.weights });
      }
      checkAbort();
      await runner.policyStep(micro, 1 / samples.length, lr(step), signal);
      await sampler.refresh(runner.state.params);
      trainedTokens += examples.reduce((a, e) => a + e.ids.length, 0);

      const r = meanStd(rewards);
      return {
        step: step + 1,
        total_steps: totalSteps,
        train_loss: rftObjective(advantages, nllMean, klMean, KL_BETA),
        train_mean_token_accuracy: counted > 0 ? hits / counted : 0,
        train_reward_mean: r.mean,
        train_reward_std: r.std,
        kl: meanStd([...klMean]).mean,
      };
    },
    validation:
      validAll.length > 0
        ? { every: evalInterval, alsoAt: 'last', timed: true, run: async () => ({ valid_reward_mean: await evaluate(false) }) }
        : undefined,
    release: async () => {
      await runner.release();
      await sampler.release();
    },
  });
  return { trainedTokens, steps: totalSteps, finalDir, finalMetrics: metrics };
}
