// The step loop the training methods share: abort checks, metrics events, the validation cadence,
// resume points (every `checkpointEverySteps` steps and at epoch ends), epoch-end model
// checkpoints, pause handling (an abort that asks for a resume point writes one first) and the
// runner's release. Each method brings its own step, validation and metrics (supervised: train.ts,
// DPO: dpo.ts, reinforcement: rft.ts).

import { join } from 'node:path';
import type { StepMetrics, TrainEvent, TrainSpec } from '../contract.ts';
import { saveModelCheckpoint, saveResumePoint, specFingerprint } from './checkpoint.ts';
import type { OptimizerState } from './runner.ts';
import type { ModelSetup } from './step.ts';
import { trainingAborted, wantsResumePoint } from './pause.ts';

export interface LoopValidation {
  /** Validate after every `every` steps, and at each epoch end ('epoch-end') or the last step ('last'). */
  every: number;
  alsoAt: 'epoch-end' | 'last';
  /** Whether the step's `stepSeconds` include the validation. */
  timed?: boolean;
  /** Extra metrics of step `step` (0-based). */
  run(step: number, epochEnd: boolean): Promise<Partial<StepMetrics>>;
}

export interface LoopOptions {
  spec: TrainSpec;
  signal?: AbortSignal;
  emit(e: TrainEvent): Promise<void>;
  totalSteps: number;
  stepsPerEpoch: number;
  setup: ModelSetup;
  /** The runner's optimizer state; its `step` is where the loop starts. */
  state(): OptimizerState;
  /** Base model folder and config, for model checkpoints. */
  rawConfig: Record<string, unknown>;
  /** Resume point metadata besides the step and the spec's fingerprint. */
  resumeMeta?(): Record<string, unknown>;
  /** Work before the first step, under the loop's abort handling. */
  start?(): Promise<void>;
  /** One optimizer step (0-based): its metrics (`step`, `total_steps`, training fields). */
  trainStep(step: number): Promise<StepMetrics>;
  validation?: LoopValidation;
  /** Releases the runner (and anything else the method holds); called however the loop ends. */
  release(): Promise<void>;
}

/** Runs the steps from the state's step to the last; returns the last metrics and the last checkpoint folder. */
export async function runTrainingLoop(o: LoopOptions): Promise<{ metrics: StepMetrics; finalDir: string }> {
  const { spec, signal, emit, totalSteps, stepsPerEpoch, setup } = o;
  let metrics: StepMetrics | null = null;
  let finalDir = '';
  let lastResumePoint = o.state().step;
  const writeResumePoint = async () => {
    const state = o.state();
    const step = state.step;
    const dir = join(spec.outputDir, 'resume', `step-${step}`);
    saveResumePoint(dir, setup, state, { step, fingerprint: specFingerprint(spec), ...o.resumeMeta?.() });
    lastResumePoint = step;
    await emit({ type: 'resume_point', step, dir });
  };
  try {
    await o.start?.();
    for (let step = o.state().step; step < totalSteps; step++) {
      if (signal?.aborted) throw trainingAborted();
      const t0 = performance.now();
      metrics = await o.trainStep(step);
      let stepSeconds = (performance.now() - t0) / 1000;
      const epochEnd = (step + 1) % stepsPerEpoch === 0;
      const last = step + 1 === totalSteps;
      const v = o.validation;
      if (v && ((step + 1) % v.every === 0 || (v.alsoAt === 'epoch-end' ? epochEnd : last))) {
        Object.assign(metrics, await v.run(step, epochEnd));
        if (v.timed) stepSeconds = (performance.now() - t0) / 1000;
      }
      await emit({ type: 'metrics', metrics, stepSeconds });
      const resumeDue = epochEnd || (spec.checkpointEverySteps ? (step + 1) % spec.checkpointEverySteps === 0 : false);
      if (resumeDue && !last) await writeResumePoint();
      if (epochEnd) {
        finalDir = join(spec.outputDir, 'checkpoints', `step-${step + 1}`);
        saveModelCheckpoint(finalDir, setup, o.state(), { dir: spec.baseModelDir, rawConfig: o.rawConfig });
        await emit({ type: 'checkpoint', step: step + 1, dir: finalDir, metrics });
      }
    }
  } catch (err) {
    if (!signal?.aborted) throw err;
    // Pause: keep the steps done so far (an update is atomic: the step in flight finished or left the state untouched).
    if (wantsResumePoint(signal.reason) && o.state().step > lastResumePoint && o.state().step < totalSteps) await writeResumePoint();
    throw trainingAborted();
  } finally {
    await o.release();
  }
  if (!metrics) throw new Error('the resume point is already at the last step');
  return { metrics, finalDir };
}
