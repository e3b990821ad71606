// /health and /metrics: the health check needs no key and asks the database; the Prometheus
// metrics need an admin key and count requests by route pattern and jobs by status.
import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';
import { describeOnEachBackend } from '../support/database.ts';
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
