// Files uploaded with `expires_after`: gone from the API once expired, removed from disk by the sweep
// (unless an unfinished job trains on them), and pending uploads expired with their parts. The
// server's clock is moved forward instead of waiting; the sweep is called with that clock.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import { toFile } from 'openai';
import { loadConfig } from '../../src/config.ts';
import { sweepExpired } from '../../src/store/expiry.ts';
import { describeOnEachBackend } from '../support/database.ts';
import { BASE_MODEL, chatJsonl, expectError, form, json, startTestServer, waitFor, type TestServer } from '../support/server.ts';

const A = { key: 'sk-a' };
const HOUR = 3600;
const NEVER_EXISTED = 'file-neverexisted000000000';

describeOnEachBackend('file expiry', (backend) => {
  let server: TestServer;
  let offset = 0;
  const now = () => Math.floor(Date.now() / 1000) + offset;
  before(async () => {
    // No periodic sweep here: each test sweeps when it means to.
    server = await startTestServer({ backend, env: { API_KEYS: 'sk-a:org-a', FILE_SWEEP_INTERVAL_SECONDS: '0' } }, { now });
  });
  after(() => server.close());
  beforeEach(() => {
    offset = 0;
  });

  const upload = async (content: string, expiresIn?: number) =>
    (
      await server.client(A.key).files.create({
        file: await toFile(Buffer.from(content), 'train.jsonl'),
        purpose: 'fine-tune',
        ...(expiresIn === undefined ? {} : { expires_after: { anchor: 'created_at', seconds: expiresIn } }),
      })
    ).id;
  const blobExists = (fileId: string) => fs.existsSync(path.join(server.dataDir, 'blobs', 'files', fileId));
  const listedIds = async () => (await server.request('GET', '/v1/files?limit=100', A)).body.data.map((f: { id: string }) => f.id);

  /** The answer for `id` equals the answer for an id that never existed, but for the id in the message. */
  async function expectSameAsNeverExisted(id: string, call: (id: string) => Promise<{ status: number; body: any }>, status: number) {
    const gone = await call(id);
    const never = await call(NEVER_EXISTED);
    expectError(gone, status);
    const shape = (res: { body: any }, fileId: string) => ({ ...res.body.error, message: res.body.error.message.replaceAll(fileId, 'ID') });
    assert.deepEqual(shape(gone, id), shape(never, NEVER_EXISTED));
  }

  it('hides an expired file from retrieve, content, delete, list and job creation before any sweep', async () => {
    const expiring = await upload(chatJsonl(12), HOUR);
    const kept = await upload(chatJsonl(12));
    const file = await server.client(A.key).files.retrieve(expiring);
    assert.equal(file.expires_at, file.created_at + HOUR);
    assert.ok((await listedIds()).includes(expiring));

    offset = HOUR;
    await expectSameAsNeverExisted(expiring, (id) => server.request('GET', `/v1/files/${id}`, A), 404);
    await expectSameAsNeverExisted(expiring, (id) => server.request('GET', `/v1/files/${id}/content`, A), 404);
    await expectSameAsNeverExisted(expiring, (id) => server.request('DELETE', `/v1/files/${id}`, A), 404);
    expectError(await server.request('GET', `/v1/files/${expiring}`, A), 404, { param: 'file_id', code: 'file_not_found' });
    await assert.rejects(server.client(A.key).files.retrieve(expiring), { status: 404 });
    const createJob = (id: string) => server.request('POST', '/v1/fine_tuning/jobs', { ...A, ...json({ model: BASE_MODEL, training_file: id }) });
    await expectSameAsNeverExisted(expiring, createJob, 400);
    const listed = await listedIds();
    assert.ok(!listed.includes(expiring));
    assert.ok(listed.includes(kept));
    assert.equal((await server.request('GET', `/v1/files/${kept}`, A)).status, 200);
    // Hidden by time alone: nothing was removed yet.
    assert.ok(blobExists(expiring));
  });

  it('the sweep deletes an expired file’s row and blob, and leaves other files alone', async () => {
    const expiring = await upload('{"a":1}\n', HOUR);
    const later = await upload('{"b":1}\n', 2 * HOUR);
    const kept = await upload('{"c":1}\n');
    assert.ok(blobExists(expiring));

    offset = HOUR;
    await sweepExpired(server.store, now());
    assert.ok(!blobExists(expiring));
    assert.ok(blobExists(later));
    assert.ok(blobExists(kept));
    // Gone for real: with the clock turned back it does not come back.
    offset = 0;
    expectError(await server.request('GET', `/v1/files/${expiring}`, A), 404, { param: 'file_id' });
    assert.equal((await server.request('GET', `/v1/files/${later}`, A)).status, 200);
  });

  it('keeps the blobs of files a queued job trains on until the job ends', async () => {
    const training = await upload(chatJsonl(12, 't'), HOUR);
    const validation = await upload(chatJsonl(12, 'v'), HOUR);
    const client = server.client(A.key);
    const job = await client.fineTuning.jobs.create({ model: BASE_MODEL, training_file: training, validation_file: validation });
    await waitFor(() => client.fineTuning.jobs.retrieve(job.id), (j) => j.status !== 'validating_files');
    assert.equal((await client.fineTuning.jobs.retrieve(job.id)).status, 'queued');

    offset = HOUR;
    await sweepExpired(server.store, now());
    expectError(await server.request('GET', `/v1/files/${training}`, A), 404, { param: 'file_id' });
    assert.ok(blobExists(training));
    assert.ok(blobExists(validation));

    assert.equal((await client.fineTuning.jobs.cancel(job.id)).status, 'cancelled');
    await sweepExpired(server.store, now());
    assert.ok(!blobExists(training));
    assert.ok(!blobExists(validation));
  });

  it('expires a pending upload past its lifetime and deletes its parts', async () => {
    const client = server.client(A.key);
    const stale = await client.uploads.create({ filename: 'u.jsonl', purpose: 'fine-tune', bytes: 10, mime_type: 'text/jsonl' });
    await client.uploads.parts.create(stale.id, { data: await toFile(Buffer.from('12345'), 'p1') });
    const partsDir = path.join(server.dataDir, 'blobs', 'uploads', stale.id);
    assert.equal(fs.readdirSync(partsDir).length, 1);

    // Uploads live UPLOAD_EXPIRY_SECONDS (an hour by default).
    await sweepExpired(server.store, now() + HOUR);
    assert.ok(!fs.existsSync(partsDir));
    // The server's own clock has not reached the expiry: the sweep is what marked it.
    const res = await server.request('POST', `/v1/uploads/${stale.id}/parts`, { ...A, ...form({}, { field: 'data', name: 'b', content: 'x' }) });
    expectError(res, 400, { code: 'upload_not_pending', message: /expired/ });
  });

  it('leaves a pending upload within its lifetime untouched', async () => {
    const client = server.client(A.key);
    const fresh = await client.uploads.create({ filename: 'u.jsonl', purpose: 'fine-tune', bytes: 5, mime_type: 'text/jsonl' });
    const part = await client.uploads.parts.create(fresh.id, { data: await toFile(Buffer.from('12345'), 'p1') });
    await sweepExpired(server.store, now());
    const done = await client.uploads.complete(fresh.id, { part_ids: [part.id] });
    assert.equal(done.status, 'completed');
  });
});

