// The adapter between the worker and the engine's train(spec, {signal, onEvent}), with a fake train.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import type { TrainOptions, TrainSpec } from '../../src/engine/contract.ts';
import { createTrainRunner } from '../../src/scheduler/train-runner.ts';
import { Worker } from '../../src/scheduler/worker.ts';
import type { Store } from '../../src/store/index.ts';
import { waitFor } from '../support/server.ts';
import { queuedJob, tempStore } from '../support/store.ts';

describe('createTrainRunner', () => {
  let store: Store;
  let dataDir: string;
  let cleanup: () => Promise<void>;
  let worker: Worker | undefined;
  beforeEach(async () => ({ store, dataDir, cleanup } = await tempStore()));
  afterEach(async () => {
    await worker?.stop();
    await cleanup();
  });

  it('builds the TrainSpec and records metrics, checkpoints, resume points and the result CSV', async () => {
    const modelsDir = path.join(dataDir, 'models');
    fs.mkdirSync(path.join(modelsDir, 'tiny-test'), { recursive: true });
    fs.writeFileSync(path.join(modelsDir, 'tiny-test', 'config.json'), '{}');
    let seen: TrainSpec | undefined;
    const train = async (spec: TrainSpec, { onEvent, signal }: TrainOptions) => {
      seen = spec;
      assert.ok(signal);
      await onEvent?.({ type: 'message', level: 'info', message: 'Loading model' });
      await onEvent?.({ type: 'metrics', metrics: { step: 1, total_steps: 2, train_loss: 2, train_mean_token_accuracy: 0.4 }, stepSeconds: 1 });
      await onEvent?.({ type: 'resume_point', step: 1, dir: path.join(spec.outputDir, 'resume-1') });
      const m2 = { step: 2, total_steps: 2, train_loss: 1, train_mean_token_accuracy: 0.6, valid_loss: 1.5, valid_mean_token_accuracy: 0.5 };
      await onEvent?.({ type: 'metrics', metrics: m2, stepSeconds: 1 });
      await onEvent?.({ type: 'checkpoint', step: 2, dir: path.join(spec.outputDir, 'ckpt-2'), metrics: m2 });
      return { trainedTokens: 500, steps: 2, finalDir: path.join(spec.outputDir, 'final'), finalMetrics: m2 };
    };
    const job = await queuedJob(store, 'org-a', { validation_file: 'file-v', seed: 42 });
    worker = new Worker({ store, dataDir, runJob: createTrainRunner(train, { modelsDir }), heartbeatMs: 20, pollMs: 10 });
    worker.start();
    await waitFor(async () => (await store.jobs.get(job.id))!.status, (s) => s === 'succeeded' || s === 'failed');
    const done = (await store.jobs.get(job.id))!;
    assert.equal(done.status, 'succeeded', JSON.stringify(done.error));

    assert.ok(seen);
    assert.equal(seen.baseModelDir, path.join(modelsDir, 'tiny-test'));
    assert.equal(seen.method, 'supervised');
    assert.deepEqual(seen.hyperparameters, { n_epochs: 1, batch_size: 1, learning_rate_multiplier: 1.8 });
    assert.equal(seen.seed, 42);
    assert.equal(seen.trainingFile, store.blobs.localPath('files/file-x'));
    assert.equal(seen.validationFile, store.blobs.localPath('files/file-v'));
    assert.equal(seen.outputDir, path.join(dataDir, 'jobs', job.id));
    assert.ok(seen.lora);

    assert.equal(done.resume_point, path.join(seen.outputDir, 'resume-1'));
    assert.equal(done.trained_tokens, 500);
    const events = (await store.events.list(job.id, { limit: 50, order: 'asc' })).data;
    assert.ok(events.some((e) => e.message === 'Loading model'));
    const metrics = events.filter((e) => e.type === 'metrics');
    assert.deepEqual(metrics.map((e) => e.message), ['Step 1/2: training loss=2.00', 'Step 2/2: training loss=1.00, validation loss=1.50']);
    const [checkpoint] = (await store.checkpoints.listForJob(job.id, { limit: 10 })).data;
    assert.equal(checkpoint.fine_tuned_model_checkpoint, `${done.fine_tuned_model}:ckpt-step-2`);
    assert.equal(checkpoint.metrics.total_steps, undefined);
    assert.equal(checkpoint.metrics.valid_loss, 1.5);

    const [resultId] = done.result_files;
    const csv = fs.readFileSync(store.blobs.localPath(`files/${resultId}`), 'utf8');
    assert.equal(csv, 'step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n1,2,0.4,,\n2,1,0.6,1.5,0.5\n');
    assert.equal((await store.files.get(resultId))?.purpose, 'fine-tune-results');
    assert.equal((await store.models.get(done.fine_tuned_model!))?.dir, path.join(seen.outputDir, 'final'));
  });
});
