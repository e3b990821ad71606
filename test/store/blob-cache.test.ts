// The blob cache: local copies for code that needs paths, bounded in bytes, least recently used
// evicted first, never what a lease holds; copies survive a restart. Over a real store seen only
// through the BlobStore interface (so it copies, as it does from S3), and over FsBlobStore itself.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { BlobCache } from '../../src/store/blob-cache.ts';
import { BlobNotFoundError, FsBlobStore, type BlobStore } from '../../src/store/blobs.ts';

/** A FsBlobStore behind the interface only, counting downloads. */
function remoteLike(inner: FsBlobStore): BlobStore & { downloads: string[] } {
  const downloads: string[] = [];
  return {
    downloads,
    put: (key, source, options) => inner.put(key, source, options),
    concat: (key, parts) => inner.concat(key, parts),
    read: (key) => inner.read(key),
    download: (key, file) => {
      downloads.push(key);
      return inner.download(key, file);
    },
    size: (key) => inner.size(key),
    list: (prefix) => inner.list(prefix),
    remove: (key) => inner.remove(key),
    removePrefix: (prefix) => inner.removePrefix(prefix),
  };
}

const put = (store: BlobStore, key: string, content: string | Buffer) => store.put(key, Readable.from([Buffer.from(content)]));

describe('blob cache', () => {
  let dir: string;
  let inner: FsBlobStore;
  let store: ReturnType<typeof remoteLike>;
  let cacheDir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tuneforge-cache-'));
    inner = new FsBlobStore(path.join(dir, 'data'));
    store = remoteLike(inner);
    cacheDir = path.join(dir, 'cache');
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('copies a blob once and hands the same local file to later leases', async () => {
    await put(store, 'files/file-a', 'hello');
    const cache = new BlobCache(store, { dir: cacheDir, maxBytes: 1000 });
    const first = cache.lease();
    const file = await first.file('files/file-a');
    assert.ok(file.startsWith(cacheDir));
    assert.equal(fs.readFileSync(file, 'utf8'), 'hello');
    first.release();
    const second = cache.lease();
    assert.equal(await second.file('files/file-a'), file);
    second.release();
    assert.deepEqual(store.downloads, ['files/file-a']);
    assert.equal(cache.bytes, 5);
  });

  it('copies one blob once when leases ask for it at the same time', async () => {
    await put(store, 'files/file-a', 'hello');
    const cache = new BlobCache(store, { dir: cacheDir, maxBytes: 1000 });
    const leases = [cache.lease(), cache.lease(), cache.lease()];
    const files = await Promise.all(leases.map((l) => l.file('files/file-a')));
    assert.equal(new Set(files).size, 1);
    assert.deepEqual(store.downloads, ['files/file-a']);
  });

  it('evicts the least recently used copies past its bound', async () => {
    for (const name of ['a', 'b', 'c']) await put(store, `files/file-${name}`, Buffer.alloc(100, name));
    const cache = new BlobCache(store, { dir: cacheDir, maxBytes: 250 });
    const paths: Record<string, string> = {};
    for (const name of ['a', 'b', 'a', 'c']) {
      const lease = cache.lease();
      paths[name] = await lease.file(`files/file-${name}`);
      lease.release();
    }
    // a was used after b: b goes when c arrives.
    assert.equal(fs.existsSync(paths.b), false);
    assert.ok(fs.existsSync(paths.a) && fs.existsSync(paths.c));
    assert.equal(cache.bytes, 200);
    const again = cache.lease();
    assert.equal(fs.readFileSync(await again.file('files/file-b'), 'utf8'), 'b'.repeat(100));
    again.release();
    assert.deepEqual(store.downloads, ['files/file-a', 'files/file-b', 'files/file-c', 'files/file-b']);
  });

  it('never evicts what a lease holds, and trims to its bound once released', async () => {
    for (const name of ['a', 'b', 'c']) await put(store, `files/file-${name}`, Buffer.alloc(100, name));
    const cache = new BlobCache(store, { dir: cacheDir, maxBytes: 150 });
    const lease = cache.lease();
    const held = [];
    for (const name of ['a', 'b', 'c']) held.push(await lease.file(`files/file-${name}`));
    for (const file of held) assert.equal(fs.readFileSync(file).length, 100, 'over the bound, but in use');
    assert.equal(cache.bytes, 300);
    lease.release();
    assert.equal(cache.bytes, 100);
    assert.deepEqual(held.map((f) => fs.existsSync(f)), [false, false, true]);
    await assert.rejects(lease.file('files/file-a'), /released/);
  });

  it('copies every blob under a prefix into one folder at their relative paths', async () => {
    await put(store, 'models/m1/config', '{}');
    await put(store, 'models/m1/weights/part-1', 'w1');
    await put(store, 'models/m10/config', 'not this one');
    const cache = new BlobCache(store, { dir: cacheDir, maxBytes: 1000 });
    const lease = cache.lease();
    const folder = await lease.dir('models/m1');
    assert.equal(fs.readFileSync(path.join(folder, 'config'), 'utf8'), '{}');
    assert.equal(fs.readFileSync(path.join(folder, 'weights', 'part-1'), 'utf8'), 'w1');
    assert.deepEqual(fs.readdirSync(folder).sort(), ['config', 'weights']);
    assert.equal(cache.bytes, 4);
    lease.release();
  });

  it('fails with BlobNotFoundError for a missing blob or an empty prefix, and keeps no entry', async () => {
    const cache = new BlobCache(store, { dir: cacheDir, maxBytes: 1000 });
    const lease = cache.lease();
    await assert.rejects(lease.file('files/file-none'), BlobNotFoundError);
    await assert.rejects(lease.dir('models/none'), BlobNotFoundError);
    await put(store, 'files/file-none', 'now it exists');
    assert.equal(fs.readFileSync(await lease.file('files/file-none'), 'utf8'), 'now it exists');
    lease.release();
  });

  it('keeps the copies of an earlier run and removes its unfinished ones', async () => {
    await put(store, 'files/file-a', 'hello');
    await put(store, 'models/m1/config', '{}');
    const before = new BlobCache(store, { dir: cacheDir, maxBytes: 1000 });
    const lease = before.lease();
    const file = await lease.file('files/file-a');
    const folder = await lease.dir('models/m1');
    lease.release();
    fs.writeFileSync(path.join(cacheDir, 'blob', 'files+file-b.1234.part'), 'half');

    const after = new BlobCache(store, { dir: cacheDir, maxBytes: 1000 });
    const again = after.lease();
    assert.equal(await again.file('files/file-a'), file);
    assert.equal(await again.dir('models/m1'), folder);
    again.release();
    assert.equal(after.bytes, 7);
    assert.deepEqual(store.downloads, ['files/file-a', 'models/m1/config']);
    assert.deepEqual(fs.readdirSync(path.join(cacheDir, 'blob')), ['files+file-a']);
  });

  it('keeps its copies apart while another live process owns the folder, and clears those of processes gone', async () => {
    await put(store, 'files/file-a', 'hello');
    fs.mkdirSync(cacheDir, { recursive: true });
    fs.writeFileSync(path.join(cacheDir, 'owner.pid'), String(process.ppid)); // the test runner: alive
    const gone = path.join(cacheDir, 'process-999999999');
    fs.mkdirSync(path.join(gone, 'blob'), { recursive: true });
    fs.writeFileSync(path.join(gone, 'blob', 'files+file-x'), 'left by a process that is gone');
    const cache = new BlobCache(store, { dir: cacheDir, maxBytes: 1000 });
    const lease = cache.lease();
    const file = await lease.file('files/file-a');
    lease.release();
    assert.equal(path.relative(cacheDir, file), path.join(`process-${process.pid}`, 'blob', 'files+file-a'));
    assert.equal(fs.existsSync(gone), false);

    // Once the owner is gone, the next cache takes the folder over.
    fs.writeFileSync(path.join(cacheDir, 'owner.pid'), '999999999');
    const next = new BlobCache(store, { dir: cacheDir, maxBytes: 1000 });
    const again = next.lease();
    assert.equal(path.dirname(path.dirname(await again.file('files/file-a'))), cacheDir);
    again.release();
    assert.equal(fs.readFileSync(path.join(cacheDir, 'owner.pid'), 'utf8'), String(process.pid));
  });

  it('hands out the filesystem store’s own paths without copying', async () => {
    await put(inner, 'files/file-a', 'hello');
    await put(inner, 'models/m1/config', '{}');
    const cache = new BlobCache(inner, { dir: cacheDir, maxBytes: 1000 });
    const lease = cache.lease();
    assert.equal(await lease.file('files/file-a'), inner.pathOf('files/file-a'));
    assert.equal(await lease.dir('models/m1'), inner.pathOf('models/m1'));
    await assert.rejects(lease.file('files/file-none'), BlobNotFoundError);
    lease.release();
    assert.equal(cache.bytes, 0);
  });
});
