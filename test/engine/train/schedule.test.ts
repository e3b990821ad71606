import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { TrainSpec } from '../../../src/engine/contract.ts';
import type { ModelConfig } from '../../../src/engine/models/config.ts';
import { baseLearningRate, trainingSchedule } from '../../../src/engine/train/plan.ts';
import { rowLength } from '../../../src/engine/data/batching.ts';

const cfg = { hiddenSize: 64, maxPositionEmbeddings: 512 } as ModelConfig;
const spec = (batch_size: number, n_epochs: number, seed = 7): TrainSpec =>
  ({ seed, lora: { rank: 8, alpha: 16, dropout: 0 }, hyperparameters: { batch_size, n_epochs, learning_rate_multiplier: 2 } }) as unknown as TrainSpec;

test('the schedule takes every item once per epoch, in a seeded order of its own each epoch', () => {
  const schedule = trainingSchedule(spec(4, 3), cfg, 10);
  assert.equal(schedule.batchSize, 4);
  assert.equal(schedule.stepsPerEpoch, 3);
  assert.equal(schedule.totalSteps, 9);
  const epochs = [0, 1, 2].map((epoch) => [0, 1, 2].flatMap((s) => schedule.stepItems(epoch * 3 + s)));
  for (const items of epochs) assert.deepEqual([...items].sort((a, b) => a - b), [...Array(10).keys()]);
  assert.notDeepEqual(epochs[0], epochs[1]);
  assert.deepEqual(trainingSchedule(spec(4, 3), cfg, 10).stepItems(4), schedule.stepItems(4), 'same seed, same order');
  assert.deepEqual(trainingSchedule(spec(50, 1), cfg, 10).stepItems(0).length, 10, 'a batch is at most every item');
});

test('the learning rate warms up over the first 5% of steps, then decays linearly towards zero', () => {
  const schedule = trainingSchedule(spec(1, 2), cfg, 50); // 100 steps: 5 of warmup
  const peak = baseLearningRate(cfg, true) * 2;
  assert.ok(Math.abs(schedule.lr(0) - peak / 6) < 1e-12);
  assert.ok(Math.abs(schedule.lr(4) - (5 * peak) / 6) < 1e-12);
  assert.ok(Math.abs(schedule.lr(5) - peak) < 1e-12);
  assert.ok(Math.abs(schedule.lr(99) - peak / 95) < 1e-12);
  for (let step = 6; step < 100; step++) assert.ok(schedule.lr(step) < schedule.lr(step - 1));
});

test('validation windows move with the step; rows are multiples of 32 within the context', () => {
  const schedule = trainingSchedule(spec(3, 1), cfg, 9);
  assert.deepEqual(schedule.validationItems(4), [0, 1, 2, 3]);
  assert.deepEqual(schedule.validationItems(4, 0), [0, 1, 2]);
  assert.deepEqual(schedule.validationItems(4, 1), [3, 0, 1]);
  assert.deepEqual([rowLength(1, 512), rowLength(33, 512), rowLength(600, 512)], [32, 64, 512]);
});

test("a job's schedule: its warmup ratio, then linear or cosine decay to min_lr_ratio × peak, or constant", () => {
  const peak = baseLearningRate(cfg, true) * 2;
  const withSchedule = (schedule: TrainSpec['schedule']) => trainingSchedule({ ...spec(1, 1), schedule }, cfg, 100); // 100 steps
  const close = (a: number, b: number) => assert.ok(Math.abs(a - b) < 1e-12, `${a} ≈ ${b}`);

  const linear = withSchedule({ warmupRatio: 0.2, type: 'linear', minLrRatio: 0.1 }); // 20 steps of warmup
  close(linear.lr(0), peak / 21);
  close(linear.lr(20), peak);
  close(linear.lr(60), 0.1 * peak + 0.9 * peak * (40 / 80));
  close(linear.lr(99), 0.1 * peak + (0.9 * peak) / 80);

  const cosine = withSchedule({ warmupRatio: 0, type: 'cosine', minLrRatio: 0 });
  close(cosine.lr(0), peak);
  close(cosine.lr(50), peak * 0.5 * (1 + Math.cos(Math.PI * 0.5)));
  for (let step = 1; step < 100; step++) assert.ok(cosine.lr(step) < cosine.lr(step - 1));
  assert.ok(cosine.lr(10) > withSchedule({ warmupRatio: 0, type: 'linear', minLrRatio: 0 }).lr(10), 'cosine stays near the peak longer');

  const constant = withSchedule({ warmupRatio: 0.1, type: 'constant', minLrRatio: 0 });
  close(constant.lr(4), (5 * peak) / 11);
  for (const step of [10, 50, 99]) close(constant.lr(step), peak);
});
