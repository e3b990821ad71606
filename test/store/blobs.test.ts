// The blob stores' shared behaviour, run against each store (test/support/blob-stores.ts says which
// can run here): streaming writes with size and md5, size limits, concatenation, downloads,
// listing and removal by prefix, missing keys.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { after, before, it } from 'node:test';
import v8 from 'node:v8';
import vm from 'node:vm';
import { BlobNotFoundError, BlobTooLargeError, type BlobStore } from '../../src/store/blobs.ts';
import { describeOnEachBlobStore, openTestBlobStore, type TestBlobStore } from '../support/blob-stores.ts';

const MiB = 1024 * 1024;

/** `total` bytes of a repeating pattern, in 64 KiB chunks made as they are read. */
async function* pattern(total: number): AsyncGenerator<Buffer> {
  for (let at = 0; at < total; at += 64 * 1024) {
    const chunk = Buffer.alloc(Math.min(64 * 1024, total - at));
    for (let i = 0; i < chunk.length; i += 4) chunk.writeUInt32LE((at + i) >>> 2, i);
    yield chunk;
  }
}

// A full collection before each sample, so the figure is what the transfer holds, not garbage.
v8.setFlagsFromString('--expose-gc');
const collectGarbage = vm.runInNewContext('gc') as () => void;

/** Samples the memory live in Buffers; stop() gives its largest growth since the start. */
function watchBufferMemory(): { stop(): number } {
  const live = () => {
    collectGarbage();
    return process.memoryUsage().arrayBuffers;
  };
  const start = live();
  let peak = start;
  const timer = setInterval(() => (peak = Math.max(peak, live())), 100);
  return {
    stop() {
      clearInterval(timer);
      return peak - start;
    },
  };
}

const md5 = (data: string | Buffer) => crypto.createHash('md5').update(data).digest('hex');

