// train(spec, options): supervised fine-tuning of a HF Llama-family folder, LoRA or full.
// See contract.ts for the seam. `session.run` blocks the thread: call this from a worker thread.

import type { StepMetrics, TrainEvent, TrainOptions, TrainResult, TrainSpec } from '../contract.ts';
import { readHfConfig } from '../io/hf-model.ts';
import { ensureStepFits, estimateStep } from './memory-estimate.ts';
import { startingState } from './checkpoint.ts';
import { makePlan } from './plan.ts';
import { SeededRandom } from '../data/random.ts';
import { compileStep, StepRunner, type LossSums } from './runner.ts';
import { loadBaseModel, modelSetup, startingTensors, withStoredFrozen } from './setup.ts';
import { adamwSettings } from './adamw.ts';
import { trainReinforcement } from './rft.ts';
import { trainDpo } from './dpo.ts';
import { runTrainingLoop } from './loop.ts';

const mean = (s: LossSums) => ({ loss: s.weightSum > 0 ? s.lossSum / s.weightSum : 0, acc: s.counted > 0 ? s.correct / s.counted : 0 });

export async function train(spec: TrainSpec, options: TrainOptions = {}): Promise<TrainResult> {
  if (spec.method === 'reinforcement') return trainReinforcement(spec, options);
  if (spec.method === 'dpo') return trainDpo(spec, options);
  if (spec.method !== 'supervised') throw new Error(`method ${spec.method} is not supported by this engine yet`);
  const emit = async (e: TrainEvent) => void (await options.onEvent?.(e));

  const { config } = readHfConfig(spec.baseModelDir);
  const modelOnly = withStoredFrozen(modelSetup(config, spec.lora), spec.baseModelDir);
  const limit = spec.memoryLimitBytes;
  // A row fits when it would with every layer recomputed, unless the spec turns that off (ensureStepFits decides how many after).
  const recompute = (spec.recompute ?? 'auto') === 'off' ? 0 : config.numLayers;
  const plan = makePlan(spec, config, limit === undefined ? undefined : (shape) => estimateStep({ ...modelOnly, recompute }, shape, 1).peakBytes <= limit);
  if (plan.context < config.maxPositionEmbeddings && spec.contextLength === undefined) {
    await emit({ type: 'message', level: 'warn', message: `Training at a context of ${plan.context} tokens, not the model's ${config.maxPositionEmbeddings}: a row of the longest example would not fit this worker's memory (set context_length to choose another)` });
  }
  if (plan.train.truncatedCount) await emit({ type: 'message', level: 'warn', message: `${plan.train.truncatedCount} training examples were truncated to ${plan.context} tokens` });
  if (plan.train.untrainableCount) await emit({ type: 'message', level: 'warn', message: `${plan.train.untrainableCount} training examples have no trained tokens` });
  const setup = ensureStepFits(spec, modelOnly, plan.largestShape); // before the weights are loaded
  // Each session keeps its own ORT arena, grown to its own peak; with several shapes, plain
  // allocations let them share one heap instead (the same step time within noise at 1 × 384, README bench:job).
  const sessionSettings = { enableCpuMemArena: plan.shapes.length === 1 };
  // The weights are read on libuv's threads while this one compiles the first step's graph.
  const loading = loadBaseModel(spec.baseModelDir, setup);
  const firstShape = plan.microBatches(0)[0].shape ?? plan.largestShape;
  const firstGraph = compileStep(setup, firstShape, 'gradient', sessionSettings);
  const [{ model, base }] = await Promise.all([loading, firstGraph]);
  const { frozen, params } = startingTensors(spec, setup, base);
  const { state, meta } = startingState(spec, setup, params);
  const runner = new StepRunner(setup, plan.largestShape, frozen, state, adamwSettings(spec), sessionSettings);
  runner.adopt('gradient', firstShape, firstGraph);
  const shapes = [...new Set(plan.shapes.map((s) => (s.anyLength ? `1 × any length up to ${s.seqLen}` : `${s.rows} × ${s.seqLen}`)))].join(', ');
  await emit({ type: 'message', level: 'info', message: `${plan.totalSteps} steps of ≤${spec.hyperparameters.batch_size} examples, micro-batches of ${shapes} tokens, ${plan.train.targetTokenCount} target tokens per epoch, ${setup.trainable.length} trainable tensors` });

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
      const r = mean(await runner.step(plan.microBatches(step), plan.lr(step), SeededRandom.derive(spec.seed, `dropout-${step}`), options.signal));
      return { step: step + 1, total_steps: plan.totalSteps, train_loss: r.loss, train_mean_token_accuracy: r.acc };
    },
    validation: plan.valid
      ? {
          every: Math.max(1, Math.ceil(plan.totalSteps / 20)),
          alsoAt: 'epoch-end',
          run: async (step, whole) => {
            const v = mean(await runner.evaluate(plan.validBatches(step)));
            const extra: Partial<StepMetrics> = { valid_loss: v.loss, valid_mean_token_accuracy: v.acc };
            if (whole) {
              const f = mean(await runner.evaluate(plan.validBatches()));
              Object.assign(extra, { full_valid_loss: f.loss, full_valid_mean_token_accuracy: f.acc });
            }
            return extra;
          },
        }
      : undefined,
    release: () => runner.release(),
  });
  return {
    // Epochs × the epoch's tokens; a run that stopped early, the share of them it reached.
    trainedTokens: Math.round((plan.train.tokenCount * steps) / plan.stepsPerEpoch),
    steps,
    finalDir,
    finalMetrics: metrics,
  };
}
