import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { TrainSpec } from '../../../src/engine/contract.ts';
import type { ModelConfig } from '../../../src/engine/models/config.ts';
import { baseLearningRate, rowLength, trainingSchedule } from '../../../src/engine/train/plan.ts';

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
