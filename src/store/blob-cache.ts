// Local copies of blobs for code that needs a path (the engine reads datasets and models from
// disk). A bounded folder: least recently used copies are evicted past `maxBytes`, except those a
// lease still holds. Blobs never change under a key (blobs.ts), so a copy never goes stale.
// With the filesystem store there is nothing to copy: leases hand out the store's own paths.
//
// Copies found at start (from an earlier run) are kept and indexed. One process owns the folder
// (owner.pid); another process given the same folder (an API and a worker sharing DATA_DIR) keeps
// its copies in a folder of its own inside, process-<pid>, so neither removes what the other uses.
import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { BlobNotFoundError, checkKey, FsBlobStore, type BlobStore } from './blobs.ts';

export interface BlobCacheOptions {
  /** The cache folder (BLOB_CACHE_DIR). */
  dir: string;
  /** Bytes of copies kept once no lease holds them (BLOB_CACHE_MAX_BYTES). */
  maxBytes: number;
}

/** Local paths that stay on disk until release(); release once done with all of them. */
export interface BlobLease {
  /** A local file with the blob's content. */
  file(key: string): Promise<string>;
  /** A local folder with every blob under `prefix`, at the same relative paths; BlobNotFoundError when there are none. */
  dir(prefix: string): Promise<string>;
  release(): void;
}

interface Entry {
  path: string;
  bytes: number;
  /** Leases holding it. */
  pins: number;
  ready: Promise<void>;
}

/** Copies live flat in two folders, `blob/` and `prefix/`; '+' stands for '/', which no key segment contains. */
const flatName = (key: string) => checkKey(key).replaceAll('/', '+');

export class BlobCache {
  /** In least recently used order: Map keeps insertion order, and a use re-inserts. */
  private readonly entries = new Map<string, Entry>();
  private held = 0;
  /** Indexing what an earlier run left, begun by the first lease: a store that never leases does no I/O here. */
  private started: Promise<void> | null = null;
  /** Where this process's copies live: the cache folder, or its own folder inside (claimRoot). */
  private root: string;

  constructor(
    private readonly store: BlobStore,
    private readonly options: BlobCacheOptions,
  ) {
    this.root = options.dir;
  }

  /** Bytes of the copies on disk now (those in use included). */
  get bytes(): number {
    return this.held;
  }

  lease(): BlobLease {
    const held: Entry[] = [];
    let released = false;
    const use = async (local: () => Promise<{ path: string } | Entry>) => {
      if (released) throw new Error('This blob lease was released');
      await (this.started ??= this.indexExisting());
      const got = await local();
      if ('pins' in got) held.push(got);
      return got.path;
    };
    return {
      file: (key) => use(() => this.fileEntry(key)),
      dir: (prefix) => use(() => this.dirEntry(prefix)),
      release: () => {
        if (released) return;
        released = true;
        for (const entry of held) entry.pins--;
        this.evict();
      },
    };
  }

  private async fileEntry(key: string): Promise<{ path: string } | Entry> {
    if (this.store instanceof FsBlobStore) {
      if ((await this.store.size(key)) === null) throw new BlobNotFoundError(key);
      return { path: this.store.pathOf(key) };
    }
    return this.entry(`blob/${flatName(key)}`, async () => {
      const bytes = await this.store.size(key);
      if (bytes === null) throw new BlobNotFoundError(key);
      return { bytes, fetch: (target) => this.store.download(key, target) };
    });
  }

  private async dirEntry(prefix: string): Promise<{ path: string } | Entry> {
    if (this.store instanceof FsBlobStore) {
      if ((await this.store.list(prefix)).length === 0) throw new BlobNotFoundError(prefix);
      return { path: this.store.pathOf(prefix) };
    }
    return this.entry(`prefix/${flatName(prefix)}`, async () => {
      const keys = await this.store.list(prefix);
      if (keys.length === 0) throw new BlobNotFoundError(prefix);
      let bytes = 0;
      for (const key of keys) bytes += (await this.store.size(key)) ?? 0;
      return {
        bytes,
        fetch: async (target) => {
          await fsp.mkdir(target, { recursive: true });
          for (const key of keys) await this.store.download(key, path.join(target, ...key.slice(prefix.length + 1).split('/')));
        },
      };
    });
  }

