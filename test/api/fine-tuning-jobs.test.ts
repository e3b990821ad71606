// Job creation rules, file validation outcomes and the state machine, without a worker
// (jobs stop at `queued`, as in a server with no trainer).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { toFile } from 'openai';
import { openStore } from '../../src/store/index.ts';
import { describeOnEachBackend } from '../support/database.ts';
import { NonTrainingRunner } from '../support/runners.ts';
import { BASE_MODEL, chatJsonl, expectError, form, json, startTestServer, waitFor, type TestServer } from '../support/server.ts';

const A = { key: 'sk-a' };
/** A grader the route schema and the grader rules accept. */
const GRADER = { type: 'string_check', name: 'eq', input: '{{sample.output_text}}', reference: '{{item.answer}}', operation: 'eq' };
const B = { key: 'sk-b' };

describe('fine-tuning jobs: bad input and transitions', () => {
  let server: TestServer;
  let good = '';
  let resultsFile = '';
  before(async () => {
    server = await startTestServer({ env: { API_KEYS: 'sk-a:org-a,sk-b:org-b' } });
    good = await uploadFile(chatJsonl(12));
  });
  after(() => server.close());

  async function uploadFile(content: string, auth = A): Promise<string> {
    const res = await server.request('POST', '/v1/files', { ...auth, ...form({ purpose: 'fine-tune' }, { field: 'file', name: 't.jsonl', content }) });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body.id;
  }
  const create = (body: Record<string, unknown>, auth = A) =>
    server.request('POST', '/v1/fine_tuning/jobs', { ...auth, ...json({ model: BASE_MODEL, training_file: good, ...body }) });
  const job = (id: string) => server.request('GET', `/v1/fine_tuning/jobs/${id}`, A).then((r) => r.body);
  const settled = (id: string) => waitFor(() => job(id), (j) => j.status !== 'validating_files');
  const action = (id: string, verb: string, auth = A) => server.request('POST', `/v1/fine_tuning/jobs/${id}/${verb}`, auth);

  it('requires model and training_file and rejects unknown arguments', async () => {
    expectError(await server.request('POST', '/v1/fine_tuning/jobs', { ...A, ...json({ training_file: good }) }), 400, { param: 'model' });
    expectError(await server.request('POST', '/v1/fine_tuning/jobs', { ...A, ...json({ model: BASE_MODEL }) }), 400, { param: 'training_file' });
    expectError(await create({ temperature: 1 }), 400, { param: 'temperature', message: /Unrecognized request argument/ });
  });

  it('rejects unknown models and files that cannot be used', async () => {
    expectError(await create({ model: 'gpt-4o-mini' }), 400, { param: 'model', code: 'model_not_available' });
    expectError(await create({ training_file: 'file-nope' }), 400, { param: 'training_file' });
    expectError(await create({ validation_file: 'file-nope' }), 400, { param: 'validation_file' });
    const othersFile = await uploadFile(chatJsonl(12), B);
    expectError(await create({ training_file: othersFile }), 400, { param: 'training_file' });
    // a result file (purpose fine-tune-results) cannot train
    const done = await server.store.files.insert({
      id: 'file-results000000000000000', organization_id: 'org-a', filename: 'step_metrics.csv', purpose: 'fine-tune-results',
      bytes: 1, created_at: 1, expires_at: null, status: 'processed', status_details: null,
    });
    resultsFile = done.id;
    expectError(await create({ training_file: resultsFile }), 400, { param: 'training_file', code: 'invalid_file_purpose' });
  });

  it('takes only .jsonl files for training and validation', async () => {
    // Uploads refuse such names now; a row stored before that rule still has one.
    const csv = await server.store.files.insert({
      id: 'file-csv00000000000000000000', organization_id: 'org-a', filename: 'train.csv', purpose: 'fine-tune',
      bytes: 1, created_at: 1, expires_at: null, status: 'processed', status_details: null,
    });
    const message = /must be a \.jsonl file/;
    expectError(await create({ training_file: csv.id }), 400, { param: 'training_file', code: 'invalid_file_format', message });
    expectError(await create({ validation_file: csv.id }), 400, { param: 'validation_file', code: 'invalid_file_format', message });
    const upper = await server.request('POST', '/v1/files', { ...A, ...form({ purpose: 'fine-tune' }, { field: 'file', name: 'TRAIN.JSONL', content: chatJsonl(12) }) });
    assert.equal(upper.status, 200, JSON.stringify(upper.body));
    assert.equal((await create({ training_file: upper.body.id })).status, 200);
  });

  it('rejects out-of-range hyperparameters, naming the param', async () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ hyperparameters: { n_epochs: 0 } }, 'hyperparameters.n_epochs'],
      [{ hyperparameters: { n_epochs: 51 } }, 'hyperparameters.n_epochs'],
      [{ hyperparameters: { batch_size: 257 } }, 'hyperparameters.batch_size'],
      [{ hyperparameters: { learning_rate_multiplier: 0 } }, 'hyperparameters.learning_rate_multiplier'],
      [{ hyperparameters: { n_epochs: 'many' } }, 'hyperparameters.n_epochs'],
      [{ method: { type: 'supervised', supervised: { hyperparameters: { batch_size: 0 } } } }, 'method.supervised.hyperparameters.batch_size'],
      [{ method: { type: 'dpo', dpo: { hyperparameters: { beta: 3 } } } }, 'method.dpo.hyperparameters.beta'],
      [{ method: { type: 'supervised', supervised: { hyperparameters: { beta: 0.1 } } } }, 'method.supervised.hyperparameters.beta'],
      [{ method: { type: 'unsupervised' } }, 'method.type'],
      [{ method: { type: 'reinforcement', reinforcement: {} } }, 'method.reinforcement.grader'],
    ];
    // Ranges and shapes as OpenAI's spec gives them (the route schema), each naming its param.
    const sup = (hyperparameters: unknown) => ({ method: { type: 'supervised', supervised: { hyperparameters } } });
    const p = 'method.supervised.hyperparameters';
    for (const bad of [0, 51, 2.5, '3', true, -1]) cases.push([sup({ n_epochs: bad }), `${p}.n_epochs`]);
    for (const bad of [0, 257, 1.5, 'big']) cases.push([sup({ batch_size: bad }), `${p}.batch_size`]);
    for (const bad of [0, -0.1, 'x']) cases.push([sup({ learning_rate_multiplier: bad }), `${p}.learning_rate_multiplier`]);
    for (const bad of [0, -1, 2.01, 'high']) cases.push([{ method: { type: 'dpo', dpo: { hyperparameters: { beta: bad } } } }, 'method.dpo.hyperparameters.beta']);
    const rft = (hyperparameters: unknown) => ({ method: { type: 'reinforcement', reinforcement: { grader: GRADER, hyperparameters } } });
    const r = 'method.reinforcement.hyperparameters';
    for (const bad of [0, 10.5, -2]) cases.push([rft({ compute_multiplier: bad }), `${r}.compute_multiplier`]);
    for (const bad of [0, 1.5]) cases.push([rft({ eval_interval: bad }), `${r}.eval_interval`]);
    for (const bad of [0, -3]) cases.push([rft({ eval_samples: bad }), `${r}.eval_samples`]);
    cases.push([rft({ reasoning_effort: 'extreme' }), `${r}.reasoning_effort`], [rft({ n_epochs: 0 }), `${r}.n_epochs`]);
    cases.push(
      [{ hyperparameters: 'auto' }, 'hyperparameters'],
      [{ hyperparameters: { beta: 0.1 } }, 'hyperparameters.beta'],
      [{ hyperparameters: { constructor: 1 } }, 'hyperparameters.constructor'],
      [{ method: 'supervised' }, 'method'],
      [{ method: {} }, 'method.type'],
      [{ method: { type: 'supervised', extra: 1 } }, 'method.extra'],
      [{ method: { type: 'supervised', supervised: [] } }, 'method.supervised'],
      [{ method: { type: 'supervised', supervised: { grader: GRADER } } }, 'method.supervised.grader'],
      [{ method: { type: 'dpo', dpo: { hyperparameters: 5 } } }, 'method.dpo.hyperparameters'],
      [{ method: { type: 'supervised', dpo: {} } }, 'method.dpo'],
      [{ method: { type: 'reinforcement' } }, 'method.reinforcement.grader'],
      [{ method: { type: 'reinforcement', reinforcement: { grader: 'eq' } } }, 'method.reinforcement.grader'],
      [{ hyperparameters: { n_epochs: 3 }, method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 4 } } } }, 'hyperparameters'],
    );
    for (const [body, param] of cases) expectError(await create(body), 400, { param });
  });

  it("checks integrations against OpenAI's spec and W&B's naming rules, naming the param", async () => {
    const full = { type: 'wandb', wandb: { project: 'my-wandb-project', name: 'ft-run-display-name', entity: 'my-team', tags: ['custom-tag', 'x'.repeat(64)] } };
    const minimal = { type: 'wandb', wandb: { project: 'p' } };
    const nulls = { type: 'wandb', wandb: { project: 'p', name: null, entity: null } };
    const accepted = await create({ integrations: [full, minimal, nulls] });
    assert.equal(accepted.status, 200, JSON.stringify(accepted.body));
    assert.deepEqual(accepted.body.integrations, [full, minimal, nulls]);
    const wandb = (settings: Record<string, unknown>) => [{ type: 'wandb', wandb: { project: 'p', ...settings } }];
    const cases: [unknown, string][] = [
      [{ type: 'wandb' }, 'integrations'],
      [Array(6).fill(minimal), 'integrations'],
      [['wandb'], 'integrations[0]'],
      [[{ wandb: { project: 'p' } }], 'integrations[0].type'],
      [[{ type: 'mlflow', wandb: { project: 'p' } }], 'integrations[0].type'],
      [[{ type: 'wandb' }], 'integrations[0].wandb'],
      [[{ type: 'wandb', wandb: 'p' }], 'integrations[0].wandb'],
      [[{ type: 'wandb', wandb: { project: 'p' }, extra: 1 }], 'integrations[0].extra'],
      [[{ type: 'wandb', wandb: { name: 'n' } }], 'integrations[0].wandb.project'],
      [wandb({ project: 42 }), 'integrations[0].wandb.project'],
      [wandb({ project: '' }), 'integrations[0].wandb.project'],
      [wandb({ project: 'p'.repeat(129) }), 'integrations[0].wandb.project'],
      [wandb({ project: 'team/project' }), 'integrations[0].wandb.project'],
      [wandb({ entity: 'a:b' }), 'integrations[0].wandb.entity'],
      [wandb({ name: 7 }), 'integrations[0].wandb.name'],
      [wandb({ tags: 'one' }), 'integrations[0].wandb.tags'],
      [wandb({ tags: ['ok', 3] }), 'integrations[0].wandb.tags[1]'],
      [wandb({ tags: ['x'.repeat(65)] }), 'integrations[0].wandb.tags[0]'],
      [wandb({ tags: [''] }), 'integrations[0].wandb.tags[0]'],
      [wandb({ colour: 'red' }), 'integrations[0].wandb.colour'],
      [[minimal, { type: 'wandb', wandb: {} }], 'integrations[1].wandb.project'],
    ];
    for (const [integrations, param] of cases) expectError(await create({ integrations }), 400, { param });
  });

  it('enforces metadata, suffix and seed limits', async () => {
    const many = Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 'v']));
    expectError(await create({ metadata: many }), 400, { param: 'metadata' });
    expectError(await create({ metadata: { ['k'.repeat(65)]: 'v' } }), 400, { param: 'metadata' });
    // A value's error names its key, as OpenAI's errors name nested params.
    expectError(await create({ metadata: { k: 'v'.repeat(513) } }), 400, { param: 'metadata.k' });
    expectError(await create({ metadata: { k: 1 } }), 400, { param: 'metadata.k' });
    expectError(await create({ metadata: ['a'] }), 400, { param: 'metadata' });
    for (const bad of ['a/b', 'a b', 'é', 'a?b']) expectError(await create({ suffix: bad }), 400, { param: 'suffix' });
    expectError(await create({ suffix: 's'.repeat(65) }), 400, { param: 'suffix' });
    expectError(await create({ suffix: '' }), 400, { param: 'suffix' });
    expectError(await create({ suffix: 'a:b' }), 400, { param: 'suffix' });
    expectError(await create({ seed: -1 }), 400, { param: 'seed' });
    expectError(await create({ seed: 2 ** 31 }), 400, { param: 'seed' });
    for (const bad of [1.5, '42', true]) expectError(await create({ seed: bad }), 400, { param: 'seed' });
  });

  it('generates a seed and resolves auto hyperparameters once files are valid', async () => {
    const res = await create({ suffix: 'ok', metadata: { team: 'x' } });
    assert.equal(res.status, 200);
    assert.equal(res.body.status, 'validating_files');
    assert.equal(Number.isInteger(res.body.seed), true);
    const queued = await settled(res.body.id);
    assert.equal(queued.status, 'queued');
    assert.deepEqual(queued.method.supervised.hyperparameters, queued.hyperparameters);
    // 12 examples: n_epochs = min(25, 100 // 12) = 8, batch 1
    assert.equal(queued.hyperparameters.n_epochs, 8);
    assert.equal(queued.hyperparameters.batch_size, 1);
    assert.equal(typeof queued.hyperparameters.learning_rate_multiplier, 'number');
  });

  it('fails a job whose training file breaks the rules, naming the line', async () => {
    const tooFew = await uploadFile(chatJsonl(3));
    const j1 = await settled((await create({ training_file: tooFew })).body.id);
    assert.equal(j1.status, 'failed');
    assert.equal(j1.error.param, 'training_file');
    assert.match(j1.error.message, /3 example/);

    const lines = chatJsonl(12).split('\n');
    lines[4] = '{"messages": [{"role": "wizard", "content": "hi"}]}';
    const bad = await uploadFile(lines.join('\n'));
    const j2 = await settled((await create({ training_file: bad })).body.id);
    assert.equal(j2.status, 'failed');
    assert.equal(j2.error.code, 'invalid_training_file');
    assert.equal(j2.error.param, 'training_file');
    assert.match(j2.error.message, /5/);
    assert.ok(typeof j2.finished_at === 'number');

    const j3 = await settled((await create({ validation_file: bad })).body.id);
    assert.equal(j3.status, 'failed');
    assert.equal(j3.error.code, 'invalid_validation_file');
    assert.equal(j3.error.param, 'validation_file');
  });

  it('fails a job whose validation file is not in the training file’s format', async () => {
    const promptCompletion = await uploadFile(JSON.stringify({ prompt: 'Question?', completion: 'Answer.' }) + '\n');
    const j1 = await settled((await create({ validation_file: promptCompletion })).body.id);
    assert.equal(j1.status, 'failed');
    assert.equal(j1.error.code, 'invalid_validation_file');
    assert.equal(j1.error.param, 'validation_file');
    assert.match(j1.error.message, /Example 1 uses the prompt\/completion format, but the training file uses the chat format/);

    const preference = await uploadFile(
      JSON.stringify({
        input: { messages: [{ role: 'user', content: 'Hi' }] },
        preferred_output: [{ role: 'assistant', content: 'Hello.' }],
        non_preferred_output: [{ role: 'assistant', content: 'What?' }],
      }) + '\n',
    );
    const j2 = await settled((await create({ validation_file: preference })).body.id);
    assert.equal(j2.status, 'failed');
    assert.equal(j2.error.code, 'invalid_validation_file');
    assert.equal(j2.error.param, 'validation_file');
    assert.match(j2.error.message, /Example 1 uses the preference format/);
  });

  it('reports dataset warnings as warn events, one per kind of problem', async () => {
    // 12 examples: 3 without a user message, all without a system message, 1 with an unknown key.
    const examples = chatJsonl(12).trim().split('\n').map((line) => JSON.parse(line));
    const without = (example: any, role: string) => (example.messages = example.messages.filter((m: { role: string }) => m.role !== role));
    for (const example of examples) without(example, 'system');
    for (const i of [2, 5, 9]) without(examples[i], 'user');
    examples[7].source = 'web';
    const training = await uploadFile(examples.map((e) => JSON.stringify(e)).join('\n') + '\n');
    const validation = await uploadFile(examples.slice(0, 2).map((e) => JSON.stringify(e)).join('\n') + '\n');
    const { body } = await create({ training_file: training, validation_file: validation });
    assert.equal((await settled(body.id)).status, 'queued');
    const events = (await server.request('GET', `/v1/fine_tuning/jobs/${body.id}/events?limit=100`, A)).body.data;
    const warnings = events.filter((e: any) => e.level === 'warn');
    assert.ok(warnings.every((e: any) => e.type === 'message' && e.object === 'fine_tuning.job.event'));
    assert.deepEqual(warnings.map((e: any) => e.message).sort(), [
      `Training file ${training}: 1 example(s) have keys other than messages, tools, parallel_tool_calls, functions, which are ignored (first: example 8)`,
      `Training file ${training}: 12 example(s) have no system message (first: example 1)`,
      `Training file ${training}: 3 example(s) have no user message (first: example 3)`,
      `Validation file ${validation}: 2 example(s) have no system message (first: example 1)`,
    ]);
    // Reported before the job moves on (events are listed newest first).
    const order = events.map((e: any) => e.message);
    assert.ok(order.indexOf('Files validated, moving job to queued state') < order.indexOf(warnings[0].message));

    // A clean file gives none.
    const clean = (await create({})).body.id;
    await settled(clean);
    const cleanEvents = (await server.request('GET', `/v1/fine_tuning/jobs/${clean}/events`, A)).body.data;
    assert.deepEqual(cleanEvents.filter((e: any) => e.level === 'warn'), []);
  });

  it('answers 404 for unknown jobs and other organizations’ jobs', async () => {
    const { body } = await create({});
    for (const [id, auth] of [['ftjob-nope', A], [body.id, B]] as const) {
      expectError(await server.request('GET', `/v1/fine_tuning/jobs/${id}`, auth), 404, { param: 'fine_tuning_job_id' });
      for (const verb of ['cancel', 'pause', 'resume']) expectError(await action(id, verb, auth), 404);
      expectError(await server.request('GET', `/v1/fine_tuning/jobs/${id}/events`, auth), 404);
      expectError(await server.request('GET', `/v1/fine_tuning/jobs/${id}/checkpoints`, auth), 404);
    }
    const list = await server.request('GET', '/v1/fine_tuning/jobs', B);
    assert.ok(list.body.data.every((j: any) => j.organization_id === 'org-b'));
  });

  it('allows only legal transitions and says why', async () => {
    const { body } = await create({});
    const queued = await settled(body.id);
    assert.equal(queued.status, 'queued');
    assert.equal(queued.finished_at, null);
    expectError(await action(body.id, 'pause'), 400, { code: 'invalid_job_status', message: /Cannot pause a job with status queued/ });
    expectError(await action(body.id, 'resume'), 400, { code: 'invalid_job_status', message: /status queued/ });
    const cancelled = await action(body.id, 'cancel');
    assert.equal(cancelled.status, 200);
    assert.equal(cancelled.body.status, 'cancelled');
    assert.equal(typeof cancelled.body.finished_at, 'number');
    assert.ok(cancelled.body.finished_at >= queued.created_at);
    assert.equal((await job(body.id)).finished_at, cancelled.body.finished_at);
    expectError(await action(body.id, 'cancel'), 400, { code: 'invalid_job_status', message: /already been cancelled/ });
    expectError(await action(body.id, 'resume'), 400, { code: 'invalid_job_status' });
    const events = await server.request('GET', `/v1/fine_tuning/jobs/${body.id}/events`, A);
    assert.equal(events.body.data[0].message, 'The job has been cancelled');
  });

  it('shows a job as it is stored now after another process wrote it, retrieved and listed', async () => {
    const { body } = await create({ metadata: { experiment: 'rewritten' } });
    await settled(body.id);
    const listed = () => server.request('GET', '/v1/fine_tuning/jobs?metadata[experiment]=rewritten', A).then((r) => r.body.data[0]);
    assert.equal((await listed()).estimated_finish, null);
    assert.equal((await job(body.id)).trained_tokens, null);
    // The server's own connection writes it (answers it gave before are not given again)…
    await server.store.jobs.update(body.id, { trained_tokens: 7 });
    assert.equal((await job(body.id)).trained_tokens, 7);
    assert.equal((await listed()).trained_tokens, 7);
    // …and a worker process writes it through its own connection.
    const worker = await openStore({ dataDir: server.dataDir, databaseUrl: server.config.databaseUrl });
    try {
      await worker.jobs.update(body.id, { estimated_finish: 1234, trained_tokens: 56 });
    } finally {
      await worker.close();
    }
    for (const shown of [await job(body.id), await listed()]) {
      assert.equal(shown.estimated_finish, 1234);
      assert.equal(shown.trained_tokens, 56);
    }
  });

  it('filters jobs by metadata and by the absence of metadata', async () => {
    const tagged = (await create({ metadata: { experiment: 'filter-me' } })).body.id;
    const res = await server.request('GET', '/v1/fine_tuning/jobs?metadata[experiment]=filter-me', A);
    assert.deepEqual(res.body.data.map((j: any) => j.id), [tagged]);
    const none = await server.request('GET', '/v1/fine_tuning/jobs?metadata=null&limit=100', A);
    assert.ok(none.body.data.length > 0);
    assert.ok(none.body.data.every((j: any) => j.metadata === null));
    expectError(await server.request('GET', '/v1/fine_tuning/jobs?limit=0', A), 400, { param: 'limit' });
    expectError(await server.request('GET', '/v1/fine_tuning/jobs?metadata=none', A), 400, { param: 'metadata', code: 'invalid_value' });
    expectError(await server.request('GET', '/v1/fine_tuning/jobs?colour=red', A), 400, { param: 'colour', code: 'unknown_parameter' });
  });

  it("rejects unknown query keys on a job's events and checkpoints lists", async () => {
    const { body } = await create({});
    for (const list of ['events', 'checkpoints']) {
      assert.equal((await server.request('GET', `/v1/fine_tuning/jobs/${body.id}/${list}?limit=1`, A)).status, 200);
      expectError(await server.request('GET', `/v1/fine_tuning/jobs/${body.id}/${list}?limit=1&colour=red`, A), 400, { param: 'colour', code: 'unknown_parameter' });
    }
  });
});

