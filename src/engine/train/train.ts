// train(spec, options): supervised fine-tuning of a HF Llama-family folder, LoRA or full.
// See contract.ts for the seam. `session.run` blocks the thread: call this from a worker thread.

import { createHash } from 'node:crypto';
import { join } from 'node:path';
import type { StepMetrics, TrainEvent, TrainOptions, TrainResult, TrainSpec } from '../contract.ts';
import { loadHfModel } from '../io/hf-model.ts';
import { loadResumePoint, saveModelCheckpoint, saveResumePoint } from './checkpoint.ts';
import { makePlan } from './plan.ts';
import { Rng } from './rng.ts';
import { freshOptimizerState, StepRunner, type LossSums } from './runner.ts';
import { initialTensors, modelSetup } from './setup.ts';
import { DEFAULT_ADAMW } from './step.ts';
import { trainReinforcement } from './rft.ts';
import { trainDpo } from './dpo.ts';
import { trainingAborted, wantsResumePoint } from './pause.ts';

const mean = (s: LossSums) => ({ loss: s.weightSum > 0 ? s.lossSum / s.weightSum : 0, acc: s.counted > 0 ? s.correct / s.counted : 0 });

export function fingerprint(spec: TrainSpec): string {
  const { baseModelDir, trainingFile, validationFile, hyperparameters, seed, lora, method } = spec;
  const json = JSON.stringify({ baseModelDir, trainingFile, validationFile, hyperparameters, seed, lora, method });
  return createHash('sha256').update(json).digest('hex').slice(0, 16);
}

export async function train(spec: TrainSpec, options: TrainOptions = {}): Promise<TrainResult> {
  if (spec.method === 'reinforcement') return trainReinforcement(spec, options);
  if (spec.method === 'dpo') return trainDpo(spec, options, { fingerprint });
  if (spec.method !== 'supervised') throw new Error(`method ${spec.method} is not supported by this engine yet`);
  const emit = async (e: TrainEvent) => void (await options.onEvent?.(e));
  const checkAbort = () => {
    if (options.signal?.aborted) throw new DOMException('training aborted', 'AbortError');
  };

  const model = loadHfModel(spec.baseModelDir);
  const plan = makePlan(spec, model.config);
  if (plan.train.truncatedCount) await emit({ type: 'message', level: 'warn', message: `${plan.train.truncatedCount} training examples were truncated to ${plan.seqLen} tokens` });
  if (plan.train.untrainableCount) await emit({ type: 'message', level: 'warn', message: `${plan.train.untrainableCount} training examples have no trained tokens` });
  const setup = modelSetup(model.config, spec.lora);
  const base = new Map([...model.weights].map(([n, t]) => [n, t.data]));
  const { frozen, params } = initialTensors(setup, base, spec.seed);
  model.weights.clear(); // full fine-tuning replaces these arrays each step; don't pin the originals
  let state = freshOptimizerState(params);
  if (spec.resumeFrom) {
    const resumed = loadResumePoint(spec.resumeFrom, setup);
    if (resumed.meta.fingerprint !== fingerprint(spec)) throw new Error(`${spec.resumeFrom} was written for a different job`);
    state = resumed.state;
  }
  const runner = new StepRunner(setup, { rows: plan.rowsPerMicro, seqLen: plan.seqLen }, frozen, state, DEFAULT_ADAMW);
  await emit({ type: 'message', level: 'info', message: `${plan.totalSteps} steps of ≤${spec.hyperparameters.batch_size} examples, rows of ${plan.seqLen} tokens, ${setup.trainable.length} trainable tensors` });

  const validEvery = Math.max(1, Math.ceil(plan.totalSteps / 20));
  let metrics: StepMetrics | null = null;
  let finalDir = '';
  let lastResumePoint = runner.state.step;
  const writeResumePoint = async () => {
    const step = runner.state.step;
    const dir = join(spec.outputDir, 'resume', `step-${step}`);
    saveResumePoint(dir, setup, runner.state, { step, fingerprint: fingerprint(spec) });
    lastResumePoint = step;
    await emit({ type: 'resume_point', step, dir });
  };
  try {
    for (let step = runner.state.step; step < plan.totalSteps; step++) {
      checkAbort();
      const t0 = performance.now();
      const r = mean(await runner.step(plan.microBatches(step), plan.lr(step), Rng.derive(spec.seed, `dropout-${step}`), options.signal));
      const stepSeconds = (performance.now() - t0) / 1000;
      metrics = { step: step + 1, total_steps: plan.totalSteps, train_loss: r.loss, train_mean_token_accuracy: r.acc };
      const epochEnd = (step + 1) % plan.stepsPerEpoch === 0;
      if (plan.valid && ((step + 1) % validEvery === 0 || epochEnd)) {
        const v = mean(await runner.evaluate(plan.validBatches(step)));
        Object.assign(metrics, { valid_loss: v.loss, valid_mean_token_accuracy: v.acc });
      }
      if (plan.valid && epochEnd) {
        const v = mean(await runner.evaluate(plan.validBatches()));
        Object.assign(metrics, { full_valid_loss: v.loss, full_valid_mean_token_accuracy: v.acc });
      }
      await emit({ type: 'metrics', metrics, stepSeconds });
      const resumeDue = epochEnd || (spec.checkpointEverySteps ? (step + 1) % spec.checkpointEverySteps === 0 : false);
      if (resumeDue && step + 1 < plan.totalSteps) await writeResumePoint();
      if (epochEnd) {
        finalDir = join(spec.outputDir, 'checkpoints', `step-${step + 1}`);
        saveModelCheckpoint(finalDir, setup, runner.state, { dir: spec.baseModelDir, rawConfig: model.rawConfig });
        await emit({ type: 'checkpoint', step: step + 1, dir: finalDir, metrics });
      }
    }
  } catch (err) {
    if (!options.signal?.aborted) throw err;
    // Pause: keep the steps done so far (the step in flight finished or left the state untouched).
    if (wantsResumePoint(options.signal.reason) && runner.state.step > lastResumePoint && runner.state.step < plan.totalSteps) await writeResumePoint();
    throw trainingAborted();
  } finally {
    await runner.release();
  }
  if (!metrics) throw new Error('the resume point is already at the last step');
  return {
    trainedTokens: plan.train.tokenCount * spec.hyperparameters.n_epochs,
    steps: plan.totalSteps,
    finalDir,
    finalMetrics: metrics,
  };
}