  /**
   * The entry `id`, pinned once more: an existing one (waiting for its copy when in progress), or a
   * new one whose copy is made beside its place and renamed there when complete.
   */
  private async entry(id: string, plan: () => Promise<{ bytes: number; fetch: (target: string) => Promise<void> }>): Promise<Entry> {
    let entry = this.entries.get(id);
    if (entry) {
      this.entries.delete(id);
      this.entries.set(id, entry);
      entry.pins++;
    } else {
      const target = path.join(this.root, id);
      const created: Entry = { path: target, bytes: 0, pins: 1, ready: Promise.resolve() };
      created.ready = (async () => {
        const { bytes, fetch } = await plan();
        created.bytes = bytes;
        this.held += bytes;
        this.evict(); // room first, so concurrent copies do not overrun the bound together
        const tmp = `${target}.${crypto.randomUUID()}.part`;
        try {
          await fetch(tmp);
          await fsp.rename(tmp, target);
        } finally {
          await fsp.rm(tmp, { recursive: true, force: true });
        }
      })();
      created.ready.catch(() => {
        if (this.entries.get(id) === created) this.entries.delete(id);
        this.held -= created.bytes;
      });
      this.entries.set(id, created);
      entry = created;
    }
    try {
      await entry.ready;
    } catch (err) {
      entry.pins--;
      throw err;
    }
    return entry;
  }

  /** Removes least recently used copies no lease holds until the bytes are within the bound. */
  private evict(): void {
    for (const [id, entry] of this.entries) {
      if (this.held <= this.options.maxBytes) return;
      if (entry.pins > 0) continue;
      this.entries.delete(id);
      this.held -= entry.bytes;
      // At once: a new copy of the same blob may be renamed into this place right after.
      fs.rmSync(entry.path, { recursive: true, force: true });
    }
  }

  /**
   * The cache folder when this process owns it (or takes it over from an owner that is gone), else
   * process-<pid> inside it. Either way, the folders of processes that are gone are removed.
   */
  private async claimRoot(): Promise<string> {
    const dir = this.options.dir;
    await fsp.mkdir(dir, { recursive: true });
    const ownerFile = path.join(dir, 'owner.pid');
    let root = dir;
    for (;;) {
      try {
        await fsp.writeFile(ownerFile, String(process.pid), { flag: 'wx' });
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const owner = Number(await fsp.readFile(ownerFile, 'utf8').catch(() => ''));
      if (owner === process.pid) break;
      if (isAlive(owner)) {
        root = path.join(dir, `process-${process.pid}`);
        break;
      }
      await fsp.rm(ownerFile, { force: true });
    }
    for (const name of await fsp.readdir(dir)) {
      const pid = /^process-(\d+)$/.exec(name)?.[1];
      if (pid && Number(pid) !== process.pid && !isAlive(Number(pid))) await fsp.rm(path.join(dir, name), { recursive: true, force: true });
    }
    return root;
  }

  /** Copies left by an earlier run become entries (oldest first); unfinished ones are removed. */
  private async indexExisting(): Promise<void> {
    this.root = await this.claimRoot();
    const found: { id: string; path: string; bytes: number; mtimeMs: number }[] = [];
    for (const kind of ['blob', 'prefix']) {
      const dir = path.join(this.root, kind);
      await fsp.mkdir(dir, { recursive: true });
      for (const name of await fsp.readdir(dir)) {
        const full = path.join(dir, name);
        if (name.endsWith('.part')) {
          await fsp.rm(full, { recursive: true, force: true });
          continue;
        }
        const stat = await fsp.stat(full);
        found.push({ id: `${kind}/${name}`, path: full, bytes: await diskBytes(full), mtimeMs: stat.mtimeMs });
      }
    }
    for (const f of found.sort((a, b) => a.mtimeMs - b.mtimeMs)) {
      this.entries.set(f.id, { path: f.path, bytes: f.bytes, pins: 0, ready: Promise.resolve() });
      this.held += f.bytes;
    }
    this.evict();
  }
}

/** Whether process `pid` is running (on this host). */
function isAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function diskBytes(file: string): Promise<number> {
  const stat = await fsp.stat(file);
  if (!stat.isDirectory()) return stat.size;
  let total = 0;
  for (const name of await fsp.readdir(file)) total += await diskBytes(path.join(file, name));
  return total;
}
