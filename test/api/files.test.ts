import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { expectError, form, json, startTestServer, type TestServer } from '../support/server.ts';

const A = { key: 'sk-a' };
const B = { key: 'sk-b' };

describe('files: bad input', () => {
  let server: TestServer;
  let fileId = '';
  before(async () => {
    server = await startTestServer({
      env: { API_KEYS: 'sk-a:org-a,sk-b:org-b', MAX_FILE_BYTES: '2000', MAX_JSON_BODY_BYTES: '4096' },
    });
    const res = await server.request('POST', '/v1/files', { ...A, ...form({ purpose: 'fine-tune' }, { field: 'file', name: 'ok.jsonl', content: '{}\n' }) });
    assert.equal(res.status, 200);
    fileId = res.body.id;
  });
  after(() => server.close());

  const upload = (fields: Record<string, string>, content: string | Buffer | null, auth = A) =>
    server.request('POST', '/v1/files', { ...auth, ...form(fields, content === null ? undefined : { field: 'file', name: 'f.jsonl', content }) });

  it('rejects a missing, unsupported or unknown purpose', async () => {
    expectError(await upload({}, '{}\n'), 400, { param: 'purpose' });
    expectError(await upload({ purpose: 'batch' }, '{}\n'), 400, { param: 'purpose', code: 'unsupported_purpose' });
    expectError(await upload({ purpose: 'fine-tune-results' }, '{}\n'), 400, { param: 'purpose' });
    expectError(await upload({ purpose: 'nonsense' }, '{}\n'), 400, { param: 'purpose', code: 'invalid_value' });
  });

  it("checks expires_after's form fields as the JSON routes check it, naming the param", async () => {
    const expiring = (fields: Record<string, string>) => upload({ purpose: 'fine-tune', ...fields }, '{}\n');
    const seconds = 'expires_after[seconds]';
    const anchor = 'expires_after[anchor]';
    expectError(await expiring({ [anchor]: 'created_at', [seconds]: '60' }), 400, { param: 'expires_after.seconds', code: 'invalid_value' });
    expectError(await expiring({ [anchor]: 'created_at', [seconds]: 'soon' }), 400, { param: 'expires_after.seconds', code: 'invalid_type' });
    expectError(await expiring({ [anchor]: 'last_active_at', [seconds]: '3600' }), 400, { param: 'expires_after.anchor', code: 'invalid_value' });
    expectError(await expiring({ [anchor]: 'created_at' }), 400, { param: 'expires_after.seconds', code: 'missing_required_parameter' });
    expectError(await expiring({ [anchor]: 'created_at', [seconds]: '3600', 'expires_after[days]': '1' }), 400, { param: 'expires_after.days', code: 'unknown_parameter' });
    const ok = await expiring({ [anchor]: 'created_at', [seconds]: '3600' });
    assert.equal(ok.body.expires_at, ok.body.created_at + 3600);
    await server.request('DELETE', `/v1/files/${ok.body.id}`, A);
  });

  it('rejects a missing file, an unknown field and a non-multipart body', async () => {
    expectError(await upload({ purpose: 'fine-tune' }, null), 400, { param: 'file' });
    expectError(await upload({ purpose: 'fine-tune', colour: 'red' }, '{}\n'), 400, { param: 'colour' });
    expectError(await server.request('POST', '/v1/files', { ...A, ...json({ purpose: 'fine-tune' }) }), 400);
  });

  it('takes only .jsonl files for fine-tuning, in any case, and keeps no blob of a refused one', async () => {
    const named = (name: string) => server.request('POST', '/v1/files', { ...A, ...form({ purpose: 'fine-tune' }, { field: 'file', name, content: '{}\n' }) });
    for (const name of ['train.json', 'train.csv', 'train.jsonl.txt', 'jsonl']) {
      expectError(await named(name), 400, { param: 'file', code: 'invalid_file_format', message: /must be a \.jsonl file/ });
    }
    const upper = await named('Train.JSONL');
    assert.equal(upper.status, 200);
    assert.equal(upper.body.filename, 'Train.JSONL');
    await server.request('DELETE', `/v1/files/${upper.body.id}`, A);
    assert.deepEqual(fs.readdirSync(path.join(server.dataDir, 'blobs', 'files')), [fileId]);
  });

  it('answers 413 for a file over the limit and keeps no partial blob', async () => {
    expectError(await upload({ purpose: 'fine-tune' }, Buffer.alloc(5000, 'a')), 413);
    const blobs = path.join(server.dataDir, 'blobs', 'files');
    assert.deepEqual(fs.readdirSync(blobs), [fileId], 'no partial blob or temp file');
  });

  it('answers 413 for a JSON body over the limit', async () => {
    const res = await server.request('POST', '/v1/uploads', { ...A, ...json({ filename: 'x'.repeat(10_000), purpose: 'fine-tune', bytes: 1, mime_type: 'text/jsonl' }) });
    expectError(res, 413);
  });

  it('answers 404 for unknown ids and for another organization’s file', async () => {
    for (const id of ['file-doesnotexist', fileId]) {
      const auth = id === fileId ? B : A;
      expectError(await server.request('GET', `/v1/files/${id}`, auth), 404, { param: 'file_id' });
      expectError(await server.request('GET', `/v1/files/${id}/content`, auth), 404);
      expectError(await server.request('DELETE', `/v1/files/${id}`, auth), 404);
    }
    assert.equal((await server.request('GET', `/v1/files/${fileId}`, A)).status, 200);
  });

  it('rejects bad list parameters', async () => {
    expectError(await server.request('GET', '/v1/files?limit=0', A), 400, { param: 'limit' });
    expectError(await server.request('GET', '/v1/files?limit=abc', A), 400, { param: 'limit' });
    expectError(await server.request('GET', '/v1/files?order=sideways', A), 400, { param: 'order' });
    expectError(await server.request('GET', '/v1/files?purpose=fine-tune&colour=red', A), 400, { param: 'colour', code: 'unknown_parameter' });
  });

  it('keeps user file names out of paths', async () => {
    const res = await server.request('POST', '/v1/files', { ...A, ...form({ purpose: 'fine-tune' }, { field: 'file', name: '../../etc/passwd.jsonl', content: '{}\n' }) });
    assert.equal(res.status, 200);
    assert.ok(fs.existsSync(path.join(server.dataDir, 'blobs', 'files', res.body.id)));
  });

  it('paginates with after/limit in both orders', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await upload({ purpose: 'fine-tune' }, `{"i":${i}}\n`)).body.id);
    const first = await server.request('GET', '/v1/files?limit=2', A);
    assert.deepEqual(first.body.data.map((f: any) => f.id), [ids[2], ids[1]]);
    assert.equal(first.body.has_more, true);
    const second = await server.request('GET', `/v1/files?limit=2&after=${first.body.last_id}`, A);
    assert.equal(second.body.data[0].id, ids[0]);
    const asc = await server.request('GET', `/v1/files?order=asc&limit=1`, A);
    assert.equal(asc.body.data[0].id, fileId);
  });
});

