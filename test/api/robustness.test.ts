// Bad input never yields a 5xx: every route, fed garbage, answers a 4xx in OpenAI's envelope, on
// each SQL backend (PostgreSQL refuses NUL characters in text, where SQLite stores them).
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { describeOnEachBackend } from '../support/database.ts';
import { BASE_MODEL, expectError, form, json, startTestServer, waitFor, type TestServer } from '../support/server.ts';
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

/** Sends `text` as is on a fresh connection and parses the answer (Node's HTTP client would refuse to send it). */
function rawRequest(serverUrl: string, text: string, timeoutMs = 10_000): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(new URL(serverUrl).port), '127.0.0.1', () => socket.end(text));
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error(`no answer within ${timeoutMs} ms to ${JSON.stringify(text.slice(0, 60))}`)));
    let answer = '';
    socket.on('data', (chunk) => (answer += chunk));
    socket.on('error', reject);
    socket.on('close', () => {
      const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(answer)?.[1]);
      const text = answer.slice(answer.indexOf('\r\n\r\n') + 4);
      let body: unknown = text;
      try {
        body = JSON.parse(text);
      } catch {
        // not JSON: expectError says so
      }
      resolve({ status, body });
    });
  });
}

describe("what the framework refuses before a route runs", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ env: { MAX_JSON_BODY_BYTES: '1000' } });
  });
  after(() => server.close());

  it('answers in the envelope: URLs, methods, bodies, content types, multipart limits', async () => {
    expectError(await server.request('GET', `/v1/files/${'a'.repeat(1100)}`), 414, { code: 'url_too_long' });
    expectError(await server.request('GET', '/v1/files/%zz'), 400, { code: 'invalid_url' });
    expectError(await server.request('GET', '/v1/nothing'), 404, { code: 'unknown_url' });
    expectError(await server.request('PUT', '/v1/files'), 404, { code: 'unknown_url', message: /PUT \/v1\/files/ });
    expectError(await server.request('POST', '/v1/fine_tuning/jobs', json({ model: 'x'.repeat(2000) })), 413, { code: 'request_too_large' });
    expectError(await server.request('POST', '/v1/fine_tuning/jobs', { body: '<job/>', headers: { 'content-type': 'application/xml' } }), 415, { code: 'unsupported_media_type' });
    expectError(await server.request('POST', '/v1/fine_tuning/jobs', { body: '{"model":', headers: { 'content-type': 'application/json' } }), 400, { code: 'invalid_json' });
    const twoFiles = form({ purpose: 'fine-tune' }, { field: 'file', name: 'a.jsonl', content: '{}' });
    twoFiles.body.append('file', new Blob(['{}']), 'b.jsonl');
    expectError(await server.request('POST', '/v1/files', twoFiles), 413, { code: 'too_many_parts' });
  });

  it("answers in the envelope what Node's HTTP parser refuses", async () => {
    const hugeHeader = `x-padding: ${'a'.repeat(20_000)}\r\n`;
    expectError(await rawRequest(server.url, `GET /v1/files HTTP/1.1\r\nHost: x\r\n${hugeHeader}\r\n`), 431, { code: 'headers_too_large' });
    expectError(await rawRequest(server.url, 'NOT HTTP AT ALL\r\n\r\n'), 400, { code: 'invalid_http_request' });
  });

  it("refuses an 'after' that is not an id of the listed kind on every listing, naming after", async () => {
    const listings = [
      ['/v1/files', 'file-'],
      ['/v1/fine_tuning/jobs', 'ftjob-'],
      ['/v1/fine_tuning/jobs/ftjob-abc/events', 'ftevent-'],
      ['/v1/fine_tuning/jobs/ftjob-abc/checkpoints', 'ftckpt_'],
      ['/v1/fine_tuning/checkpoints/ft:tiny-test:org::abcd1234:ckpt-step-1/permissions', 'cp_'],
    ];
    for (const [listing, prefix] of listings) {
      for (const after of ['nope', prefix === 'file-' ? 'ftjob-abc' : 'file-abc', `${prefix}a-b`, prefix]) {
        expectError(await server.request('GET', `${listing}?after=${encodeURIComponent(after)}`), 400, { param: 'after', code: 'invalid_value' });
      }
    }
    // A well-formed id that names nothing is still an empty page, not an error.
    const unknown = await server.request('GET', '/v1/files?after=file-abc123');
    assert.equal(unknown.status, 200, JSON.stringify(unknown.body));
    assert.deepEqual(unknown.body.data, []);
  });
});
