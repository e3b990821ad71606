import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, it } from 'node:test';
import { jobEvents } from '../../src/domain/jobs.ts';
import { applyJobAction } from '../../src/scheduler/job-events.ts';
import { claimNextJob } from '../../src/scheduler/queue.ts';
import { Worker, type JobRunner } from '../../src/scheduler/worker.ts';
import type { Store } from '../../src/store/index.ts';
import { NonTrainingRunner } from '../support/runners.ts';
import { waitFor } from '../support/server.ts';
import { describeOnEachBackend } from '../support/database.ts';
import { queuedJob, tempStore } from '../support/store.ts';

describeOnEachBackend('worker', (backend) => {
  let store: Store;
  let dataDir: string;
  let cleanup: () => Promise<void>;
  const workers: Worker[] = [];
  beforeEach(async () => ({ store, dataDir, cleanup } = await tempStore(backend)));
  afterEach(async () => {
    await Promise.all(workers.splice(0).map((w) => w.stop()));
    await cleanup();
  });

  const startWorker = (runJob: JobRunner, extra: { leaseMs?: number; workerId?: string } = {}) => {
    const worker = new Worker({ store, runJob, dataDir, heartbeatMs: 20, pollMs: 10, leaseMs: 5_000, ...extra });
    workers.push(worker);
    worker.start();
    return worker;
  };
  const statusOf = async (id: string) => (await store.jobs.get(id))!.status;
  const messages = async (id: string) => (await store.events.list(id, { limit: 100, order: 'asc' })).data.map((e) => e.message);

  it('runs a job to success: model registered, checkpoints pruned to 3, the final one named as the model, events in order', async () => {
    const runJob: JobRunner = async (_job, ctx) => {
      const last = path.join(ctx.workDir, 'checkpoints', 'step-4');
      fs.mkdirSync(last, { recursive: true });
      fs.writeFileSync(path.join(last, 'adapter_config.json'), '{}');
      for (const step of [1, 2, 3, 4]) await ctx.checkpoint(step, { step, train_loss: 1 / step }, step === 4 ? last : null, { final: step === 4 });
      return { trainedTokens: 99, resultFiles: [] };
    };
    const job = await queuedJob(store, 'org-a', { suffix: 'sfx' });
    startWorker(runJob);
    await waitFor(() => statusOf(job.id), (s) => s === 'succeeded');
    const done = (await store.jobs.get(job.id))!;
    assert.match(done.fine_tuned_model!, /^ft:tiny-test:org-a:sfx:[A-Za-z0-9]{8}$/);
    assert.equal(done.trained_tokens, 99);
    assert.equal(typeof done.finished_at, 'number');
    const model = await store.models.get(done.fine_tuned_model!, 'org-a');
    assert.equal(model?.dir, `jobs/${job.id}/checkpoints/step-4`, 'the final checkpoint’s blobs');
    assert.deepEqual(await store.blobs.list(model!.dir!), [`jobs/${job.id}/checkpoints/step-4/adapter_config.json`]);
    const checkpoints = await store.checkpoints.listForJob(job.id, { limit: 10 });
    assert.deepEqual(checkpoints.data.map((c) => c.step_number), [4, 3, 2]);
    const name = done.fine_tuned_model!;
    assert.deepEqual(checkpoints.data.map((c) => c.fine_tuned_model_checkpoint), [name, `${name}:ckpt-step-3`, `${name}:ckpt-step-2`]);
    const log = await messages(job.id);
    assert.ok(log.includes(`Checkpoint created at step 4 with Snapshot ID: ${name}`));
    assert.ok(log.includes(`Checkpoint created at step 3 with Snapshot ID: ${name}:ckpt-step-3`));
    assert.equal(log[0], 'Fine-tuning job started');
    assert.deepEqual(log.slice(-2), [`New fine-tuned model created: ${done.fine_tuned_model}`, 'The job has successfully completed']);
  });

  it('fails the job with the runner’s error', async () => {
    const job = await queuedJob(store);
    startWorker(async () => {
      throw Object.assign(new Error('ran out of memory'), { code: 'out_of_memory' });
    });
    await waitFor(() => statusOf(job.id), (s) => s === 'failed');
    const failed = (await store.jobs.get(job.id))!;
    assert.deepEqual(failed.error, { code: 'out_of_memory', message: 'ran out of memory', param: null });
    assert.match((await messages(job.id)).at(-1)!, /The job failed: ran out of memory/);
  });

  it('a job failing after its final checkpoint keeps it as a step checkpoint, with no model of that name', async () => {
    const job = await queuedJob(store);
    startWorker(async (_job, ctx) => {
      await ctx.checkpoint(2, { step: 2, train_loss: 0.5 }, null, { final: true });
      throw new Error('could not write the result file');
    });
    await waitFor(() => statusOf(job.id), (s) => s === 'failed');
    const [checkpoint] = (await store.checkpoints.listForJob(job.id, { limit: 10 })).data;
    assert.match(checkpoint.fine_tuned_model_checkpoint, /:ckpt-step-2$/);
    assert.equal(await store.checkpoints.getByName(checkpoint.fine_tuned_model_checkpoint.replace(/:ckpt-step-2$/, '')), undefined);
    assert.equal((await store.models.list('org-a')).length, 0);
  });

  it('cancel reaches the running job’s AbortSignal and the cancelled status stands', async () => {
    const runner = new NonTrainingRunner();
    const job = await queuedJob(store, 'org-a', { metadata: { mode: 'hold' } });
    startWorker(runner.runJob);
    await waitFor(async () => runner.isHolding(job.id), Boolean);
    await applyJobAction(store, job.id, 'cancel', { event: jobEvents.cancelled() });
    await waitFor(async () => runner.aborted.includes(job.id), Boolean);
    // The worker finished handling the abort without touching the status.
    await waitFor(async () => workers[0]['running'].size === 0, Boolean);
    assert.equal(await statusOf(job.id), 'cancelled');
    assert.equal((await store.jobs.get(job.id))!.error, null);
  });

  it('a stopping worker hands its job back to the queue for another worker', async () => {
    const runner = new NonTrainingRunner();
    const job = await queuedJob(store, 'org-a', { metadata: { mode: 'hold' } });
    const first = startWorker(runner.runJob, { workerId: 'first' });
    await waitFor(async () => runner.isHolding(job.id), Boolean);
    await first.stop();
    assert.equal(await statusOf(job.id), 'queued');
    startWorker(runner.runJob, { workerId: 'second' });
    await waitFor(async () => runner.timesStarted(job.id) === 2 && runner.isHolding(job.id), Boolean);
    assert.equal((await store.jobs.get(job.id))!.worker_id, 'second');
    runner.release(job.id);
    await waitFor(() => statusOf(job.id), (s) => s === 'succeeded');
  });

  it('takes over a job whose worker died (lease expired)', async () => {
    const job = await queuedJob(store);
    // A worker claims it and dies without ever renewing its short lease.
    await claimNextJob(store, 'dead', { leaseMs: 1, maxRunningPerOrg: 2 });
    const runner = new NonTrainingRunner();
    startWorker(runner.runJob, { workerId: 'alive' });
    await waitFor(() => statusOf(job.id), (s) => s === 'succeeded');
    const log = await messages(job.id);
    assert.ok(log.some((m) => /stopped responding/.test(m)));
    assert.equal((await store.jobs.get(job.id))!.attempts, 2);
  });

  it('gives each job a work folder under DATA_DIR (the local store’s own jobs/<id>)', async () => {
    let dir = '';
    const job = await queuedJob(store);
    startWorker(async (_job, ctx) => {
      dir = ctx.workDir;
      return { trainedTokens: 0 };
    });
    await waitFor(() => statusOf(job.id), (s) => s === 'succeeded');
    assert.ok(dir.startsWith(dataDir) && dir.endsWith(job.id));
    assert.ok(fs.statSync(dir).isDirectory());
  });
});
