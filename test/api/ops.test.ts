// /health and /metrics: the health check needs no key and asks the database; the Prometheus
// metrics need an admin key and count requests by route pattern, jobs by status and, per worker,
// running jobs, capacity and heartbeat age.
import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';
import { claimNextJob } from '../../src/scheduler/queue.ts';
import { describeOnEachBackend } from '../support/database.ts';
import { queuedJob } from '../support/store.ts';
import { BASE_MODEL, chatJsonl, expectError, form, json, startTestServer, waitFor, type TestServer } from '../support/server.ts';

const USER = { key: 'sk-user' };
const ADMIN = { key: 'sk-admin' };

describeOnEachBackend('health and metrics', (backend) => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ backend, env: { API_KEYS: 'sk-user:org-a', ADMIN_API_KEYS: 'sk-admin:org-a' } });
  });
  after(() => server?.close());

  it('answers /health without a key', async () => {
    const res = await server.request('GET', '/health');
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, { status: 'ok' });
  });

  it('serves /metrics to admin keys only, with jobs by status and requests by route', async () => {
    expectError(await server.request('GET', '/metrics'), 401);
    expectError(await server.request('GET', '/metrics', USER), 403);

    const file = await server.request('POST', '/v1/files', { ...USER, ...form({ purpose: 'fine-tune' }, { field: 'file', name: 't.jsonl', content: chatJsonl(12) }) });
    const job = await server.request('POST', '/v1/fine_tuning/jobs', { ...USER, ...json({ model: BASE_MODEL, training_file: file.body.id }) });
    assert.equal(job.status, 200);
    // No worker: the job waits queued.
    await waitFor(() => server.request('GET', `/v1/fine_tuning/jobs/${job.body.id}`, USER), (r) => r.body.status === 'queued');

    const res = await server.request('GET', '/metrics', ADMIN);
    assert.equal(res.status, 200);
    const text = res.body as string;
    assert.match(text, /^tuneforge_jobs\{status="queued"\} 1$/m);
    assert.match(text, /^tuneforge_jobs\{status="running"\} 0$/m);
    assert.match(text, /^tuneforge_http_request_duration_seconds_count\{method="POST",route="\/v1\/fine_tuning\/jobs",status="200"\} 1$/m);
    // Route patterns, not URLs: one series for every job id.
    assert.match(text, /route="\/v1\/fine_tuning\/jobs\/:id",status="200"\}/);
    assert.doesNotMatch(text, new RegExp(job.body.id));
    assert.match(text, /^tuneforge_process_resident_memory_bytes \d+/m);
  });
});

describeOnEachBackend('metrics per worker', (backend) => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ backend, env: { API_KEYS: 'sk-user:org-a', ADMIN_API_KEYS: 'sk-admin:org-a' } });
  });
  after(() => server?.close());

  it('shows the queue per state and each worker’s running jobs, memory, cores and heartbeat age', async () => {
    const { store } = server;
    const now = Date.now();
    await store.workers.register({ id: 'w-small', host: 'gpu-1', memory_bytes: 4e9, cores: 8 }, now - 3_000);
    await store.workers.register({ id: 'w-big', host: 'gpu-2', memory_bytes: 64e9, cores: 32 }, now);
    const running = await queuedJob(store, 'org-a', { memory_required_bytes: 10e9 });
    await queuedJob(store, 'org-a', { memory_required_bytes: 100e9 });
    await queuedJob(store, 'org-a');
    assert.equal((await claimNextJob(store, 'w-big', { leaseMs: 60_000, maxRunningPerOrg: 10, memoryBytes: 64e9 }))?.id, running.id);

    const res = await server.request('GET', '/metrics', ADMIN);
    assert.equal(res.status, 200);
    const text = res.body as string;
    assert.match(text, /^tuneforge_jobs\{status="queued"\} 2$/m);
    assert.match(text, /^tuneforge_jobs\{status="running"\} 1$/m);
    assert.match(text, /^tuneforge_worker_running_jobs\{worker="w-big",host="gpu-2"\} 1$/m);
    assert.match(text, /^tuneforge_worker_running_jobs\{worker="w-small",host="gpu-1"\} 0$/m);
    assert.match(text, /^tuneforge_worker_memory_bytes\{worker="w-small",host="gpu-1"\} 4000000000$/m);
    assert.match(text, /^tuneforge_worker_cores\{worker="w-big",host="gpu-2"\} 32$/m);
    const age = Number(/^tuneforge_worker_heartbeat_age_seconds\{worker="w-small",host="gpu-1"\} (\S+)$/m.exec(text)?.[1]);
    assert.ok(age >= 3 && age < 60, `heartbeat age ${age}`);
    // The 100 GB job: more than any live worker has.
    assert.match(text, /^tuneforge_jobs_queued_beyond_capacity 1$/m);
    assert.match(text, /^# TYPE tuneforge_worker_running_jobs gauge$/m);

    // A worker gone from the registry still shows while it holds a running job.
    await store.workers.remove('w-big');
    const after = (await server.request('GET', '/metrics', ADMIN)).body as string;
    assert.match(after, /^tuneforge_worker_running_jobs\{worker="w-big",host=""\} 1$/m);
    assert.doesNotMatch(after, /tuneforge_worker_memory_bytes\{worker="w-big"/);
  });
});
