// The adapter between the worker and the engine's train(spec, {signal, onEvent}), with a fake train:
// what it reads (pulled through the blob cache) and what it writes (pushed to the blob store as keys
// under jobs/<id>), with the local store (in place) and with one on another machine.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { afterEach, beforeEach, describe, it } from 'node:test';
import type { TrainOptions, TrainSpec } from '../../src/engine/contract.ts';
import { applyJobAction } from '../../src/scheduler/job-events.ts';
import { EngineError } from '../../src/engine/index.ts';
import { createTrainRunner } from '../../src/scheduler/train-runner.ts';
import { Worker } from '../../src/scheduler/worker.ts';
import { BlobCache } from '../../src/store/blob-cache.ts';
import type { FsBlobStore } from '../../src/store/blobs.ts';
import type { Store } from '../../src/store/index.ts';
import { RemoteLikeBlobStore } from '../support/remote-blobs.ts';
import { TINY_CONFIG, waitFor } from '../support/server.ts';
import { queuedJob, tempStore } from '../support/store.ts';

describe('createTrainRunner', () => {
  let store: Store;
  let dataDir: string;
  let cleanup: () => Promise<void>;
  let worker: Worker | undefined;
  beforeEach(async () => {
    ({ store, dataDir, cleanup } = await tempStore());
    // The datasets queuedJob's jobs name (the fake trainers here do not read them).
    for (const id of ['file-x', 'file-v']) await store.blobs.put(`files/${id}`, Readable.from([Buffer.from(`{"messages":[]} ${id}\n`)]));
  });
  const inStore = (key: string) => (store.blobs as FsBlobStore).pathOf(key);
  afterEach(async () => {
    await worker?.stop();
    await cleanup();
  });

  it('builds the TrainSpec and records metrics, checkpoints (the last named as the model), resume points and the result CSV', async () => {
    const modelsDir = path.join(dataDir, 'models');
    fs.mkdirSync(path.join(modelsDir, 'tiny-test'), { recursive: true });
    fs.copyFileSync(TINY_CONFIG, path.join(modelsDir, 'tiny-test', 'config.json'));
    let seen: TrainSpec | undefined;
    const train = async (spec: TrainSpec, { onEvent, signal }: TrainOptions) => {
      seen = spec;
      assert.ok(signal);
      await onEvent?.({ type: 'message', level: 'info', message: 'Loading model' });
      const m1 = { step: 1, total_steps: 2, train_loss: 2, train_mean_token_accuracy: 0.4 };
      await onEvent?.({ type: 'metrics', metrics: m1, stepSeconds: 1 });
      await onEvent?.({ type: 'resume_point', step: 1, dir: path.join(spec.outputDir, 'resume-1') });
      await onEvent?.({ type: 'checkpoint', step: 1, dir: path.join(spec.outputDir, 'ckpt-1'), metrics: m1 });
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
    assert.equal(fs.readFileSync(seen.trainingFile, 'utf8'), await text(store.blobs.read('files/file-x')));
    assert.equal(fs.readFileSync(seen.validationFile!, 'utf8'), await text(store.blobs.read('files/file-v')));
    assert.equal(seen.outputDir, inStore(`jobs/${job.id}`), 'the local store’s own folder: nothing to push');
    assert.deepEqual(seen.inputNames, { baseModel: 'base-models/tiny-test', initialAdapter: null, trainingFile: 'files/file-x', validationFile: 'files/file-v' });
    assert.ok(seen.lora);

    assert.equal(done.resume_point, `jobs/${job.id}/resume-1`);
    assert.equal(done.trained_tokens, 500);
    const events = (await store.events.list(job.id, { limit: 50, order: 'asc' })).data;
    assert.ok(events.some((e) => e.message === 'Loading model'));
    const metrics = events.filter((e) => e.type === 'metrics');
    assert.deepEqual(metrics.map((e) => e.message), ['Step 1/2: training loss=2.00', 'Step 2/2: training loss=1.00, validation loss=1.50']);
    const [checkpoint, earlier] = (await store.checkpoints.listForJob(job.id, { limit: 10 })).data;
    assert.equal(checkpoint.fine_tuned_model_checkpoint, done.fine_tuned_model, 'the checkpoint at the last step is the model itself');
    assert.equal(earlier.fine_tuned_model_checkpoint, `${done.fine_tuned_model}:ckpt-step-1`);
    assert.ok(events.some((e) => e.message === `Checkpoint created at step 2 with Snapshot ID: ${done.fine_tuned_model}`));
    assert.equal(checkpoint.metrics.total_steps, undefined);
    assert.equal(checkpoint.metrics.valid_loss, 1.5);

    const [resultId] = done.result_files;
    const csv = await text(store.blobs.read(`files/${resultId}`));
    assert.equal(csv, 'step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n1,2,0.4,,\n2,1,0.6,1.5,0.5\n');
    assert.equal((await store.files.get(resultId))?.purpose, 'fine-tune-results');
    assert.equal((await store.models.get(done.fine_tuned_model!))?.dir, `jobs/${job.id}/ckpt-2`, 'the final checkpoint’s key');
    assert.equal(checkpoint.dir, `jobs/${job.id}/ckpt-2`);
  });

  function tinyModels() {
    const modelsDir = path.join(dataDir, 'models');
    fs.mkdirSync(path.join(modelsDir, 'tiny-test'), { recursive: true });
    fs.copyFileSync(TINY_CONFIG, path.join(modelsDir, 'tiny-test', 'config.json'));
    return modelsDir;
  }
  const metrics = (step: number, total = 4) => ({ step, total_steps: total, train_loss: 5 - step, train_mean_token_accuracy: step / 10 });
  const until = (signal: AbortSignal) =>
    new Promise<never>((_, reject) => {
      if (signal.aborted) return reject(signal.reason);
      signal.addEventListener('abort', () => reject(signal.reason), { once: true });
    });

  for (const where of ['the local store', 'a store on another machine'] as const) {
    it(`a job run again after a pause records each step, checkpoint and engine message once (${where})`, async () => {
      // On another machine: the job's files are pushed from scratch under the worker's DATA_DIR, and the
      // resumed run reads the pushed resume point from the worker's blob cache.
      const remote = where === 'a store on another machine' ? new RemoteLikeBlobStore(store.blobs as FsBlobStore) : null;
      const hostDir = remote ? path.join(dataDir, 'worker-host') : dataDir;
      const hostStore: Store = remote ? { ...store, blobs: remote, cache: new BlobCache(remote, { dir: path.join(hostDir, 'cache'), maxBytes: 1 << 20 }) } : store;
      const runs: (string | undefined)[] = [];
      const train = async (spec: TrainSpec, { onEvent, signal }: TrainOptions) => {
        runs.push(spec.resumeFrom);
        const point = (step: number) => {
          const dir = path.join(spec.outputDir, 'resume', `step-${step}`);
          fs.mkdirSync(dir, { recursive: true });
          fs.writeFileSync(path.join(dir, 'state.json'), JSON.stringify({ step }));
          return onEvent?.({ type: 'resume_point', step, dir });
        };
        await onEvent?.({ type: 'message', level: 'info', message: '4 steps of ≤1 examples' });
        if (!spec.resumeFrom) {
          await onEvent?.({ type: 'metrics', metrics: metrics(1), stepSeconds: 0.1 });
          await point(1);
          await onEvent?.({ type: 'metrics', metrics: metrics(2), stepSeconds: 0.1 });
          await point(2);
          await onEvent?.({ type: 'metrics', metrics: metrics(3), stepSeconds: 0.1 }); // re-run after the pause
          await until(signal!);
        } else {
          assert.deepEqual(JSON.parse(fs.readFileSync(path.join(spec.resumeFrom, 'state.json'), 'utf8')), { step: 2 });
        }
        await onEvent?.({ type: 'metrics', metrics: metrics(3), stepSeconds: 0.1 });
        await point(3);
        await onEvent?.({ type: 'metrics', metrics: metrics(4), stepSeconds: 0.1 });
        const last = path.join(spec.outputDir, 'checkpoints', 'step-4');
        fs.mkdirSync(last, { recursive: true });
        fs.writeFileSync(path.join(last, 'adapter_config.json'), '{}');
        await onEvent?.({ type: 'checkpoint', step: 4, dir: last, metrics: metrics(4) });
        return { trainedTokens: 40, steps: 4, finalDir: last, finalMetrics: metrics(4) };
      };
      const job = await queuedJob(store, 'org-a');
      worker = new Worker({ store: hostStore, dataDir: hostDir, runJob: createTrainRunner(train, { modelsDir: tinyModels() }), heartbeatMs: 20, pollMs: 10 });
      worker.start();
      await waitFor(() => store.events.list(job.id, { limit: 1 }), (page) => page.data[0]?.type === 'metrics' && page.data[0].data?.step === 3);
      await applyJobAction(store, job.id, 'pause');
      await waitFor(async () => runs.length, () => true);
      const paused = (await store.jobs.get(job.id))!;
      assert.equal(paused.resume_point, `jobs/${job.id}/resume/step-2`);
      assert.deepEqual(await store.blobs.list(`jobs/${job.id}/resume`), [`jobs/${job.id}/resume/step-2/state.json`], 'pushed; older resume points are removed');
      await applyJobAction(store, job.id, 'resume');
      const done = await waitFor(async () => (await store.jobs.get(job.id))!, (j) => j.status === 'succeeded' || j.status === 'failed');
      assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
      assert.equal(runs[0], undefined);
      assert.ok(runs[1]?.startsWith(remote ? path.join(hostDir, 'cache') : inStore(`jobs/${job.id}/resume/step-2`)), runs[1]);
      const events = (await store.events.list(job.id, { limit: 100, order: 'asc' })).data;
      assert.deepEqual(events.filter((e) => e.type === 'metrics').map((e) => e.data?.step), [1, 2, 3, 4]);
      assert.equal(events.filter((e) => e.message === '4 steps of ≤1 examples').length, 1);
      assert.equal(events.filter((e) => e.message === 'Training continues from its last resume point (step 2)').length, 1);
      assert.deepEqual(await store.blobs.list(`jobs/${job.id}`), [`jobs/${job.id}/checkpoints/step-4/adapter_config.json`, `jobs/${job.id}/start/start.json`], 'resume points go when the job succeeds; the model stays');
      assert.equal(fs.existsSync(path.join(hostDir, 'jobs', job.id)), false, 'no scratch left on the worker’s host');
      const csv = (await text(store.blobs.read(`files/${done.result_files[0]}`))).trim().split('\n');
      assert.equal(csv.length, 5);
      const checkpoints = (await store.checkpoints.listForJob(job.id, { limit: 10 })).data;
      assert.deepEqual(checkpoints.map((c) => c.fine_tuned_model_checkpoint), [done.fine_tuned_model], 'the resumed run’s last checkpoint is the model');
    });
  }

  it('records an epoch-end resume point only after that epoch’s checkpoint', async () => {
    const seenResume: (string | null)[] = [];
    let jobId = '';
    const train = async (spec: TrainSpec, { onEvent }: TrainOptions) => {
      const dir = path.join(spec.outputDir, 'resume', 'step-1');
      await onEvent?.({ type: 'metrics', metrics: metrics(1, 2), stepSeconds: 0.1 });
      await onEvent?.({ type: 'resume_point', step: 1, dir });
      seenResume.push((await store.jobs.get(jobId))!.resume_point);
      await onEvent?.({ type: 'checkpoint', step: 1, dir: path.join(spec.outputDir, 'ckpt-1'), metrics: metrics(1, 2) });
      seenResume.push((await store.jobs.get(jobId))!.resume_point);
      await onEvent?.({ type: 'metrics', metrics: metrics(2, 2), stepSeconds: 0.1 });
      return { trainedTokens: 1, steps: 2, finalDir: path.join(spec.outputDir, 'ckpt-1'), finalMetrics: metrics(2, 2) };
    };
    const job = await queuedJob(store, 'org-a');
    jobId = job.id;
    worker = new Worker({ store, dataDir, runJob: createTrainRunner(train, { modelsDir: tinyModels() }), heartbeatMs: 20, pollMs: 10 });
    worker.start();
    await waitFor(async () => (await store.jobs.get(job.id))!.status, (s) => s === 'succeeded' || s === 'failed');
    assert.deepEqual(seenResume, [null, `jobs/${job.id}/resume/step-1`]);
  });

  it('engine errors name the job’s files, not server paths, with OpenAI’s error code', async () => {
    const train = async (spec: TrainSpec) => {
      throw new EngineError('invalid_validation_file', `${spec.validationFile}: example on line 3: content is not text`);
    };
    const job = await queuedJob(store, 'org-a', { validation_file: 'file-v' });
    worker = new Worker({ store, dataDir, runJob: createTrainRunner(train, { modelsDir: tinyModels() }), heartbeatMs: 20, pollMs: 10 });
    worker.start();
    const done = await waitFor(async () => (await store.jobs.get(job.id))!, (j) => j.status === 'failed' || j.status === 'succeeded');
    assert.deepEqual(done.error, { code: 'invalid_validation_file', param: 'validation_file', message: 'validation file file-v: example on line 3: content is not text' });
    assert.equal(done.estimated_finish, null);
  });

  it('an error’s code decides, not its wording: one that only names the training file is training_failed', async () => {
    const train = async (spec: TrainSpec) => {
      throw new Error(`${spec.trainingFile}: the training file has no examples`);
    };
    const job = await queuedJob(store, 'org-a');
    worker = new Worker({ store, dataDir, runJob: createTrainRunner(train, { modelsDir: tinyModels() }), heartbeatMs: 20, pollMs: 10 });
    worker.start();
    const done = await waitFor(async () => (await store.jobs.get(job.id))!, (j) => j.status === 'failed' || j.status === 'succeeded');
    assert.deepEqual(done.error, { code: 'training_failed', param: null, message: 'training file file-x: the training file has no examples' });
  });

  it('a NaN loss fails the job (training_diverged)', async () => {
    const train = async (_spec: TrainSpec, { onEvent }: TrainOptions) => {
      await onEvent?.({ type: 'metrics', metrics: { ...metrics(1), train_loss: NaN }, stepSeconds: 0.1 });
      throw new Error('not reached');
    };
    const job = await queuedJob(store, 'org-a');
    worker = new Worker({ store, dataDir, runJob: createTrainRunner(train, { modelsDir: tinyModels() }), heartbeatMs: 20, pollMs: 10 });
    worker.start();
    const done = await waitFor(async () => (await store.jobs.get(job.id))!, (j) => j.status === 'failed' || j.status === 'succeeded');
    assert.equal(done.error?.code, 'training_diverged');
    assert.match(done.error!.message, /NaN at step 1/);
  });
});
