// Capacity-aware claims (issue 14): workers state their memory and cores and heartbeat; a worker
// claims only the jobs that fit its memory, a job no live worker can hold waits queued with an event
// saying why, and racing claims of workers of every size never hand one job out twice.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import { JobError } from '../../src/scheduler/job-error.ts';
import { claimNextJob, reportJobsNoWorkerCanHold } from '../../src/scheduler/queue.ts';
import { Worker, type JobRunner } from '../../src/scheduler/worker.ts';
import type { Store } from '../../src/store/index.ts';
import { describeOnEachBackend } from '../support/database.ts';
import { BASE_MODEL, chatJsonl, form, json, startTestServer, waitFor, type TestServer } from '../support/server.ts';
import { queuedJob, tempStore } from '../support/store.ts';

const GB = 1e9;

describeOnEachBackend('capacity-aware claims', (backend) => {
  let store: Store;
  let dataDir: string;
  let cleanup: () => Promise<void>;
  const workers: Worker[] = [];
  beforeEach(async () => ({ store, dataDir, cleanup } = await tempStore(backend)));
  afterEach(async () => {
    await Promise.all(workers.splice(0).map((w) => w.stop()));
    await cleanup();
  });

  const options = { leaseMs: 60_000, maxRunningPerOrg: 100 };
  const startWorker = (workerId: string, memoryBytes: number, runJob: JobRunner) => {
    const worker = new Worker({ store, runJob, dataDir, workerId, capacity: { memoryBytes, cores: 4 }, heartbeatMs: 20, pollMs: 10, leaseMs: 5_000 });
    workers.push(worker);
    worker.start();
    return worker;
  };
  const finishAtOnce: JobRunner = async () => ({ trainedTokens: 1 });
  const messages = async (id: string) => (await store.events.list(id, { limit: 100, order: 'asc' })).data.map((e) => e.message);

  it('a small worker leaves a big job queued and takes the small one behind it; a big worker takes the big one', async () => {
    const big = await queuedJob(store, 'org-a', { memory_required_bytes: 12 * GB });
    const small = await queuedJob(store, 'org-a', { memory_required_bytes: 2 * GB });
    const unknown = await queuedJob(store, 'org-a');
    assert.equal((await claimNextJob(store, 'small', { ...options, memoryBytes: 8 * GB }))?.id, small.id);
    assert.equal((await claimNextJob(store, 'small', { ...options, memoryBytes: 8 * GB }))?.id, unknown.id, 'a job of unknown need goes to any worker');
    assert.equal(await claimNextJob(store, 'small', { ...options, memoryBytes: 8 * GB }), undefined);
    assert.equal((await store.jobs.get(big.id))?.status, 'queued');
    const taken = await claimNextJob(store, 'big', { ...options, memoryBytes: 16 * GB });
    assert.equal(taken?.id, big.id);
    assert.equal(taken?.worker_id, 'big');
  });

  it('running workers: only the big one runs the big job, while it is registered with its capacity', async () => {
    const ranBy = new Map<string, string>();
    const record: JobRunner = async (job, ctx) => {
      ranBy.set(job.id, ctx.workerId);
      return { trainedTokens: 1 };
    };
    const small = startWorker('w-small', 4 * GB, record);
    const big = await queuedJob(store, 'org-a', { memory_required_bytes: 10 * GB });
    const fits = await queuedJob(store, 'org-a', { memory_required_bytes: 1 * GB });
    await waitFor(() => store.jobs.get(fits.id), (j) => j?.status === 'succeeded');
    const registered = await waitFor(() => store.workers.list(), (ws) => ws.length === 1);
    assert.deepEqual(
      registered.map(({ id, memory_bytes, cores }) => ({ id, memory_bytes, cores })),
      [{ id: 'w-small', memory_bytes: 4 * GB, cores: 4 }],
    );
    // The small worker keeps polling and leaves the big job alone, saying why it waits.
    const waiting = await waitFor(() => messages(big.id), (m) => m.some((x) => x.includes('stays queued')));
    assert.ok(waiting.includes('The job needs 10.00 GB of memory and no worker has that much (the largest has 4.00 GB); it stays queued until one joins'));
    assert.equal((await store.jobs.get(big.id))?.status, 'queued');

    startWorker('w-big', 16 * GB, record);
    await waitFor(() => store.jobs.get(big.id), (j) => j?.status === 'succeeded');
    assert.equal(ranBy.get(big.id), 'w-big');
    assert.equal(ranBy.get(fits.id), 'w-small');
    // Said once, however many polls saw it waiting.
    assert.equal((await messages(big.id)).filter((m) => m.includes('stays queued')).length, 1);

    // A stopped worker is no longer registered.
    await small.stop();
    assert.deepEqual((await store.workers.list()).map((w) => w.id), ['w-big']);
  });

  // What the training runner throws when the engine's estimate is over the worker's limit.
  const overMemory = (neededBytes: number) => new JobError('Training needs an estimated … of memory', 'insufficient_memory', null, neededBytes);

  it('a job the engine finds too big for its worker goes back to the queue, with the estimate, when a bigger worker is live', async () => {
    await store.workers.register({ id: 'w-big', host: 'h2', memory_bytes: 16 * GB, cores: 16 }, Date.now());
    const job = await queuedJob(store); // its need unknown until the engine estimates it
    const ranBy: string[] = [];
    const runner: JobRunner = async (_job, ctx) => {
      ranBy.push(ctx.workerId);
      if (ctx.workerId === 'w-small') throw overMemory(12 * GB);
      return { trainedTokens: 1 };
    };
    startWorker('w-small', 4 * GB, runner);
    const requeued = await waitFor(() => store.jobs.get(job.id), (j) => j?.memory_required_bytes !== null);
    assert.equal(requeued?.status, 'queued');
    assert.equal(requeued?.memory_required_bytes, 12 * GB);
    assert.equal(requeued?.error, null);
    assert.ok((await messages(job.id)).includes("Training needs an estimated 12.00 GB of memory, more than this worker's 4.00 GB; the job is back in the queue for a worker with enough"));

    await store.workers.remove('w-big');
    startWorker('w-big', 16 * GB, runner);
    await waitFor(() => store.jobs.get(job.id), (j) => j?.status === 'succeeded');
    assert.deepEqual(ranBy, ['w-small', 'w-big']);
    assert.equal((await messages(job.id)).filter((m) => m === 'Fine-tuning job started').length, 1);
  });

  it('a job the engine finds too big for every live worker fails with insufficient_memory, its estimate recorded', async () => {
    await store.workers.register({ id: 'w-other', host: 'h2', memory_bytes: 8 * GB, cores: 16 }, Date.now());
    const job = await queuedJob(store);
    startWorker('w-small', 4 * GB, async () => {
      throw overMemory(12 * GB);
    });
    const failed = await waitFor(() => store.jobs.get(job.id), (j) => j?.status === 'failed');
    assert.equal(failed?.error?.code, 'insufficient_memory');
    assert.equal(failed?.memory_required_bytes, 12 * GB);
  });

  it('heartbeats keep a worker live; a silent one no longer counts, and one re-registers after being forgotten', async () => {
    const t = 1_000_000_000_000;
    await store.workers.register({ id: 'a', host: 'h1', memory_bytes: 8 * GB, cores: 8 }, t);
    await store.workers.register({ id: 'b', host: 'h2', memory_bytes: 32 * GB, cores: 16 }, t);
    assert.equal(await store.workers.largestLiveMemory(t), 32 * GB);
    assert.equal(await store.workers.heartbeat('a', t + 10_000), true);
    // b fell silent: only a is live after t.
    assert.equal(await store.workers.largestLiveMemory(t + 1), 8 * GB);
    await store.workers.removeSilentSince(t + 1);
    assert.deepEqual((await store.workers.list()).map((w) => w.id), ['a']);
    assert.equal(await store.workers.heartbeat('b', t + 20_000), false);
    assert.equal(await store.workers.largestLiveMemory(t + 20_001), null);
    // Without live workers nothing is said: the jobs wait for any worker at all.
    const job = await queuedJob(store, 'org-a', { memory_required_bytes: 100 * GB });
    await reportJobsNoWorkerCanHold(store, t + 20_001);
    assert.ok(!(await messages(job.id)).some((m) => m.includes('stays queued')));
  });

  it('racing claims of workers of every size never hand a job out twice, nor to a worker it does not fit', async () => {
    const needs = [1, 3, 6, 12, 1, 3, 6, 12, 1, 3, 6, 12, 2, 2, 2, 2].map((n) => n * GB);
    const jobs = await Promise.all(needs.map((need, i) => queuedJob(store, `org-${i % 3}`, { memory_required_bytes: need })));
    const sizes = { w2: 2 * GB, w4: 4 * GB, w8: 8 * GB, w16: 16 * GB, w16b: 16 * GB };
    const claims: { worker: string; id: string }[] = [];
    await Promise.all(
      Object.entries(sizes).map(async ([worker, memoryBytes]) => {
        for (;;) {
          const job = await claimNextJob(store, worker, { ...options, memoryBytes });
          if (!job) return;
          claims.push({ worker, id: job.id });
        }
      }),
    );
    const ids = claims.map((c) => c.id);
    assert.equal(new Set(ids).size, ids.length, 'no job claimed twice');
    assert.deepEqual(new Set(ids), new Set(jobs.map((j) => j.id)), 'every job claimed');
    for (const { worker, id } of claims) {
      const job = await store.jobs.get(id);
      assert.equal(job?.worker_id, worker);
      assert.ok(job!.memory_required_bytes! <= sizes[worker as keyof typeof sizes], `${id} fits ${worker}`);
    }
  });
});