describe('fine-tuning jobs: cancelling a running job', () => {
  it('sets finished_at, and the worker stopping the run leaves it', async () => {
    const runner = new NonTrainingRunner();
    const server = await startTestServer(
      { env: { API_KEYS: 'sk-a:org-a' }, queue: { leaseMs: 10_000, heartbeatMs: 50, pollMs: 20 } },
      { runJob: runner.runJob },
    );
    try {
      const client = server.client(A.key);
      const file = await client.files.create({ file: await toFile(Buffer.from(chatJsonl(12)), 'train.jsonl'), purpose: 'fine-tune' });
      const created = await client.fineTuning.jobs.create({ model: BASE_MODEL, training_file: file.id, metadata: { mode: 'hold' } });
      await waitFor(async () => runner.isHolding(created.id), Boolean);
      assert.equal((await client.fineTuning.jobs.retrieve(created.id)).finished_at, null);
      const cancelled = await client.fineTuning.jobs.cancel(created.id);
      assert.equal(cancelled.status, 'cancelled');
      assert.equal(typeof cancelled.finished_at, 'number');
      // The worker sees the cancel within a heartbeat and stops the run; it runs one job at a time, so
      // once a later job has succeeded it is done with the cancelled one.
      await waitFor(async () => runner.aborted.includes(created.id), Boolean);
      const next = await client.fineTuning.jobs.create({ model: BASE_MODEL, training_file: file.id });
      await waitFor(() => client.fineTuning.jobs.retrieve(next.id), (j) => j.status === 'succeeded');
      const later = await client.fineTuning.jobs.retrieve(created.id);
      assert.equal(later.status, 'cancelled');
      assert.equal(later.finished_at, cancelled.finished_at);
      assert.deepEqual(server.specFailures, []);
    } finally {
      await server.close();
    }
  });
});