describe('file expiry: the server’s own sweep', () => {
  it('removes expired files every FILE_SWEEP_INTERVAL_SECONDS and stops with the server', async () => {
    let offset = 0;
    const server = await startTestServer(
      { env: { API_KEYS: 'sk-a:org-a', FILE_SWEEP_INTERVAL_SECONDS: '1' } },
      { now: () => Math.floor(Date.now() / 1000) + offset },
    );
    try {
      const res = await server.request('POST', '/v1/files', {
        ...A,
        ...form({ purpose: 'fine-tune', 'expires_after[anchor]': 'created_at', 'expires_after[seconds]': String(HOUR) }, { field: 'file', name: 'f.jsonl', content: '{}\n' }),
      });
      assert.equal(res.status, 200);
      const blob = path.join(server.dataDir, 'blobs', 'files', res.body.id);
      assert.ok(fs.existsSync(blob));
      offset = HOUR;
      await waitFor(async () => fs.existsSync(blob), (exists) => !exists, 50);
    } finally {
      await server.close();
    }
  });

  it('reads FILE_SWEEP_INTERVAL_SECONDS like the other settings', () => {
    assert.equal(loadConfig({}, {}).fileSweepIntervalSeconds, 300);
    assert.equal(loadConfig({}, { FILE_SWEEP_INTERVAL_SECONDS: '0' }).fileSweepIntervalSeconds, 0);
    assert.throws(() => loadConfig({}, { FILE_SWEEP_INTERVAL_SECONDS: 'soon' }), /FILE_SWEEP_INTERVAL_SECONDS/);
  });
});
