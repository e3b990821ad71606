// Bad input never yields a 5xx: every route, fed garbage, answers a 4xx in OpenAI's envelope, on
// each SQL backend (PostgreSQL refuses NUL characters in text, where SQLite stores them).
import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';
import { describeOnEachBackend } from '../support/database.ts';
import { BASE_MODEL, form, startTestServer, waitFor, type TestServer } from '../support/server.ts';
import { assertMatches } from '../support/openapi.ts';

const ROUTES: [string, string][] = [
  ['POST', '/v1/files'],
  ['GET', '/v1/files'],
  ['GET', '/v1/files/{id}'],
  ['GET', '/v1/files/{id}/content'],
  ['DELETE', '/v1/files/{id}'],
  ['POST', '/v1/uploads'],
  ['POST', '/v1/uploads/{id}/parts'],
  ['POST', '/v1/uploads/{id}/complete'],
  ['POST', '/v1/uploads/{id}/cancel'],
  ['POST', '/v1/fine_tuning/jobs'],
  ['GET', '/v1/fine_tuning/jobs'],
  ['GET', '/v1/fine_tuning/jobs/{id}'],
  ['POST', '/v1/fine_tuning/jobs/{id}/cancel'],
  ['POST', '/v1/fine_tuning/jobs/{id}/pause'],
  ['POST', '/v1/fine_tuning/jobs/{id}/resume'],
  ['GET', '/v1/fine_tuning/jobs/{id}/events'],
  ['GET', '/v1/fine_tuning/jobs/{id}/checkpoints'],
  ['POST', '/v1/fine_tuning/checkpoints/{id}/permissions'],
  ['GET', '/v1/fine_tuning/checkpoints/{id}/permissions'],
  ['DELETE', '/v1/fine_tuning/checkpoints/{id}/permissions/{id}'],
  ['POST', '/v1/fine_tuning/alpha/graders/run'],
  ['POST', '/v1/fine_tuning/alpha/graders/validate'],
  ['GET', '/v1/models'],
  ['GET', '/v1/models/{id}'],
  ['DELETE', '/v1/models/{id}'],
  ['GET', '/v1/models/{id}/export'],
  ['POST', '/v1/chat/completions'],
  ['POST', '/v1/completions'],
];

const IDS = ['x', '%00', '..%2F..%2Fetc%2Fpasswd', 'ft%3Aa%3Ab%3A%3Ac', '%F0%9F%98%80', 'a'.repeat(900), "'%20OR%201=1--"];
const QUERIES = ['', '?limit=-1', '?limit=1e9', '?after=%00', '?order=x', '?metadata[a]=b&metadata=null', '?limit=1&limit=2'];
const BODIES: { body?: BodyInit; headers?: Record<string, string> }[] = [
  {},
  { body: 'null', headers: { 'content-type': 'application/json' } },
  { body: '"text"', headers: { 'content-type': 'application/json' } },
  { body: '{"model": {"$gt": ""}, "training_file": [], "method": "x", "metadata": [1]}', headers: { 'content-type': 'application/json' } },
  { body: '{"part_ids": [1, null], "project_ids": [{}], "bytes": 1e400}', headers: { 'content-type': 'application/json' } },
  { body: '\u0000\u0001', headers: { 'content-type': 'application/json' } },
  { body: 'not multipart', headers: { 'content-type': 'multipart/form-data; boundary=zzz' } },
];

describeOnEachBackend('robustness', (backend) => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ backend, env: {} });
  });
  after(() => server.close());

  it('answers garbage on every route with a 4xx envelope', async () => {
    let checked = 0;
    for (const [method, template] of ROUTES) {
      for (const id of IDS) {
        const urlPath = template.replaceAll('{id}', id);
        const variants = method === 'GET' || method === 'DELETE' ? QUERIES.map((q) => ({ q, init: {} })) : BODIES.map((init) => ({ q: '', init }));
        for (const { q, init } of variants) {
          const res = await server.request(method, urlPath + q, init);
          const where = `${method} ${urlPath.slice(0, 80)}${q} ${JSON.stringify(init).slice(0, 80)}`;
          assert.ok(res.status >= 200 && res.status < 500, `${where} → ${res.status} ${JSON.stringify(res.body).slice(0, 300)}`);
          if (res.status >= 400) assertMatches('ErrorResponse', res.body, where);
          checked++;
        }
      }
    }
    assert.ok(checked > 500);
  });

  it('refuses NUL characters in request text, naming where', async () => {
    const metadata = await server.request('POST', '/v1/fine_tuning/jobs', {
      body: JSON.stringify({ model: 'm', training_file: 'file-x', metadata: { k: 'a\u0000b' } }),
      headers: { 'content-type': 'application/json' },
    });
    assert.equal(metadata.status, 400);
    assert.equal(metadata.body.error.param, 'metadata.k');
    // Model text may hold one (a stop string, say); a model name cannot.
    const chat = await server.request('POST', '/v1/chat/completions', {
      body: JSON.stringify({ model: 'ft:x\u0000', messages: [{ role: 'user', content: 'a\u0000b' }] }),
      headers: { 'content-type': 'application/json' },
    });
    assert.ok(chat.status === 400 || chat.status === 404, JSON.stringify(chat.body));
    const query = await server.request('GET', '/v1/fine_tuning/jobs?after=a%00b');
    assert.equal(query.status, 400);
    assert.equal(query.body.error.param, 'after');
  });

  it('fails a job whose training file holds NUL characters with the file error, never leaving it validating', async () => {
    const lines = Array.from({ length: 12 }, (_, i) =>
      JSON.stringify({ messages: [{ role: i === 3 ? 'us\u0000er' : 'user', content: `q\u0000${i}` }, { role: 'assistant', content: 'a' }] }),
    );
    const upload = await server.request('POST', '/v1/files', form({ purpose: 'fine-tune' }, { field: 'file', name: 't.jsonl', content: lines.join('\n') + '\n' }));
    assert.equal(upload.status, 200, JSON.stringify(upload.body));
    const created = await server.request('POST', '/v1/fine_tuning/jobs', {
      body: JSON.stringify({ model: BASE_MODEL, training_file: upload.body.id }),
      headers: { 'content-type': 'application/json' },
    });
    assert.equal(created.status, 200, JSON.stringify(created.body));
    const job = await waitFor(() => server.request('GET', `/v1/fine_tuning/jobs/${created.body.id}`).then((r) => r.body), (j) => j.status !== 'validating_files');
    assert.equal(job.status, 'failed');
    assert.equal(job.error.code, 'invalid_training_file');
    assert.match(job.error.message, /Example 4/);
    const events = await server.request('GET', `/v1/fine_tuning/jobs/${created.body.id}/events`);
    assert.equal(events.body.data[0].message, `The job failed: ${job.error.message}`);
  });

  it('rejects multipart garbage on JSON routes and JSON on multipart routes', async () => {
    const multipartOnJson = await server.request('POST', '/v1/fine_tuning/jobs', form({ model: 'm' }));
    assert.ok(multipartOnJson.status >= 400 && multipartOnJson.status < 500);
    const jsonOnMultipart = await server.request('POST', '/v1/files', { body: '{}', headers: { 'content-type': 'application/json' } });
    assert.equal(jsonOnMultipart.status, 400);
  });
});