describeOnEachBackend('fine-tuning jobs: daily limit per organization', (backend) => {
  it('answers 429 daily_rate_limit_exceeded past MAX_JOBS_PER_DAY_PER_ORG jobs in 24 hours', async () => {
    const server = await startTestServer({ backend, env: { API_KEYS: 'sk-a:org-a,sk-b:org-b', MAX_JOBS_PER_DAY_PER_ORG: '2' } });
    try {
      const upload = async (auth: { key: string }) =>
        (await server.request('POST', '/v1/files', { ...auth, ...form({ purpose: 'fine-tune' }, { field: 'file', name: 't.jsonl', content: chatJsonl(12) }) })).body.id;
      const create = (file: string, auth = A) => server.request('POST', '/v1/fine_tuning/jobs', { ...auth, ...json({ model: BASE_MODEL, training_file: file }) });
      const fileA = await upload(A);
      // A job created 25 hours ago no longer counts.
      const dayAgo = Math.floor(Date.now() / 1000) - 25 * 3600;
      await server.store.jobs.insert({
        id: 'ftjob-old', organization_id: 'org-a', model: BASE_MODEL, training_file: fileA, validation_file: null, status: 'succeeded',
        method: { type: 'supervised', supervised: {} }, suffix: null, seed: 1, metadata: null, integrations: null, created_at: dayAgo,
      });
      // Six requests at once for the two jobs left: two are created, four refused.
      const statuses = (await Promise.all(Array.from({ length: 6 }, () => create(fileA)))).map((r) => r.status);
      assert.deepEqual(statuses.sort(), [200, 200, 429, 429, 429, 429]);
      const refused = await create(fileA);
      expectError(refused, 429, { code: 'daily_rate_limit_exceeded', param: null, message: /limit is 2\. Try again after \d{4}-/ });
      assert.equal(refused.body.error.type, 'rate_limit_error');
      const listed = await server.request('GET', '/v1/fine_tuning/jobs', A);
      assert.equal(listed.body.data.length, 3, 'the refused request created nothing');
      // Each organization has its own count.
      assert.equal((await create(await upload(B), B)).status, 200);
    } finally {
      await server.close();
    }
  });
});

