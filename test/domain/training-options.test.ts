// The rules across training options (domain/training-options.ts): the server's defaults under the
// request's, and where a default does not apply to a job.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ApiError } from '../../src/domain/errors.ts';
import { resolveTrainingOptions } from '../../src/domain/training-options.ts';

const supervised = { method: 'supervised' as const, hasValidationFile: true, modelContext: 4096, fusedProjections: false };

test("the request's options over the server's over the built-in ones", () => {
  const server = { lora: false, weight_decay: 0.1, context_length: 8192, n_checkpoints: 2 };
  const mixed = resolveTrainingOptions({ weight_decay: 0 }, server, supervised);
  assert.equal(mixed.lora, false);
  assert.equal(mixed.lora_r, null);
  assert.equal(mixed.weight_decay, 0);
  assert.equal(mixed.context_length, 4096, "the server's context, within the model's");
  assert.equal(mixed.n_checkpoints, 2);
  assert.equal(resolveTrainingOptions({ lora: true }, server, supervised).lora_r, 8);
  // Neither sets it: the model's context, as far as the worker's memory allows (the engine decides).
  assert.equal(resolveTrainingOptions({}, {}, { ...supervised, modelContext: 32768 }).context_length, null);
  assert.equal(resolveTrainingOptions({ context_length: 16384 }, server, { ...supervised, modelContext: 32768 }).context_length, 16384);
});

test("a server default that cannot apply to a job is left out, where the request's own would be refused", () => {
  const server = { train_on_inputs: true, n_evals: 4, early_stopping_patience: 2 };
  const dpo = resolveTrainingOptions({}, server, { ...supervised, method: 'dpo' });
  assert.equal(dpo.train_on_inputs, false);
  assert.equal(dpo.n_evals, 4);
  const noValidation = resolveTrainingOptions({}, server, { ...supervised, hasValidationFile: false });
  assert.deepEqual([noValidation.train_on_inputs, noValidation.n_evals, noValidation.early_stopping_patience], [true, null, null]);
  const rft = resolveTrainingOptions({}, server, { ...supervised, method: 'reinforcement' });
  assert.deepEqual([rft.n_evals, rft.early_stopping_patience], [null, null]);

  const refused = (fn: () => unknown, param: string) => assert.throws(fn, (err: unknown) => err instanceof ApiError && err.status === 400 && err.param === param);
  refused(() => resolveTrainingOptions({ train_on_inputs: true }, {}, { ...supervised, method: 'dpo' }), 'train_on_inputs');
  refused(() => resolveTrainingOptions({ n_evals: 2 }, {}, { ...supervised, hasValidationFile: false }), 'n_evals');
  refused(() => resolveTrainingOptions({ lora_alpha: 4 }, { lora: false }, supervised), 'lora_alpha');
  // Phi-3's fused projections are names only on a model that has them.
  refused(() => resolveTrainingOptions({ lora_trainable_modules: 'qkv_proj,o_proj' }, {}, supervised), 'lora_trainable_modules');
  const phi3 = { ...supervised, fusedProjections: true };
  assert.equal(resolveTrainingOptions({ lora_trainable_modules: 'qkv_proj,o_proj' }, {}, phi3).lora_trainable_modules, 'qkv_proj,o_proj');
  assert.equal(resolveTrainingOptions({ lora_trainable_modules: 'q_proj,gate_up_proj' }, {}, phi3).lora_trainable_modules, 'q_proj,gate_up_proj');
});