describe('uploads: bad input', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ env: { API_KEYS: 'sk-a:org-a,sk-b:org-b', MAX_UPLOAD_PART_BYTES: '100', MAX_UPLOAD_BYTES: '1000' } });
  });
  after(() => server.close());

  const create = (body: Record<string, unknown>) =>
    server.request('POST', '/v1/uploads', { ...A, ...json({ filename: 'u.jsonl', purpose: 'fine-tune', bytes: 10, mime_type: 'text/jsonl', ...body }) });
  const part = (id: string, content: string | Buffer, auth = A) =>
    server.request('POST', `/v1/uploads/${id}/parts`, { ...auth, ...form({}, { field: 'data', name: 'blob', content }) });
  const complete = (id: string, body: unknown) => server.request('POST', `/v1/uploads/${id}/complete`, { ...A, ...json(body) });

  it('validates the create request', async () => {
    expectError(await server.request('POST', '/v1/uploads', { ...A, ...json({ filename: 'u.jsonl', purpose: 'fine-tune', bytes: 1 }) }), 400, { param: 'mime_type' });
    expectError(await create({ bytes: -1 }), 400, { param: 'bytes' });
    expectError(await create({ bytes: 'ten' }), 400, { param: 'bytes' });
    expectError(await create({ bytes: 5000 }), 400, { param: 'bytes' });
    expectError(await create({ purpose: 'batch' }), 400, { param: 'purpose' });
    expectError(await create({ extra: 1 }), 400, { param: 'extra' });
    expectError(await create({ filename: 'u.csv' }), 400, { param: 'filename', code: 'invalid_file_format', message: /must be a \.jsonl file/ });
    assert.equal((await create({ filename: 'U.JSONL' })).status, 200);
    expectError(await server.request('POST', '/v1/uploads', { ...A, body: '{"filename":', headers: { 'content-type': 'application/json' } }), 400, { code: 'invalid_json' });
  });

  it('answers 413 for a part over the limit', async () => {
    const { body: upload } = await create({});
    expectError(await part(upload.id, Buffer.alloc(500, 'x')), 413);
  });

  it('checks parts, byte total and md5 on complete', async () => {
    const { body: upload } = await create({ bytes: 10 });
    const p1 = (await part(upload.id, '12345')).body;
    const p2 = (await part(upload.id, '67890')).body;
    expectError(await complete(upload.id, { part_ids: [p1.id] }), 400, { param: 'part_ids', code: 'bytes_mismatch' });
    expectError(await complete(upload.id, { part_ids: [p1.id, 'part_nope'] }), 400, { param: 'part_ids' });
    expectError(await complete(upload.id, { part_ids: [p1.id, p1.id] }), 400, { param: 'part_ids' });
    expectError(await complete(upload.id, { part_ids: [p1.id, p2.id], md5: '0'.repeat(32) }), 400, { param: 'md5' });
    expectError(await complete(upload.id, {}), 400, { param: 'part_ids' });
    const done = await complete(upload.id, { part_ids: [p2.id, p1.id] });
    assert.equal(done.status, 200);
    const content = await server.request('GET', `/v1/files/${done.body.file.id}/content`, A);
    assert.equal(String(content.body), '6789012345');
    // A finished upload takes nothing more.
    expectError(await part(upload.id, 'x'), 400, { code: 'upload_not_pending' });
    expectError(await server.request('POST', `/v1/uploads/${upload.id}/cancel`, A), 400, { code: 'upload_not_pending' });
  });

  it('gives the completed file the expiry asked for on create, counted from the file’s created_at', async () => {
    expectError(await create({ expires_after: { anchor: 'created_at', seconds: 60 } }), 400, { param: 'expires_after.seconds' });
    expectError(await create({ expires_after: { anchor: 'last_active_at', seconds: 3600 } }), 400, { param: 'expires_after.anchor' });
    const completed = async (body: Record<string, unknown>) => {
      const { body: upload } = await create({ bytes: 3, ...body });
      const p = (await part(upload.id, '{}\n')).body;
      const done = await complete(upload.id, { part_ids: [p.id] });
      assert.equal(done.status, 200, JSON.stringify(done.body));
      return done.body.file;
    };
    const expiring = await completed({ expires_after: { anchor: 'created_at', seconds: 7200 } });
    assert.equal(expiring.expires_at, expiring.created_at + 7200);
    assert.deepEqual((await server.request('GET', `/v1/files/${expiring.id}`, A)).body, expiring);
    const kept = await completed({});
    assert.equal('expires_at' in kept, false);
  });

  it('refuses parts after cancel, and hides uploads from other organizations', async () => {
    const { body: upload } = await create({});
    expectError(await part(upload.id, 'x', B), 404);
    expectError(await server.request('POST', `/v1/uploads/${upload.id}/cancel`, B), 404);
    assert.equal((await server.request('POST', `/v1/uploads/${upload.id}/cancel`, A)).body.status, 'cancelled');
    expectError(await part(upload.id, 'x'), 400, { code: 'upload_not_pending' });
    expectError(await server.request('POST', '/v1/uploads/upload_nope/cancel', A), 404);
  });
});

describe('uploads: expiry', () => {
  it('expires a pending upload after its lifetime', async () => {
    const server = await startTestServer({ env: { API_KEYS: 'sk-a:org-a', UPLOAD_EXPIRY_SECONDS: '0' } });
    try {
      const { body: upload } = await server.request('POST', '/v1/uploads', { ...A, ...json({ filename: 'u.jsonl', purpose: 'fine-tune', bytes: 1, mime_type: 'text/jsonl' }) });
      const res = await server.request('POST', `/v1/uploads/${upload.id}/parts`, { ...A, ...form({}, { field: 'data', name: 'b', content: 'x' }) });
      expectError(res, 400, { code: 'upload_not_pending', message: /expired/ });
    } finally {
      await server.close();
    }
  });
});