describe('capacity through the API', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer(
      { env: { API_KEYS: 'sk-user:org-a', ADMIN_API_KEYS: 'sk-admin:org-a' }, worker: { memoryBytes: 2 * GB, cores: 2 }, queue: { leaseMs: 5_000, heartbeatMs: 20, pollMs: 20 } },
      { runJob: async () => ({ trainedTokens: 1 }) },
    );
  });
  after(() => server?.close());

  it('a job records its model’s weight size at creation and waits queued, said once, while the only worker is smaller', async () => {
    // 3 GB of weights, as a sparse file: its size is what counts.
    fs.closeSync(fs.openSync(path.join(server.modelsDir, BASE_MODEL, 'model.safetensors'), 'w'));
    fs.truncateSync(path.join(server.modelsDir, BASE_MODEL, 'model.safetensors'), 3 * GB);
    const file = await server.request('POST', '/v1/files', { key: 'sk-user', ...form({ purpose: 'fine-tune' }, { field: 'file', name: 't.jsonl', content: chatJsonl(12) }) });
    const job = await server.request('POST', '/v1/fine_tuning/jobs', { key: 'sk-user', ...json({ model: BASE_MODEL, training_file: file.body.id }) });
    assert.equal(job.status, 200);
    assert.equal((await server.store.jobs.get(job.body.id))?.memory_required_bytes, 3 * GB);
    const events = await waitFor(
      () => server.request('GET', `/v1/fine_tuning/jobs/${job.body.id}/events?limit=50`, { key: 'sk-user' }),
      (r) => r.body.data.some((e: { message: string }) => e.message.includes('stays queued')),
    );
    assert.ok(events.body.data.some((e: { message: string; level: string }) => e.level === 'warn' && e.message === 'The job needs 3.00 GB of memory and no worker has that much (the largest has 2.00 GB); it stays queued until one joins'));
    const metrics = (await server.request('GET', '/metrics', { key: 'sk-admin' })).body as string;
    assert.match(metrics, /^tuneforge_jobs_queued_beyond_capacity 1$/m);
    assert.match(metrics, new RegExp(`^tuneforge_worker_memory_bytes\\{worker="${server.worker!.id}",host="[^"]+"\\} 2000000000$`, 'm'));
    // Polls go on; the event is not repeated.
    await new Promise((r) => setTimeout(r, 200));
    const again = await server.request('GET', `/v1/fine_tuning/jobs/${job.body.id}/events?limit=50`, { key: 'sk-user' });
    assert.equal(again.body.data.filter((e: { message: string }) => e.message.includes('stays queued')).length, 1);
    assert.equal((await server.request('GET', `/v1/fine_tuning/jobs/${job.body.id}`, { key: 'sk-user' })).body.status, 'queued');
  });
});
