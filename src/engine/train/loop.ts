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
  /**
   * Validate after every `every` steps, and at each epoch end ('epoch-end') or the last step
   * ('last'); with the spec's `nEvals`, at that many steps spread evenly instead, each on the
   * whole validation set.
   */
  every: number;
  alsoAt: 'epoch-end' | 'last';
  /** Whether the step's `stepSeconds` include the validation. */
  timed?: boolean;
  /** Extra metrics of step `step` (0-based); `whole`: on the whole validation set too (full_valid_*). */
  run(step: number, whole: boolean): Promise<Partial<StepMetrics>>;
}

/** `count` steps (1-based) spread evenly over `totalSteps`, the last of them the last step. */
export function evenlySpacedSteps(count: number, totalSteps: number): Set<number> {
  const n = Math.min(count, totalSteps);
  return new Set(Array.from({ length: n }, (_, i) => Math.round(((i + 1) * totalSteps) / n)));
}

/** The loss early stopping watches: the whole validation set's when measured, else the window's. */
const validationLoss = (m: StepMetrics) => m.full_valid_loss ?? m.valid_loss;

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
  /** The metadata of the resume point this run continues from (startingState's meta). */
  resumedFrom?: Record<string, unknown> | null;
  /** Work before the first step, under the loop's abort handling. */
  start?(): Promise<void>;
  /** One optimizer step (0-based): its metrics (`step`, `total_steps`, training fields). */
  trainStep(step: number): Promise<StepMetrics>;
  validation?: LoopValidation;
  /** Releases the runner (and anything else the method holds); called however the loop ends. */
  release(): Promise<void>;
}

/**
 * Runs the steps from the state's step to the last, or until early stopping ends the run; returns
 * the last metrics, the last checkpoint folder and the steps taken.
 */
export async function runTrainingLoop(o: LoopOptions): Promise<{ metrics: StepMetrics; finalDir: string; steps: number }> {
  const { spec, signal, emit, totalSteps, stepsPerEpoch, setup } = o;
  let metrics: StepMetrics | null = null;
  let finalDir = '';
  let lastResumePoint = o.state().step;
  const checkpointSteps = spec.nCheckpoints ? evenlySpacedSteps(spec.nCheckpoints, totalSteps) : null;
  const evalSteps = spec.nEvals ? evenlySpacedSteps(spec.nEvals, totalSteps) : null;
  // Early stopping's memory (the best validation loss, evaluations since it) rides in the resume points.
  const resumed = o.resumedFrom ?? {};
  let best = typeof resumed.bestValidLoss === 'number' ? resumed.bestValidLoss : Infinity;
  let sinceBest = typeof resumed.evalsSinceBest === 'number' ? resumed.evalsSinceBest : 0;
  const writeResumePoint = async () => {
    const state = o.state();
    const step = state.step;
    const dir = join(spec.outputDir, 'resume', `step-${step}`);
    const earlyStopping = { bestValidLoss: Number.isFinite(best) ? best : null, evalsSinceBest: sinceBest };
    saveResumePoint(dir, setup, state, { step, fingerprint: specFingerprint(spec), ...earlyStopping, ...o.resumeMeta?.() });
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
      const done = step + 1;
      const epochEnd = done % stepsPerEpoch === 0;
      let last = done === totalSteps;
      const v = o.validation;
      const validating = v && (evalSteps ? evalSteps.has(done) : done % v.every === 0 || (v.alsoAt === 'epoch-end' ? epochEnd : last));
      if (validating) {
        Object.assign(metrics, await v.run(step, evalSteps !== null || epochEnd));
        if (v.timed) stepSeconds = (performance.now() - t0) / 1000;
      }
      await emit({ type: 'metrics', metrics, stepSeconds });
      const loss = validating ? validationLoss(metrics) : undefined;
      if (spec.earlyStoppingPatience && loss !== undefined && !last) {
        if (loss < best) [best, sinceBest] = [loss, 0];
        else if (++sinceBest >= spec.earlyStoppingPatience) {
          last = true;
          await emit({
            type: 'message',
            level: 'info',
            message: `Early stopping at step ${done} of ${totalSteps}: the validation loss has not improved on ${best.toFixed(4)} for ${sinceBest} evaluations (patience ${spec.earlyStoppingPatience})`,
          });
        }
      }
      const checkpointDue = last || (checkpointSteps ? checkpointSteps.has(done) : epochEnd);
      const resumeDue = checkpointDue || epochEnd || (spec.checkpointEverySteps ? done % spec.checkpointEverySteps === 0 : false);
      if (resumeDue && !last) await writeResumePoint();
      if (checkpointDue) {
        finalDir = join(spec.outputDir, 'checkpoints', `step-${done}`);
        saveModelCheckpoint(finalDir, setup, o.state(), { dir: spec.baseModelDir, rawConfig: o.rawConfig });
        await emit({ type: 'checkpoint', step: done, dir: finalDir, metrics, final: last });
      }
      if (last) break;
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
  return { metrics, finalDir, steps: metrics.step };
}
