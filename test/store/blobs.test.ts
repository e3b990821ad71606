import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { BlobTooLargeError, FsBlobStore } from '../../src/store/blobs.ts';

describe('filesystem blob store', () => {
  let dir: string;
  let blobs: FsBlobStore;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tuneforge-blobs-'));
    blobs = new FsBlobStore(dir);
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('streams a blob in and reports its size and md5', async () => {
    const chunks = [Buffer.from('hello '), Buffer.from('world')];
    const res = await blobs.put('files/file-a', Readable.from(chunks));
    assert.deepEqual(res, { bytes: 11, md5: crypto.createHash('md5').update('hello world').digest('hex') });
    assert.equal(fs.readFileSync(blobs.localPath('files/file-a'), 'utf8'), 'hello world');
    assert.equal(await blobs.size('files/file-a'), 11);
  });

  it('stops at the size limit and leaves neither the blob nor a temp file', async () => {
    await assert.rejects(blobs.put('files/file-big', Readable.from([Buffer.alloc(600), Buffer.alloc(600)]), { maxBytes: 1000 }), BlobTooLargeError);
    assert.equal(await blobs.size('files/file-big'), null);
    assert.deepEqual(fs.readdirSync(path.join(dir, 'tmp')), []);
  });

  it('keeps the previous content when a rewrite fails part-way', async () => {
    await blobs.put('files/file-keep', Readable.from([Buffer.from('original')]));
    const failing = new Readable({
      read() {
        this.push(Buffer.from('partial'));
        this.destroy(new Error('client went away'));
      },
    });
    await assert.rejects(blobs.put('files/file-keep', failing), /client went away/);
    assert.equal(fs.readFileSync(blobs.localPath('files/file-keep'), 'utf8'), 'original');
  });

  it('concatenates parts in the given order', async () => {
    await blobs.put('uploads/u1/p1', Readable.from([Buffer.from('abc')]));
    await blobs.put('uploads/u1/p2', Readable.from([Buffer.from('def')]));
    const res = await blobs.concat('files/file-joined', ['uploads/u1/p2', 'uploads/u1/p1']);
    assert.equal(res.bytes, 6);
    assert.equal(fs.readFileSync(blobs.localPath('files/file-joined'), 'utf8'), 'defabc');
    await blobs.remove('uploads/u1');
    assert.equal(await blobs.size('uploads/u1/p1'), null);
  });

  it('rejects keys that could escape its folder', () => {
    for (const key of ['../x', 'files/../../x', '/etc/passwd', 'files/a b', '', 'files//x']) {
      assert.throws(() => blobs.localPath(key), /Invalid blob key/, key);
    }
  });
});