describeOnEachBlobStore('blob store', (kind) => {
  let opened: TestBlobStore;
  let blobs: BlobStore;
  let scratch: string;
  before(async () => {
    opened = await openTestBlobStore(kind);
    blobs = opened.store;
    scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'tuneforge-blob-downloads-'));
  });
  after(async () => {
    await opened.close();
    fs.rmSync(scratch, { recursive: true, force: true });
  });

  it('streams a blob in and reports its size and md5', async () => {
    const res = await blobs.put('files/file-a', Readable.from([Buffer.from('hello '), Buffer.from('world')]));
    assert.deepEqual(res, { bytes: 11, md5: md5('hello world') });
    assert.equal(await text(blobs.read('files/file-a')), 'hello world');
    assert.equal(await blobs.size('files/file-a'), 11);
  });

  it('stores an empty blob', async () => {
    assert.deepEqual(await blobs.put('files/file-empty', Readable.from([])), { bytes: 0, md5: md5('') });
    assert.equal(await blobs.size('files/file-empty'), 0);
    assert.equal(await text(blobs.read('files/file-empty')), '');
  });

  it('stops at the size limit and leaves no blob behind', async () => {
    await assert.rejects(blobs.put('files/file-big', Readable.from([Buffer.alloc(600), Buffer.alloc(600)]), { maxBytes: 1000 }), BlobTooLargeError);
    assert.equal(await blobs.size('files/file-big'), null);
    assert.deepEqual(await blobs.list('files/file-big'), []);
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
    assert.equal(await text(blobs.read('files/file-keep')), 'original');
  });

  it('concatenates parts in the given order', async () => {
    await blobs.put('uploads/u1/p1', Readable.from([Buffer.from('abc')]));
    await blobs.put('uploads/u1/p2', Readable.from([Buffer.from('def')]));
    const res = await blobs.concat('files/file-joined', ['uploads/u1/p2', 'uploads/u1/p1']);
    assert.deepEqual(res, { bytes: 6, md5: md5('defabc') });
    assert.equal(await text(blobs.read('files/file-joined')), 'defabc');
  });

  it('downloads a blob to a local file, replacing what was there', async () => {
    await blobs.put('models/m1/config', Readable.from([Buffer.from('{"a":1}')]));
    const file = path.join(scratch, 'nested', 'config.json');
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, 'an older, longer content');
    await blobs.download('models/m1/config', file);
    assert.equal(fs.readFileSync(file, 'utf8'), '{"a":1}');
    assert.deepEqual(fs.readdirSync(path.dirname(file)), ['config.json'], 'no temp file left');
  });

  it('lists the keys under a prefix, sorted, and only whole segments', async () => {
    for (const key of ['jobs/j1/ckpt/b', 'jobs/j1/ckpt/a', 'jobs/j1/final/w', 'jobs/j10/x']) await blobs.put(key, Readable.from([Buffer.from(key)]));
    assert.deepEqual(await blobs.list('jobs/j1'), ['jobs/j1/ckpt/a', 'jobs/j1/ckpt/b', 'jobs/j1/final/w']);
    assert.deepEqual(await blobs.list('jobs/j1/ckpt'), ['jobs/j1/ckpt/a', 'jobs/j1/ckpt/b']);
    assert.deepEqual(await blobs.list('jobs/none'), []);
    assert.ok((await blobs.list('')).includes('jobs/j10/x'));
  });

  it('removes one blob, or everything under a prefix and nothing beside it', async () => {
    for (const key of ['runs/r1/a', 'runs/r1/sub/b', 'runs/r10/c', 'runs/r2']) await blobs.put(key, Readable.from([Buffer.from('x')]));
    await blobs.remove('runs/r2');
    await blobs.remove('runs/r2'); // missing: nothing to do
    assert.equal(await blobs.size('runs/r2'), null);
    await blobs.removePrefix('runs/r1');
    assert.deepEqual(await blobs.list('runs'), ['runs/r10/c']);
    await blobs.removePrefix('runs/none');
  });

  it('reports a missing blob as BlobNotFoundError when read or downloaded, null as its size', async () => {
    assert.equal(await blobs.size('files/file-missing'), null);
    await assert.rejects(text(blobs.read('files/file-missing')), BlobNotFoundError);
    const file = path.join(scratch, 'missing');
    await assert.rejects(blobs.download('files/file-missing', file), BlobNotFoundError);
    assert.equal(fs.existsSync(file), false);
  });

  it('round-trips a blob larger than a multipart part, streaming both ways in bounded memory', async (t) => {
    const total = 96 * MiB;
    const expected = crypto.createHash('md5');
    for await (const chunk of pattern(total)) expected.update(chunk);
    const peak = watchBufferMemory();
    const written = await blobs.put('files/file-large', Readable.from(pattern(total)));
    const read = crypto.createHash('md5');
    let bytes = 0;
    for await (const chunk of blobs.read('files/file-large')) {
      read.update(chunk);
      bytes += chunk.length;
    }
    const grew = peak.stop();
    t.diagnostic(`live buffers grew by ${(grew / MiB).toFixed(1)} MiB moving ${total / MiB} MiB`);
    assert.deepEqual(written, { bytes: total, md5: expected.digest('hex') });
    assert.equal(bytes, total);
    assert.equal(read.digest('hex'), written.md5);
    assert.equal(await blobs.size('files/file-large'), total);
    // Never the whole blob: S3 holds the part being filled and those in flight (5 MiB each, ~20
    // MiB measured); freed buffers are counted late, hence the margin.
    assert.ok(grew < total / 2, `live buffers grew by ${(grew / MiB).toFixed(1)} MiB moving ${total / MiB} MiB`);
  });

  it('stops a multipart upload at the size limit', async () => {
    await assert.rejects(blobs.put('files/file-over', Readable.from(pattern(12 * MiB)), { maxBytes: 8 * MiB }), BlobTooLargeError);
    assert.equal(await blobs.size('files/file-over'), null);
  });

  it('concatenates parts of multipart size (server-side on S3) with the md5 of the whole', async () => {
    const parts = { 'uploads/u2/p1': 6 * MiB, 'uploads/u2/p2': 5 * MiB, 'uploads/u2/p3': 1000 };
    const whole = crypto.createHash('md5');
    for (const [key, size] of Object.entries(parts)) {
      const content = Buffer.alloc(size, key.at(-1));
      whole.update(content);
      await blobs.put(key, Readable.from([content]));
    }
    const res = await blobs.concat('files/file-big-joined', Object.keys(parts));
    const md5 = whole.digest('hex');
    assert.deepEqual(res, { bytes: 11 * MiB + 1000, md5 });
    const read = crypto.createHash('md5');
    for await (const chunk of blobs.read('files/file-big-joined')) read.update(chunk);
    assert.equal(read.digest('hex'), md5);
  });

  it('rejects keys that are not paths of safe segments', async () => {
    for (const key of ['../x', 'files/../../x', '/etc/passwd', 'files/a b', '', 'files//x', 'files/..', 'files/.hidden']) {
      await assert.rejects(async () => blobs.put(key, Readable.from([Buffer.from('x')])), /Invalid blob key/, key);
      await assert.rejects(async () => blobs.removePrefix(key), /Invalid blob key/, key);
    }
  });

  it('takes file names as the last segment (a folder of files is a prefix)', async () => {
    await blobs.put('jobs/j9/checkpoints/step-2/adapter_config.json', Readable.from([Buffer.from('{}')]));
    await blobs.put('base-models/Qwen2.5-0.5B/config.json', Readable.from([Buffer.from('{}')]));
    assert.deepEqual(await blobs.list('jobs/j9'), ['jobs/j9/checkpoints/step-2/adapter_config.json']);
    assert.deepEqual(await blobs.list('base-models/Qwen2.5-0.5B'), ['base-models/Qwen2.5-0.5B/config.json']);
  });
});
