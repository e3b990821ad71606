// The Files and Uploads APIs end to end over each blob store (S3: the test server's bucket, as
// BLOB_STORE=s3://… with the AWS variables): a file up and down, an upload in parts (large enough
// for S3's server-side concatenation) with its md5 checked, and deletions that reach the store.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, it } from 'node:test';
import { toFile } from 'openai';
import { describeOnEachBlobStore, testS3Location } from '../support/blob-stores.ts';
import { json, startTestServer, type TestServer } from '../support/server.ts';

const MiB = 1024 * 1024;
const md5 = (data: Buffer) => crypto.createHash('md5').update(data).digest('hex');
const line = (i: number) => `{"messages":[{"role":"user","content":"question ${i}"},{"role":"assistant","content":"answer ${i}"}]}\n`;

describeOnEachBlobStore('Files and Uploads APIs', (kind) => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ env: kind === 's3' ? testS3Location().env : {} });
  });
  after(async () => {
    if (kind === 's3') await server.store.blobs.removePrefix('files').catch(() => undefined);
    await server.close();
  });

  it('stores a file, serves its content and removes it on delete', async () => {
    const client = server.client();
    const content = Buffer.from(Array.from({ length: 20 }, (_, i) => line(i)).join(''));
    const file = await client.files.create({ file: await toFile(content, 'train.jsonl'), purpose: 'fine-tune' });
    assert.equal(file.bytes, content.length);
    assert.deepEqual(Buffer.from(await (await client.files.content(file.id)).arrayBuffer()), content);
    assert.deepEqual(await server.store.blobs.list('files'), [`files/${file.id}`]);
    if (kind === 's3') assert.equal(fs.existsSync(path.join(server.dataDir, 'blobs', 'files')), false, 'nothing on the local disk');
    await client.files.delete(file.id);
    assert.deepEqual(await server.store.blobs.list('files'), []);
  });

  it('assembles an upload from its parts, checks the md5 and drops the parts', async () => {
    const client = server.client();
    const parts = [Buffer.alloc(6 * MiB, 'a'), Buffer.alloc(5 * MiB, 'b'), Buffer.from(line(0))];
    const whole = Buffer.concat(parts);
    const upload = await client.uploads.create({ bytes: whole.length, filename: 'big.jsonl', mime_type: 'text/jsonl', purpose: 'fine-tune' });
    const ids = [];
    for (const [i, data] of parts.entries()) ids.push((await client.uploads.parts.create(upload.id, { data: await toFile(data, `part-${i}`) })).id);
    assert.equal((await server.store.blobs.list(`uploads/${upload.id}`)).length, 3);
    const done = await client.uploads.complete(upload.id, { part_ids: ids, md5: md5(whole) });
    assert.equal(done.status, 'completed');
    assert.equal(done.file!.bytes, whole.length);
    assert.deepEqual(await server.store.blobs.list(`uploads/${upload.id}`), [], 'parts removed');
    const downloaded = Buffer.from(await (await client.files.content(done.file!.id)).arrayBuffer());
    assert.equal(md5(downloaded), md5(whole));
    await client.files.delete(done.file!.id);
    assert.equal(await server.store.blobs.size(`files/${done.file!.id}`), null);
  });

  it('refuses an upload whose md5 does not match, keeping no file', async () => {
    const client = server.client();
    const data = Buffer.from(line(1));
    const upload = await client.uploads.create({ bytes: data.length, filename: 'x.jsonl', mime_type: 'text/jsonl', purpose: 'fine-tune' });
    const part = await client.uploads.parts.create(upload.id, { data: await toFile(data, 'p') });
    const res = await server.request('POST', `/v1/uploads/${upload.id}/complete`, json({ part_ids: [part.id], md5: '0'.repeat(32) }));
    assert.equal(res.status, 400);
    assert.equal(res.body.error.param, 'md5');
    assert.deepEqual(await server.store.blobs.list('files'), []);
  });
});
