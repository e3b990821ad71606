// A job's training options as the engine's TrainSpec: what trainSpecFor hands to train(), and what the
// engine makes of the optimizer settings. Their effects on training are test/e2e/training-options.test.ts's.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { adamwSettings, DEFAULT_ADAMW } from '../../src/engine/train/adamw.ts';
import { trainSpecFor, type TrainInputs } from '../../src/scheduler/train-runner.ts';
import type { JobRunContext } from '../../src/scheduler/worker.ts';
import type { JobRecord } from '../../src/store/index.ts';
import { BUILT_IN_TRAINING_OPTIONS, type TrainingOptions } from '../../src/domain/training-options.ts';

/** A job on the base model in /models/base. */
const start: TrainInputs = {
  baseModelDir: '/models/base', initialAdapterDir: null, trainingFile: '/blobs/files/file-t', validationFile: '/blobs/files/file-v', resumeFrom: null,
  names: { baseModel: 'base-models/base', initialAdapter: null, trainingFile: 'files/file-t', validationFile: 'files/file-v' },
};
const ctx = { workDir: '/work/job' } as unknown as JobRunContext;
const job = (trainingOptions?: TrainingOptions) =>
  ({
    id: 'ftjob-1', training_file: 'file-t', validation_file: 'file-v', seed: 3, resume_point: null,
    method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 2, batch_size: 4, learning_rate_multiplier: 1 } }, ...(trainingOptions ? { training_options: trainingOptions } : {}) },
  }) as unknown as JobRecord;

test('every training option reaches the spec', () => {
  const spec = trainSpecFor(job({
    lora: true, lora_r: 4, lora_alpha: 32, lora_dropout: 0.1, lora_trainable_modules: 'q_proj, v_proj', train_on_inputs: true,
    warmup_ratio: 0.1, lr_scheduler: { lr_scheduler_type: 'cosine', lr_scheduler_args: { min_lr_ratio: 0.2 } }, weight_decay: 0.01, max_grad_norm: 0,
    context_length: 256, n_checkpoints: 5, n_evals: 4, early_stopping_patience: 2,
  }), ctx, start, { modelsDir: '/models' });
  assert.deepEqual(spec.lora, { rank: 4, alpha: 32, dropout: 0.1, targetModules: ['q_proj', 'v_proj'] });
  assert.equal(spec.trainOnInputs, true);
  assert.deepEqual(spec.schedule, { warmupRatio: 0.1, type: 'cosine', minLrRatio: 0.2 });
  assert.deepEqual(spec.optimizer, { weightDecay: 0.01, maxGradNorm: 0 });
  assert.deepEqual(adamwSettings(spec), { ...DEFAULT_ADAMW, weightDecay: 0.01, maxGradNorm: 0 });
  assert.deepEqual([spec.contextLength, spec.nCheckpoints, spec.nEvals, spec.earlyStoppingPatience], [256, 5, 4, 2]);

  const full = trainSpecFor(job({ ...BUILT_IN_TRAINING_OPTIONS, lora: false, lora_r: null, lora_alpha: null, lora_dropout: null, lora_trainable_modules: null, context_length: 512 }), ctx, start, { modelsDir: '/models' });
  assert.equal(full.lora, null);
  for (const key of ['trainOnInputs', 'nCheckpoints', 'nEvals', 'earlyStoppingPatience'] as const) assert.equal(full[key], undefined, key);
});

test("a job stored before training options trains as it did: the built-in LoRA, the engine's defaults", () => {
  const spec = trainSpecFor(job(), ctx, start, { modelsDir: '/models' });
  assert.deepEqual(spec.lora, { rank: 8, alpha: 16, dropout: 0, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] });
  // Nothing else is set, so a resume point it wrote before still matches its spec's fingerprint.
  for (const key of ['trainOnInputs', 'contextLength', 'schedule', 'optimizer', 'nCheckpoints', 'nEvals', 'earlyStoppingPatience'] as const) assert.equal(spec[key], undefined, key);
  assert.deepEqual(adamwSettings(spec), DEFAULT_ADAMW);
});
