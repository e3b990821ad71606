// Job creation rules, file validation outcomes and the state machine, without a worker
// (jobs stop at `queued`, as in a server with no trainer).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { BASE_MODEL, chatJsonl, expectError, form, json, startTestServer, waitFor, type TestServer } from '../support/server.ts';

const A = { key: 'sk-a' };
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
    for (const [body, param] of cases) expectError(await create(body), 400, { param });
  });

  it('enforces metadata, suffix and seed limits', async () => {
    const many = Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 'v']));
    expectError(await create({ metadata: many }), 400, { param: 'metadata' });
    expectError(await create({ metadata: { ['k'.repeat(65)]: 'v' } }), 400, { param: 'metadata' });
    expectError(await create({ metadata: { k: 'v'.repeat(513) } }), 400, { param: 'metadata' });
    expectError(await create({ metadata: { k: 1 } }), 400, { param: 'metadata' });
    expectError(await create({ suffix: 's'.repeat(65) }), 400, { param: 'suffix' });
    expectError(await create({ suffix: '' }), 400, { param: 'suffix' });
    expectError(await create({ suffix: 'a:b' }), 400, { param: 'suffix' });
    expectError(await create({ seed: -1 }), 400, { param: 'seed' });
    expectError(await create({ seed: 2 ** 31 }), 400, { param: 'seed' });
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
    expectError(await action(body.id, 'pause'), 400, { code: 'invalid_job_status', message: /Cannot pause a job with status queued/ });
    expectError(await action(body.id, 'resume'), 400, { code: 'invalid_job_status', message: /status queued/ });
    const cancelled = await action(body.id, 'cancel');
    assert.equal(cancelled.status, 200);
    assert.equal(cancelled.body.status, 'cancelled');
    expectError(await action(body.id, 'cancel'), 400, { code: 'invalid_job_status', message: /already been cancelled/ });
    expectError(await action(body.id, 'resume'), 400, { code: 'invalid_job_status' });
    const events = await server.request('GET', `/v1/fine_tuning/jobs/${body.id}/events`, A);
    assert.equal(events.body.data[0].message, 'The job has been cancelled');
  });

  it('filters jobs by metadata and by the absence of metadata', async () => {
    const tagged = (await create({ metadata: { experiment: 'filter-me' } })).body.id;
    const res = await server.request('GET', '/v1/fine_tuning/jobs?metadata[experiment]=filter-me', A);
    assert.deepEqual(res.body.data.map((j: any) => j.id), [tagged]);
    const none = await server.request('GET', '/v1/fine_tuning/jobs?metadata=null&limit=100', A);
    assert.ok(none.body.data.length > 0);
    assert.ok(none.body.data.every((j: any) => j.metadata === null));
    expectError(await server.request('GET', '/v1/fine_tuning/jobs?limit=0', A), 400, { param: 'limit' });
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
