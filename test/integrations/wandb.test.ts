import assert from 'node:assert/strict';
import { after, afterEach, describe, test } from 'node:test';
import { WandbLogger, wandbOptionsFromEnv, type WandbLoggerOptions } from '../../src/integrations/wandb.ts';
import { FAKE_WANDB_API_KEY, startFakeWandb as startFake, type FakeWandb, type FakeWandbBehaviour, type Recorded } from '../support/fake-wandb.ts';

// ---------------------------------------------------------------------------------------------
// WandbLogger against a fake W&B that refuses what W&B would refuse (test/support/fake-wandb.ts)

const API_KEY = FAKE_WANDB_API_KEY;
const BASIC = `Basic ${Buffer.from(`api:${API_KEY}`).toString('base64')}`;
const FAST: WandbLoggerOptions = { flushIntervalMs: 5, requestTimeoutMs: 2000 };

function historyLines(requests: Recorded[]) {
  return requests.filter((r) => r.body?.files?.['wandb-history.jsonl']).map((r) => r.body.files['wandb-history.jsonl']);
}

async function waitFor(condition: () => boolean, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe('WandbLogger', () => {
  const cleanups: (() => Promise<void>)[] = [];
  const fakes: FakeWandb[] = [];
  after(async () => {
    for (const cleanup of cleanups) await cleanup();
  });
  // Whatever a test checks, everything sent must be what W&B takes.
  afterEach(() => {
    for (const fake of fakes.splice(0)) assert.deepEqual(fake.refused, [], 'requests W&B would refuse');
  });
  async function startFakeWandb(behaviour: FakeWandbBehaviour = {}) {
    const fake = await startFake(behaviour);
    fakes.push(fake);
    return fake;
  }

  test('creates the run, streams history in batches, then summary and completion, all with the key', async () => {
    const wandb = await startFakeWandb();
    cleanups.push(wandb.close);
    const logger = new WandbLogger({ apiKey: API_KEY, baseUrl: wandb.baseUrl + '/', ...FAST });
    const job = logger.startJob({
      id: 'ftjob-abc123',
      model: 'tiny-llama',
      integrations: [{ type: 'wandb', wandb: { project: 'my-project', entity: 'my-team', tags: ['custom-tag', 'openai/finetune'] } }],
      config: { n_epochs: 3, learning_rate_multiplier: 2, training_file: 'file-1' },
    });
    assert.equal(await job.started, 1);
    job.log({ step: 1, train_loss: 2.5, train_mean_token_accuracy: 0.1, valid_loss: null });
    job.log({ step: 2, train_loss: 2.0, train_mean_token_accuracy: 0.2 });
    await waitFor(() => historyLines(wandb.requests).length === 1); // the first batch went out on its own
    job.log({ step: 3, train_loss: 1.5, train_mean_token_accuracy: 0.3, valid_loss: 1.7, valid_mean_token_accuracy: 0.25 });
    await job.finish('succeeded', { fine_tuned_model: 'ft:tiny-llama:org-local::abc' });

    for (const r of wandb.requests) {
      assert.equal(r.method, 'POST');
      assert.equal(r.authorization, BASIC);
    }
    const [create, ...streams] = wandb.requests;
    assert.equal(create.path, '/graphql');
    assert.match(create.body.query, /mutation UpsertBucket/);
    assert.match(create.body.query, /upsertBucket\(input:/);
    assert.deepEqual({ ...create.body.variables, config: JSON.parse(create.body.variables.config) }, {
      name: 'ftjob-abc123',
      project: 'my-project',
      entity: 'my-team',
      displayName: 'ftjob-abc123',
      tags: ['openai/finetune', 'openai/tiny-llama', 'openai/ftjob-abc123', 'custom-tag'],
      config: { n_epochs: { value: 3 }, learning_rate_multiplier: { value: 2 }, training_file: { value: 'file-1' } },
    });

    for (const r of streams) assert.equal(r.path, '/files/my-team/my-project/ftjob-abc123/file_stream');
    const batches = historyLines(streams);
    assert.deepEqual(batches.map((b) => [b.offset, b.content.length]), [[0, 2], [2, 1]], 'two batches, offsets in lines');
    const lines = batches.flatMap((b) => b.content.map((l: string) => JSON.parse(l)));
    assert.deepEqual(lines.map(({ _runtime, _timestamp, ...rest }: any) => rest), [
      { train_loss: 2.5, train_mean_token_accuracy: 0.1, _step: 1 },
      { train_loss: 2.0, train_mean_token_accuracy: 0.2, _step: 2 },
      { train_loss: 1.5, train_mean_token_accuracy: 0.3, valid_loss: 1.7, valid_mean_token_accuracy: 0.25, _step: 3 },
    ]);
    for (const line of lines) {
      assert.ok(line._runtime >= 0 && line._runtime < 60);
      assert.ok(Math.abs(line._timestamp - Date.now() / 1000) < 60);
    }

    const summaryPost = streams.at(-2)!;
    assert.deepEqual(Object.keys(summaryPost.body.files), ['wandb-summary.json']);
    assert.equal(summaryPost.body.files['wandb-summary.json'].offset, 0);
    assert.deepEqual(JSON.parse(summaryPost.body.files['wandb-summary.json'].content[0]), {
      train_loss: 1.5,
      train_mean_token_accuracy: 0.3,
      valid_loss: 1.7,
      valid_mean_token_accuracy: 0.25,
      _step: 3,
      fine_tuned_model: 'ft:tiny-llama:org-local::abc',
      status: 'succeeded',
    });
    assert.deepEqual(streams.at(-1)!.body, { complete: true, exitcode: 0 });
  });

  test("`name` is the run's display name; no entity: the key's default entity from W&B's answer", async () => {
    const wandb = await startFakeWandb({ defaultEntity: 'alice' });
    cleanups.push(wandb.close);
    const logger = new WandbLogger({ apiKey: API_KEY, baseUrl: wandb.baseUrl, ...FAST });
    const job = logger.startJob({ id: 'ftjob-xyz', model: 'm', integrations: [{ type: 'wandb', wandb: { project: 'p', name: 'My run', entity: null } }] });
    job.log({ step: 1, train_loss: 1 });
    await job.finish('failed');
    const variables = wandb.requests[0].body.variables;
    assert.deepEqual([variables.name, variables.displayName, variables.entity], ['ftjob-xyz', 'My run', null]);
    assert.ok(wandb.fileStreams().every((r) => r.path === '/files/alice/p/ftjob-xyz/file_stream'));
    assert.deepEqual(wandb.requests.at(-1)!.body, { complete: true, exitcode: 1 });
  });

  test('a slow W&B does not delay the job: startJob returns at once and metrics wait for the run', async () => {
    const wandb = await startFakeWandb({ graphqlDelayMs: 300 });
    cleanups.push(wandb.close);
    const logger = new WandbLogger({ apiKey: API_KEY, baseUrl: wandb.baseUrl, ...FAST });
    const before = Date.now();
    const job = logger.startJob({ id: 'ftjob-slow', model: 'm', integrations: [{ type: 'wandb', wandb: { project: 'p' } }] });
    job.log({ step: 1, train_loss: 1, weird: 10n as unknown as number }); // not JSON: skipped, no throw
    job.log({ step: 2, train_loss: 0.5 });
    assert.ok(Date.now() - before < 100);
    await job.finish('succeeded');
    assert.equal(wandb.requests[0].path, '/graphql');
    const lines = historyLines(wandb.requests).flatMap((b) => b.content.map((l: string) => JSON.parse(l)));
    assert.deepEqual(lines.map((l: any) => l._step), [2]);
  });

  test('with nothing to send, a keep-alive goes out every heartbeatMs', async () => {
    const wandb = await startFakeWandb();
    cleanups.push(wandb.close);
    const logger = new WandbLogger({ apiKey: API_KEY, baseUrl: wandb.baseUrl, ...FAST, heartbeatMs: 20 });
    const job = logger.startJob({ id: 'ftjob-hb', model: 'm', integrations: [{ type: 'wandb', wandb: { project: 'p' } }] });
    await waitFor(() => wandb.fileStreams().length >= 1);
    assert.deepEqual(wandb.fileStreams()[0].body, { complete: false, failed: false });
    await job.finish('succeeded');
    const count = wandb.requests.length;
    await new Promise((resolve) => setTimeout(resolve, 60));
    assert.equal(wandb.requests.length, count, 'no keep-alive after finish');
  });

  test('a run found again after a restart continues its history after the last line', async () => {
    const wandb = await startFakeWandb({ historyLineCount: 40 });
    cleanups.push(wandb.close);
    const logger = new WandbLogger({ apiKey: API_KEY, baseUrl: wandb.baseUrl, ...FAST });
    const job = logger.startJob({ id: 'ftjob-r', model: 'm', integrations: [{ type: 'wandb', wandb: { project: 'p' } }] });
    job.log({ step: 41, train_loss: 1 });
    await job.finish('cancelled');
    assert.deepEqual(historyLines(wandb.requests).map((b) => b.offset), [40]);
  });

  test('failed history posts keep their lines and resend them at the same offset', async () => {
    const wandb = await startFakeWandb({ fileStreamStatuses: [500, 503] });
    cleanups.push(wandb.close);
    const logged: string[] = [];
    const logger = new WandbLogger({ apiKey: API_KEY, baseUrl: wandb.baseUrl, ...FAST, log: (msg) => logged.push(msg) });
    const job = logger.startJob({ id: 'ftjob-f', model: 'm', integrations: [{ type: 'wandb', wandb: { project: 'p' } }] });
    job.log({ step: 1, train_loss: 1 });
    job.log({ step: 2, train_loss: 0.5 });
    await job.finish('succeeded');
    const batches = historyLines(wandb.requests);
    assert.deepEqual(batches.map((b) => [b.offset, b.content.length]), [[0, 2], [0, 2], [0, 2]]);
    assert.deepEqual(wandb.requests.at(-1)!.body, { complete: true, exitcode: 0 });
    assert.equal(logged.filter((m) => m.startsWith('W&B post failed')).length, 2);
  });

  test('W&B unreachable or refusing: the job goes on, nothing throws', async () => {
    const refusing = await startFakeWandb({ graphqlStatus: 401 });
    const erroring = await startFakeWandb({ graphqlErrors: true });
    const gone = await startFakeWandb();
    await gone.close();
    cleanups.push(refusing.close, erroring.close);
    const integrations = [{ type: 'wandb', wandb: { project: 'p' } }];
    for (const baseUrl of [refusing.baseUrl, erroring.baseUrl, gone.baseUrl]) {
      const logged: { msg: string; extra?: Record<string, unknown> }[] = [];
      const logger = new WandbLogger({ apiKey: API_KEY, baseUrl, ...FAST, log: (msg, extra) => logged.push({ msg, extra }) });
      const job = logger.startJob({ id: 'ftjob-u', model: 'm', integrations });
      assert.equal(await job.started, 0);
      job.log({ step: 1, train_loss: 1 });
      await job.finish('succeeded');
      assert.match(logged[0].msg, /could not be created/);
      assert.match(String(logged[0].extra?.error), /HTTP 401|permission denied|ECONNREFUSED/);
    }
    assert.equal(refusing.requests.length, 1);
    assert.equal(erroring.requests.length, 1);
  });

  test('gives up on a run after maxConsecutiveFailures failed posts', async () => {
    const wandb = await startFakeWandb({ fileStreamStatuses: Array(10).fill(500) });
    cleanups.push(wandb.close);
    const logged: string[] = [];
    const logger = new WandbLogger({ apiKey: API_KEY, baseUrl: wandb.baseUrl, ...FAST, maxConsecutiveFailures: 3, log: (msg) => logged.push(msg) });
    const job = logger.startJob({ id: 'ftjob-g', model: 'm', integrations: [{ type: 'wandb', wandb: { project: 'p' } }] });
    job.log({ step: 1, train_loss: 1 });
    await job.finish('succeeded');
    assert.equal(wandb.fileStreams().length, 3);
    assert.ok(logged.some((m) => m.startsWith('W&B unreachable')));
    job.log({ step: 2, train_loss: 1 });
    await job.finish('succeeded');
    assert.equal(wandb.fileStreams().length, 3, 'nothing more after giving up');
  });

  test('a job with two wandb integrations gets a run in each project', async () => {
    const wandb = await startFakeWandb();
    cleanups.push(wandb.close);
    const logger = new WandbLogger({ apiKey: API_KEY, baseUrl: wandb.baseUrl, ...FAST });
    const job = logger.startJob({
      id: 'ftjob-2',
      model: 'm',
      integrations: [
        { type: 'wandb', wandb: { project: 'a' } },
        { type: 'wandb', wandb: { project: 'b', entity: 'team' } },
        { type: 'wandb', wandb: { project: 'a' } }, // the same run as the first one
      ],
    });
    assert.equal(await job.started, 2);
    job.log({ step: 1, train_loss: 1 });
    await job.finish('succeeded');
    const paths = new Set(wandb.fileStreams().map((r) => r.path));
    assert.deepEqual([...paths].sort(), ['/files/default-entity/a/ftjob-2/file_stream', '/files/team/b/ftjob-2/file_stream']);
  });

  test('without a key it sends nothing and says so once; jobs without W&B are not mentioned', async () => {
    const logged: string[] = [];
    let calls = 0;
    const logger = WandbLogger.fromEnv({}, {
      log: (msg) => logged.push(msg),
      fetch: (async () => {
        calls++;
        throw new Error('no network in tests');
      }) as typeof fetch,
    });
    assert.equal(logger.enabled, false);
    assert.equal(await logger.startJob({ id: 'ftjob-0', model: 'm', integrations: null }).started, 0);
    assert.deepEqual(logged, []);
    for (const id of ['ftjob-1', 'ftjob-2']) {
      const job = logger.startJob({ id, model: 'm', integrations: [{ type: 'wandb', wandb: { project: 'p' } }] });
      job.log({ step: 1, train_loss: 1 });
      await job.finish('succeeded');
    }
    assert.equal(calls, 0);
    assert.equal(logged.length, 1);
    assert.match(logged[0], /WANDB_API_KEY is not set/);
  });

  test('a very long base model name still gives valid (≤ 64 character) tags', async () => {
    const wandb = await startFakeWandb();
    cleanups.push(wandb.close);
    const logger = new WandbLogger({ apiKey: API_KEY, baseUrl: wandb.baseUrl, ...FAST });
    const job = logger.startJob({ id: 'ftjob-t', model: 'm'.repeat(100), integrations: [{ type: 'wandb', wandb: { project: 'p' } }] });
    await job.finish('succeeded');
    const tags: string[] = wandb.requests[0].body.variables.tags;
    assert.ok(tags.every((t) => t.length >= 1 && t.length <= 64));
  });

  test('options from the environment', () => {
    assert.deepEqual(wandbOptionsFromEnv({}), { apiKey: null, baseUrl: 'https://api.wandb.ai' });
    assert.deepEqual(wandbOptionsFromEnv({ WANDB_API_KEY: ` ${API_KEY} `, WANDB_BASE_URL: 'http://wandb.internal:8080' }), {
      apiKey: API_KEY,
      baseUrl: 'http://wandb.internal:8080',
    });
    assert.throws(() => wandbOptionsFromEnv({ WANDB_BASE_URL: 'wandb.internal' }), /WANDB_BASE_URL: 'wandb.internal' is not an http\(s\) URL/);
    assert.equal(WandbLogger.fromEnv({ WANDB_API_KEY: API_KEY }).enabled, true);
  });
});

describe('the fake W&B', () => {
  test('refuses what W&B would: wrong key, unknown field, mistyped variable, unknown run, malformed stream', async () => {
    const fake = await startFake();
    try {
      const post = async (path: string, body: unknown, headers: Record<string, string> = {}) =>
        (await fetch(fake.baseUrl + path, { method: 'POST', headers: { authorization: BASIC, 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) })).status;
      const upsert = (input: string, variables: Record<string, unknown>) =>
        post('/graphql', { query: `mutation ($name: String, $project: String) { upsertBucket(input: {${input}}) { bucket { name } } }`, variables });
      assert.equal(await upsert('name: $name, modelName: $project', { name: 'r', project: 'p' }), 200);
      assert.deepEqual(fake.refused, []);

      assert.equal(await post('/graphql', { query: '{ viewer { id } }' }, { authorization: `Bearer ${API_KEY}` }), 401);
      assert.equal(await upsert('name: $name, projectName: $project', { name: 'r', project: 'p' }), 400);
      assert.equal(await upsert('name: $name, modelName: $project', { name: 7, project: 'p' }), 400);
      assert.equal(await upsert('name: $name', { name: 'r', project: 'p' }), 400); // $project declared, never used
      const stream = (body: unknown, run = 'r') => post(`/files/default-entity/p/${run}/file_stream`, body);
      const row = (extra: Record<string, unknown>) => JSON.stringify({ _step: 0, _runtime: 1, _timestamp: 1e9, ...extra });
      assert.equal(await stream({ files: { 'wandb-history.jsonl': { offset: 0, content: [row({ loss: 1 })] } } }), 200);
      assert.equal(await stream({ complete: true, exitcode: 0 }, 'never-upserted'), 404);
      assert.equal(await stream({ files: { 'wandb-history.jsonl': { offset: '0', content: [row({})] } } }), 400);
      assert.equal(await stream({ files: { 'wandb-history.jsonl': { offset: 0, content: [JSON.stringify({ loss: 1 })] } } }), 400);
      assert.equal(await stream({ files: { 'wandb-summary.json': { offset: 3, content: ['{}'] } } }), 400);
      assert.equal(await stream({ complete: true }), 400);
      assert.equal(await stream({ complete: false, failed: false, extra: 1 }), 400);
      assert.equal(await post('/files/default-entity/p/r/file_stream', { complete: true, exitcode: 0 }, { 'content-type': 'text/plain' }), 400);
      assert.equal(fake.refused.length, 11, fake.refused.join('\n'));
    } finally {
      await fake.close();
    }
  });
});