describe('fine-tuning jobs: request bodies', () => {
  it('treats an empty JSON body as none and rejects malformed or non-object JSON', async () => {
    const server = await startTestServer({ env: { API_KEYS: 'sk-a:org-a' } });
    try {
      const headers = { 'content-type': 'application/json' };
      expectError(await server.request('POST', '/v1/fine_tuning/jobs/ftjob-x/cancel', { ...A, headers, body: '' }), 404);
      expectError(await server.request('POST', '/v1/fine_tuning/jobs', { ...A, headers, body: '{"model":' }), 400, { code: 'invalid_json' });
      expectError(await server.request('POST', '/v1/fine_tuning/jobs', { ...A, headers, body: '[1,2]' }), 400);
      expectError(await server.request('POST', '/v1/fine_tuning/jobs', { ...A, headers, body: '' }), 400);
      expectError(await server.request('POST', '/v1/fine_tuning/jobs', { ...A, headers, body: '{"__proto__":{"x":1},"model":"m","training_file":"f"}' }), 400);
      expectError(await server.request('POST', '/v1/fine_tuning/jobs', { ...A, headers: { 'content-type': 'text/plain' }, body: 'hi' }), 400, { message: /JSON object/ });
      expectError(await server.request('POST', '/v1/fine_tuning/jobs', { ...A, headers: { 'content-type': 'application/xml' }, body: '<a/>' }), 415);
    } finally {
      await server.close();
    }
  });
});
