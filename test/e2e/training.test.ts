// End to end with the official SDK over HTTP: the embedded worker trains the bundled tiny model for
// real (a child process per job), and what a user of OpenAI's API looks at is checked: statuses,
// metrics events, pagination, checkpoints, the result CSV, /v1/models, pause/resume, cancel, failure,
// webhooks.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { FsBlobStore } from '../../src/store/blobs.ts';
import { ChatFormatter } from '../../src/engine/data/chat-format.ts';
import { tokenizeDataset } from '../../src/engine/data/dataset.ts';
import { loadTokenizer } from '../../src/engine/data/tokenizer.ts';
import { verifyWebhook } from '../../src/integrations/webhooks.ts';
import type { TestServer } from '../support/server.ts';
import { waitFor } from '../support/server.ts';
import {
  BASE_MODEL, MODELS_DIR, TERMINAL, allEvents, createJob, metricsEvents, startTrainingServer, uploadFiles, waitForStatus, waitForStep,
  TRAIN_JSONL, fakeWandb, webhookReceiver,
} from './support.ts';

describe('training jobs end to end (real engine, tiny model)', () => {
  let server: TestServer;
  let hooks: Awaited<ReturnType<typeof webhookReceiver>>;
  let wandb: Awaited<ReturnType<typeof fakeWandb>>;
  let files: { training: string; validation: string };
  const client = () => server.client();

  before(async () => {
    hooks = await webhookReceiver();
    wandb = await fakeWandb();
    server = await startTrainingServer({ env: hooks.env, wandb: wandb.logger });
    files = await uploadFiles(client());
  });
  after(async () => {
    await server?.close();
    await hooks?.close();
    await wandb?.close();
    assert.deepEqual(server.specFailures, []);
  });

  /** Webhook events received for `jobId`, signatures verified. */
  const webhooksFor = (jobId: string) =>
    hooks.received
      .filter((r) => {
        assert.equal(verifyWebhook(hooks.secret, r.headers, r.body).valid, true);
        return JSON.parse(r.body).data.id === jobId;
      })
      .map((r) => JSON.parse(r.body).type as string);

  it('trains to succeeded: loss falls, events paginate, checkpoints list, result CSV, model listed, webhook', async () => {
    const created = await createJob(client(), files, { n_epochs: 4, batch_size: 4 }, { suffix: 'e2e' });
    assert.equal(created.trained_tokens, null);
    const running = await waitForStatus(client(), created.id, ['running', ...TERMINAL]);
    assert.notEqual(running.status, 'failed', JSON.stringify(running.error));
    const job = await waitForStatus(client(), created.id, TERMINAL);
    assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
    assert.equal(job.estimated_finish, null);
    assert.ok(job.finished_at);
    assert.match(job.fine_tuned_model!, /^ft:tiny-llama:org-local:e2e:[A-Za-z0-9]{8}$/);

    // trained_tokens as OpenAI bills them: epochs × Σ min(context, tokens per example).
    const formatter = new ChatFormatter(loadTokenizer(path.join(MODELS_DIR, BASE_MODEL)));
    const lease = server.store.cache.lease();
    const trainingPath = await lease.file(`files/${files.training}`);
    assert.equal(job.trained_tokens, 4 * tokenizeDataset(trainingPath, formatter, 512).tokenCount);
    lease.release();

    // One metrics event per step, OpenAI's fields, validation at eval steps, full validation at epoch ends.
    const metrics = await metricsEvents(client(), job.id);
    assert.deepEqual(metrics.map((m) => m.step), Array.from({ length: 12 }, (_, i) => i + 1));
    for (const m of metrics) {
      assert.equal(m.total_steps, 12);
      assert.ok(Number.isFinite(m.train_loss) && m.train_mean_token_accuracy >= 0 && m.train_mean_token_accuracy <= 1);
    }
    assert.ok(metrics.some((m) => typeof m.valid_loss === 'number' && typeof m.valid_mean_token_accuracy === 'number'));
    assert.equal(typeof metrics[11].full_valid_loss, 'number');
    assert.equal(typeof metrics[11].full_valid_mean_token_accuracy, 'number');
    assert.ok(metrics[11].train_loss < metrics[0].train_loss - 1, `loss fell: ${metrics.map((m) => m.train_loss.toFixed(2))}`);

    // Lifecycle messages in OpenAI's words, and pagination by `after` / `limit` (newest first).
    const events = await allEvents(client(), job.id);
    const messages = events.map((e) => e.message);
    for (const expected of ['Fine-tuning job started', `New fine-tuned model created: ${job.fine_tuned_model}`, 'The job has successfully completed']) {
      assert.equal(messages.filter((m) => m === expected).length, 1, expected);
    }
    assert.ok(messages.includes('Step 12/12: training loss=' + metrics[11].train_loss.toFixed(2) + ', validation loss=' + metrics[11].valid_loss!.toFixed(2) + ', full validation loss=' + metrics[11].full_valid_loss!.toFixed(2)));
    const first = await client().fineTuning.jobs.listEvents(job.id, { limit: 7 });
    assert.equal(first.data.length, 7);
    assert.equal(first.has_more, true);
    const second = await client().fineTuning.jobs.listEvents(job.id, { limit: 7, after: first.data[6].id });
    assert.deepEqual([...first.data, ...second.data].map((e) => e.id), [...events].reverse().slice(0, 7 + second.data.length).map((e) => e.id));

    // A checkpoint per epoch, the last 3 kept, named …:ckpt-step-N, except the newest: the model itself, by its name.
    const checkpoints = await client().fineTuning.jobs.checkpoints.list(job.id);
    assert.deepEqual(checkpoints.data.map((c) => c.step_number), [12, 9, 6]);
    assert.deepEqual(checkpoints.data.map((c) => c.fine_tuned_model_checkpoint), [job.fine_tuned_model, `${job.fine_tuned_model}:ckpt-step-9`, `${job.fine_tuned_model}:ckpt-step-6`]);
    for (const c of checkpoints.data) {
      assert.equal(c.metrics.step, c.step_number);
      assert.equal(typeof c.metrics.full_valid_loss, 'number');
    }
    const page = await client().fineTuning.jobs.checkpoints.list(job.id, { limit: 1, after: checkpoints.data[0].id });
    assert.deepEqual(page.data.map((c) => c.step_number), [9]);
    assert.equal(messages.filter((m) => m.startsWith('Checkpoint created at step')).length, 4);
    assert.ok(messages.includes(`Checkpoint created at step 12 with Snapshot ID: ${job.fine_tuned_model}`));

    // The model and its checkpoints (except the last, which is the model) are models.
    const models = (await client().models.list()).data.map((m) => m.id);
    assert.equal(models.filter((id) => id === job.fine_tuned_model).length, 1, 'the model is listed once');
    assert.ok(models.includes(`${job.fine_tuned_model}:ckpt-step-9`));
    assert.ok(!models.includes(`${job.fine_tuned_model}:ckpt-step-3`), 'pruned checkpoints are gone');
    assert.equal((await client().models.retrieve(job.fine_tuned_model!)).id, job.fine_tuned_model);
    const record = await server.store.models.get(job.fine_tuned_model!);
    assert.equal(record?.dir, `jobs/${job.id}/checkpoints/step-12`, 'a key of the blob store');
    assert.ok(fs.existsSync(path.join((server.store.blobs as FsBlobStore).pathOf(record.dir!), 'adapter_config.json')));
    assert.equal(record.dir, (await server.store.checkpoints.getByName(job.fine_tuned_model!))?.dir, 'the model is its final checkpoint’s weights');

    // The result file: purpose fine-tune-results, a CSV row per step.
    assert.equal(job.result_files.length, 1);
    const file = await client().files.retrieve(job.result_files[0]);
    assert.equal(file.purpose, 'fine-tune-results');
    const csv = (await (await client().files.content(file.id)).text()).trim().split('\n');
    assert.equal(csv[0], 'step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy');
    const rows = csv.slice(1).map((line) => line.split(','));
    assert.deepEqual(rows.map((r) => Number(r[0])), metrics.map((m) => m.step));
    assert.deepEqual(rows.map((r) => Number(r[1])), metrics.map((m) => m.train_loss));
    assert.deepEqual(rows.map((r) => (r[3] === '' ? undefined : Number(r[3]))), metrics.map((m) => m.valid_loss));

    // Resume points are scratch: gone once the job has succeeded.
    assert.deepEqual(await server.store.blobs.list(`jobs/${job.id}/resume`), []);
    await waitFor(async () => webhooksFor(job.id), (types) => types.length > 0);
    assert.deepEqual(webhooksFor(job.id), ['fine_tuning.job.succeeded']);
  });

  it('pause → resume continues from the resume point with the same losses as an uninterrupted run', async () => {
    const hp = { n_epochs: 3, batch_size: 1 };
    const reference = await createJob(client(), files, hp);
    assert.equal((await waitForStatus(client(), reference.id, TERMINAL)).status, 'succeeded');
    const expected = await metricsEvents(client(), reference.id);
    assert.equal(expected.length, 36);

    const job = await createJob(client(), files, hp);
    await waitForStep(client(), job.id, 5);
    const running = await client().fineTuning.jobs.retrieve(job.id);
    assert.equal(running.status, 'running');
    assert.equal(typeof running.estimated_finish, 'number', 'estimated_finish while running');
    assert.ok(running.estimated_finish! >= running.created_at);
    assert.equal(running.trained_tokens, null);
    const paused = await client().fineTuning.jobs.pause(job.id);
    assert.equal(paused.status, 'paused');
    assert.equal(paused.estimated_finish, null);
    // Released: the worker moves on (a later job runs) while this one stays paused.
    const other = await createJob(client(), files, { n_epochs: 1, batch_size: 4 });
    assert.equal((await waitForStatus(client(), other.id, TERMINAL)).status, 'succeeded');
    const stillPaused = await client().fineTuning.jobs.retrieve(job.id);
    assert.equal(stillPaused.status, 'paused');
    const before = await metricsEvents(client(), job.id);
    assert.ok(before.length < 36, `paused after ${before.length} steps`);

    assert.equal((await client().fineTuning.jobs.resume(job.id)).status, 'queued');
    const done = await waitForStatus(client(), job.id, TERMINAL);
    assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
    const metrics = await metricsEvents(client(), job.id);
    assert.deepEqual(metrics.map((m) => m.step), expected.map((m) => m.step), 'exactly one metrics event per step');
    assert.deepEqual(metrics, expected);
    const messages = (await allEvents(client(), job.id)).map((e) => e.message);
    assert.equal(messages.filter((m) => m === 'Fine-tuning job started').length, 1);
    assert.ok(messages.includes('The job has been paused') && messages.includes('The job has been resumed'));
    assert.deepEqual((await client().fineTuning.jobs.checkpoints.list(job.id)).data.map((c) => c.step_number), [36, 24, 12]);
  });

  it('cancel mid-run: cancelled, training stops, partial artifacts removed, webhook', async () => {
    const job = await createJob(client(), files, { n_epochs: 3, batch_size: 1 });
    await waitForStep(client(), job.id, 13); // past the first epoch: a checkpoint exists
    assert.equal((await client().fineTuning.jobs.checkpoints.list(job.id)).data.length > 0, true);
    const cancelled = await client().fineTuning.jobs.cancel(job.id);
    assert.equal(cancelled.status, 'cancelled');
    // The worker stops within a heartbeat, then removes what the run wrote: its checkpoints and blobs
    // (the blobs alone can be gone before that, when none was written yet under the job's prefix).
    await waitFor(
      async () => ({ keys: await server.store.blobs.list(`jobs/${job.id}`), checkpoints: (await client().fineTuning.jobs.checkpoints.list(job.id)).data }),
      (left) => left.keys.length === 0 && left.checkpoints.length === 0,
    );
    const steps = (await metricsEvents(client(), job.id)).length;
    assert.ok(steps < 36, `stopped after ${steps} steps`);
    assert.deepEqual((await client().fineTuning.jobs.checkpoints.list(job.id)).data, []);
    // The worker is free again and the job stays cancelled.
    const next = await createJob(client(), files, { n_epochs: 1, batch_size: 4 });
    assert.equal((await waitForStatus(client(), next.id, TERMINAL)).status, 'succeeded');
    const after = await client().fineTuning.jobs.retrieve(job.id);
    assert.equal(after.status, 'cancelled');
    assert.equal(after.fine_tuned_model, null);
    assert.equal((await metricsEvents(client(), job.id)).length, steps, 'no step after the cancel was recorded');
    await waitFor(async () => webhooksFor(job.id), (types) => types.length > 0);
    assert.deepEqual(webhooksFor(job.id), ['fine_tuning.job.cancelled']);
  });

  it('a diverging run ends failed with a useful error, never left running', async () => {
    const job = await createJob(client(), { training: files.training }, { n_epochs: 2, batch_size: 4, learning_rate_multiplier: 1e30 });
    const done = await waitForStatus(client(), job.id, TERMINAL);
    assert.equal(done.status, 'failed');
    assert.equal(done.error?.code, 'training_diverged');
    assert.match(done.error!.message, /training loss became/);
    assert.equal(done.estimated_finish, null);
    const events = await allEvents(client(), job.id);
    assert.equal(events[events.length - 1].level, 'error');
    await waitFor(async () => webhooksFor(job.id), (types) => types.length > 0);
    assert.deepEqual(webhooksFor(job.id), ['fine_tuning.job.failed']);
  });

  it('a job failing file validation also sends fine_tuning.job.failed', async () => {
    const bad = await client().files.create({ file: new File([TRAIN_JSONL.split('\n').slice(0, 3).join('\n') + '\n'], 'short.jsonl'), purpose: 'fine-tune' });
    const job = await createJob(client(), { training: bad.id }, { n_epochs: 1, batch_size: 1 });
    const done = await waitForStatus(client(), job.id, TERMINAL);
    assert.equal(done.status, 'failed');
    assert.equal(done.error?.code, 'invalid_n_examples');
    await waitFor(async () => webhooksFor(job.id), (types) => types.length > 0);
    assert.deepEqual(webhooksFor(job.id), ['fine_tuning.job.failed']);
  });

  it('integrations are validated when the job is created, and W&B gets every step', async () => {
    await assert.rejects(
      createJob(client(), files, { n_epochs: 1, batch_size: 4 }, { integrations: [{ type: 'wandb', wandb: { project: 'bad/name' } }] }),
      (err: { status?: number; param?: string }) => err.status === 400 && typeof err.param === 'string' && err.param.startsWith('integrations'),
    );
    const job = await createJob(client(), files, { n_epochs: 1, batch_size: 4 }, { integrations: [{ type: 'wandb', wandb: { project: 'tuneforge', tags: ['e2e'] } }] });
    assert.deepEqual(job.integrations, [{ type: 'wandb', wandb: { project: 'tuneforge', tags: ['e2e'] } }]);
    assert.equal((await waitForStatus(client(), job.id, TERMINAL)).status, 'succeeded');
    await waitFor(async () => wandb.finished(job.id), (body) => body !== undefined);
    const create = wandb.requests.find((p) => p.path === '/graphql' && p.body.variables.name === job.id)!;
    assert.equal(create.body.variables.project, 'tuneforge');
    assert.ok(create.body.variables.tags.includes('e2e'));
    const metrics = await metricsEvents(client(), job.id);
    assert.deepEqual(wandb.history(job.id).map((line) => [line._step, line.train_loss]), metrics.map((m) => [m.step, m.train_loss]));
    assert.deepEqual(wandb.finished(job.id), { complete: true, exitcode: 0 });
    assert.deepEqual(wandb.refused, [], 'requests W&B would refuse');
  });
});
