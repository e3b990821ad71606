// The whole API surface driven by the official `openai` SDK over real HTTP; every JSON response
// is validated against spec/openai-openapi.json by the test server's recording fetch. It runs once
// per SQL backend (SQLite, and PostgreSQL where TEST_DATABASE_URL is set).
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after, before, it } from 'node:test';
import { toFile } from 'openai';
import { BASE_MODEL, chatJsonl, startTestServer, waitFor, type TestServer } from '../support/server.ts';
import { describeOnEachBackend } from '../support/database.ts';
import { MADE_UP_RESULT_CSV, NonTrainingRunner, madeUpMetrics } from '../support/runners.ts';

const KEYS = { a: 'sk-org-a-0123456789', b: 'sk-org-b-0123456789', admin: 'sk-admin-a-0123456789' };

describeOnEachBackend('openai SDK against tuneforge', (backend) => {
  let server: TestServer;
  const runner = new NonTrainingRunner();

  before(async () => {
    server = await startTestServer(
      { backend, env: { API_KEYS: `${KEYS.a}:org-a,${KEYS.b}:org-b`, ADMIN_API_KEYS: `${KEYS.admin}:org-a` }, queue: { leaseMs: 10_000, heartbeatMs: 50, pollMs: 20 } },
      { runJob: runner.runJob },
    );
  });
  after(async () => {
    await server?.close();
  });

  const a = () => server.client(KEYS.a);
  const waitForStatus = (id: string, statuses: string[]) =>
    waitFor(() => a().fineTuning.jobs.retrieve(id), (job) => statuses.includes(job.status));

  let trainingFileId = '';
  let fineTunedModel = '';
  let checkpointName = '';

  it('lists base models', async () => {
    const models = await a().models.list();
    assert.ok(models.data.some((m) => m.id === BASE_MODEL && m.object === 'model'));
    const model = await a().models.retrieve(BASE_MODEL);
    assert.equal(model.id, BASE_MODEL);
  });

  it('uploads, lists, retrieves and downloads a file', async () => {
    const content = chatJsonl(12);
    const file = await a().files.create({ file: await toFile(Buffer.from(content), 'train.jsonl'), purpose: 'fine-tune' });
    assert.match(file.id, /^file-/);
    assert.equal(file.bytes, Buffer.byteLength(content));
    assert.equal(file.filename, 'train.jsonl');
    assert.equal(file.purpose, 'fine-tune');
    trainingFileId = file.id;

    assert.deepEqual((await a().files.retrieve(file.id)).id, file.id);
    const listed = await a().files.list({ purpose: 'fine-tune' });
    assert.ok(listed.data.some((f) => f.id === file.id));
    const downloaded = await (await a().files.content(file.id)).text();
    assert.equal(downloaded, content);
  });

  it('uploads a file in parts, checked against its md5', async () => {
    const content = Buffer.from(chatJsonl(20, 'upload'));
    const half = Math.floor(content.length / 2);
    const upload = await a().uploads.create({ bytes: content.length, filename: 'big.jsonl', mime_type: 'text/jsonl', purpose: 'fine-tune' });
    assert.equal(upload.status, 'pending');
    const p1 = await a().uploads.parts.create(upload.id, { data: await toFile(content.subarray(0, half), 'p1') });
    const p2 = await a().uploads.parts.create(upload.id, { data: await toFile(content.subarray(half), 'p2') });
    assert.equal(p1.object, 'upload.part');
    const md5 = crypto.createHash('md5').update(content).digest('hex');
    const done = await a().uploads.complete(upload.id, { part_ids: [p1.id, p2.id], md5 });
    assert.equal(done.status, 'completed');
    assert.ok(done.file);
    assert.equal(done.file.bytes, content.length);
    assert.equal(await (await a().files.content(done.file.id)).text(), content.toString());

    const other = await a().uploads.create({ bytes: 10, filename: 'x.jsonl', mime_type: 'text/jsonl', purpose: 'fine-tune' });
    assert.equal((await a().uploads.cancel(other.id)).status, 'cancelled');
  });

  it('creates a job that validates, trains and succeeds', async () => {
    const created = await a().fineTuning.jobs.create({
      model: BASE_MODEL,
      training_file: trainingFileId,
      suffix: 'mine',
      seed: 7,
      metadata: { run: 'first' },
      method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 2 } } },
    });
    assert.equal(created.status, 'validating_files');
    assert.equal(created.seed, 7);
    assert.equal(created.organization_id, 'org-a');

    const job = await waitForStatus(created.id, ['succeeded', 'failed']);
    assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
    const hp = job.method?.supervised?.hyperparameters;
    assert.equal(hp?.n_epochs, 2);
    assert.equal(typeof hp?.batch_size, 'number');
    assert.equal(typeof hp?.learning_rate_multiplier, 'number');
    assert.deepEqual(job.hyperparameters, hp);
    assert.match(job.fine_tuned_model ?? '', /^ft:tiny-test:org-a:mine:[A-Za-z0-9]{8}$/);
    // The runner trains nothing: its numbers are made up, and the API must pass them on as they were.
    assert.equal(job.trained_tokens, runner.reported.get(job.id)!.trainedTokens);
    assert.deepEqual(job.result_files, runner.reported.get(job.id)!.resultFiles);
    const resultFile = await a().files.retrieve(job.result_files[0]);
    assert.deepEqual([resultFile.purpose, resultFile.filename], ['fine-tune-results', 'step_metrics.csv']);
    assert.equal(await (await a().files.content(resultFile.id)).text(), MADE_UP_RESULT_CSV);
    fineTunedModel = job.fine_tuned_model!;

    const events = await a().fineTuning.jobs.listEvents(job.id, { limit: 50 });
    const messages = events.data.map((e) => e.message);
    assert.equal(messages[0], 'The job has successfully completed'); // newest first
    assert.equal(messages.at(-1), `Created fine-tuning job: ${job.id}`);
    for (const expected of [
      `Validating training file: ${trainingFileId}`,
      'Files validated, moving job to queued state',
      'Fine-tuning job started',
      `New fine-tuned model created: ${fineTunedModel}`,
    ]) {
      assert.ok(messages.includes(expected), `missing event: ${expected}`);
    }
    // Each step's metrics as an event, the loss printed as OpenAI does (2 decimals), newest first.
    const metricsEvents = events.data.filter((e) => e.type === 'metrics');
    assert.deepEqual(metricsEvents.map((e) => e.message), ['Step 4/4: training loss=0.25', 'Step 3/4: training loss=0.33', 'Step 2/4: training loss=0.50', 'Step 1/4: training loss=1.00']);
    assert.deepEqual(metricsEvents.map((e) => e.data), [4, 3, 2, 1].map((step) => madeUpMetrics(step, 4)));
    const page = await a().fineTuning.jobs.listEvents(job.id, { limit: 2 });
    assert.equal(page.data.length, 2);
    assert.equal(page.has_more, true);
    const next = await a().fineTuning.jobs.listEvents(job.id, { limit: 2, after: page.data[1].id });
    assert.notEqual(next.data[0].id, page.data[1].id);

    // The final checkpoint is the model itself (its name); earlier ones are …:ckpt-step-N.
    const checkpoints = await a().fineTuning.jobs.checkpoints.list(job.id);
    assert.deepEqual(checkpoints.data.map((c) => c.step_number), [4, 2]);
    assert.deepEqual(checkpoints.data.map((c) => c.metrics.train_loss), [0.25, 0.5]);
    assert.equal(checkpoints.data[0].fine_tuned_model_checkpoint, fineTunedModel);
    checkpointName = checkpoints.data[1].fine_tuned_model_checkpoint;
    assert.equal(checkpointName, `${fineTunedModel}:ckpt-step-2`);
    assert.ok(messages.includes(`Checkpoint created at step 4 with Snapshot ID: ${fineTunedModel}`));

    const models = (await a().models.list()).data.map((m) => m.id);
    assert.equal(models.filter((id) => id === fineTunedModel).length, 1, 'the model is listed once');
    assert.ok(models.includes(checkpointName));
    assert.equal((await a().models.retrieve(fineTunedModel)).owned_by, 'org-a');
  });

  it('lists jobs newest first, with a metadata filter', async () => {
    const second = await a().fineTuning.jobs.create({ model: BASE_MODEL, training_file: trainingFileId, metadata: { run: 'second' } });
    await waitForStatus(second.id, ['succeeded']);
    const all = await a().fineTuning.jobs.list();
    assert.equal(all.data[0].id, second.id);
    const filtered = await a().fineTuning.jobs.list({ metadata: { run: 'first' } });
    assert.equal(filtered.data.length, 1);
    assert.equal(filtered.data[0].metadata?.run, 'first');
    assert.equal((await a().fineTuning.jobs.list({ limit: 1 })).has_more, true);
  });

  it('pauses a running job (its signal fires), resumes it and lets it finish', async () => {
    const job = await a().fineTuning.jobs.create({ model: BASE_MODEL, training_file: trainingFileId, metadata: { mode: 'hold' } });
    await waitFor(async () => runner.isHolding(job.id), Boolean);
    const paused = await a().fineTuning.jobs.pause(job.id);
    assert.equal(paused.status, 'paused');
    await waitFor(async () => runner.aborted.includes(job.id), Boolean);
    const resumed = await a().fineTuning.jobs.resume(job.id);
    assert.equal(resumed.status, 'queued');
    await waitFor(async () => runner.timesStarted(job.id) === 2 && runner.isHolding(job.id), Boolean);
    runner.release(job.id);
    const finished = await waitForStatus(job.id, ['succeeded']);
    assert.equal(finished.status, 'succeeded');
    assert.equal(finished.trained_tokens, runner.reported.get(job.id)!.trainedTokens, 'what the run that finished reported');
  });

  it('cancels a running job and its signal fires', async () => {
    const job = await a().fineTuning.jobs.create({ model: BASE_MODEL, training_file: trainingFileId, metadata: { mode: 'hold' } });
    await waitFor(async () => runner.isHolding(job.id), Boolean);
    const cancelled = await a().fineTuning.jobs.cancel(job.id);
    assert.equal(cancelled.status, 'cancelled');
    await waitFor(async () => runner.aborted.includes(job.id), Boolean);
    assert.equal((await a().fineTuning.jobs.retrieve(job.id)).status, 'cancelled');
    const events = await a().fineTuning.jobs.listEvents(job.id);
    assert.equal(events.data[0].message, 'The job has been cancelled');
  });

  it('shares a checkpoint through permissions (admin keys only)', async () => {
    const admin = server.client(KEYS.admin);
    const granted = await admin.fineTuning.checkpoints.permissions.create(checkpointName, { project_ids: ['org-b'] });
    assert.equal(granted.data.length, 1);
    const permission = granted.data[0];
    assert.equal(permission.project_id, 'org-b');
    assert.match(permission.id, /^cp_/);

    const listed = await admin.fineTuning.checkpoints.permissions.list(checkpointName);
    assert.deepEqual(listed.data.map((p) => p.id), [permission.id]);
    assert.ok((await server.client(KEYS.b).models.list()).data.some((m) => m.id === checkpointName));

    await assert.rejects(a().fineTuning.checkpoints.permissions.list(checkpointName), { status: 403 });

    const deleted = await admin.fineTuning.checkpoints.permissions.delete(permission.id, { fine_tuned_model_checkpoint: checkpointName });
    assert.equal(deleted.deleted, true);
    assert.equal((await admin.fineTuning.checkpoints.permissions.list(checkpointName)).data.length, 0);
    assert.ok(!(await server.client(KEYS.b).models.list()).data.some((m) => m.id === checkpointName));
  });

  it('shares the final checkpoint, which is the model itself, by the model’s name', async () => {
    const admin = server.client(KEYS.admin);
    const b = server.client(KEYS.b);
    const [permission] = (await admin.fineTuning.checkpoints.permissions.create(fineTunedModel, { project_ids: ['org-b'] })).data;
    const listed = (await b.models.list()).data.filter((m) => m.id === fineTunedModel);
    assert.deepEqual(listed.map((m) => m.owned_by), ['org-a']);
    assert.equal((await b.models.retrieve(fineTunedModel)).owned_by, 'org-a');
    await assert.rejects(b.models.delete(fineTunedModel), { status: 404 });
    await admin.fineTuning.checkpoints.permissions.delete(permission.id, { fine_tuned_model_checkpoint: fineTunedModel });
  });

  it('keeps organizations apart', async () => {
    const b = server.client(KEYS.b);
    await assert.rejects(b.files.retrieve(trainingFileId), { status: 404 });
    await assert.rejects(b.models.retrieve(fineTunedModel), { status: 404 });
    await assert.rejects(b.models.delete(fineTunedModel), { status: 404 });
    assert.equal((await b.fineTuning.jobs.list()).data.length, 0);
    assert.equal((await b.files.list()).data.length, 0);
  });

  it('deletes a fine-tuned model (its final checkpoint with it) and a file', async () => {
    const deleted = await a().models.delete(fineTunedModel);
    assert.deepEqual(deleted, { id: fineTunedModel, object: 'model', deleted: true });
    await assert.rejects(a().models.retrieve(fineTunedModel), { status: 404 });
    await assert.rejects(a().models.delete(fineTunedModel), { status: 404 });
    await assert.rejects(a().models.delete(BASE_MODEL), { status: 403 });
    // Under the model's name nothing is left: the earlier checkpoint stays a model of its own.
    const models = (await a().models.list()).data.map((m) => m.id);
    assert.ok(!models.includes(fineTunedModel));
    assert.ok(models.includes(checkpointName));
    const job = (await a().fineTuning.jobs.list({ metadata: { run: 'first' } })).data[0];
    const checkpoints = await a().fineTuning.jobs.checkpoints.list(job.id);
    assert.deepEqual(checkpoints.data.map((c) => c.fine_tuned_model_checkpoint), [checkpointName]);

    const file = await a().files.create({ file: await toFile(Buffer.from('{}\n'), 'x.jsonl'), purpose: 'fine-tune' });
    assert.deepEqual(await a().files.delete(file.id), { id: file.id, object: 'file', deleted: true });
    await assert.rejects(a().files.retrieve(file.id), { status: 404 });
  });

  it('validated every JSON response against the spec', () => {
    assert.deepEqual(server.specFailures, []);
    assert.ok(server.exchanges.length > 40);
    const schemas = new Set(server.exchanges.map((e) => e.schema));
    for (const name of [
      'OpenAIFile', 'ListFilesResponse', 'DeleteFileResponse', 'Upload', 'UploadPart', 'FineTuningJob',
      'ListPaginatedFineTuningJobsResponse', 'ListFineTuningJobEventsResponse', 'ListFineTuningJobCheckpointsResponse',
      'ListFineTuningCheckpointPermissionResponse', 'DeleteFineTuningCheckpointPermissionResponse', 'ListModelsResponse',
      'Model', 'DeleteModelResponse', 'ErrorResponse',
    ]) {
      assert.ok(schemas.has(name), `no response checked against ${name}`);
    }
  });
});
