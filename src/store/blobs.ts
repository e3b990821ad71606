// Blob stores: where files, upload parts and (later) checkpoints and models live. Keys are paths
// of ids chosen by the service (`files/file-abc`, `uploads/upload-x/part-y`), never user-supplied
// names. FsBlobStore keeps them under DATA_DIR/blobs; S3BlobStore (s3-blobs.ts) in a bucket.
// Code that needs a local path (the engine) goes through BlobCache (blob-cache.ts).
import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';

export class BlobTooLargeError extends Error {
  constructor(readonly limit: number) {
    super(`Content exceeds the limit of ${limit} bytes`);
    this.name = 'BlobTooLargeError';
  }
}

export interface BlobWriteResult {
  bytes: number;
  md5: string;
}

export class BlobNotFoundError extends Error {
  constructor(readonly key: string) {
    super(`No blob '${key}'`);
    this.name = 'BlobNotFoundError';
  }
}

/**
 * A blob is written once under its key and never changed (a new version gets a new key), which is
 * what lets BlobCache keep copies. A prefix is a key's leading segments: `uploads/u1` holds
 * `uploads/u1/p1` but not `uploads/u10/p1`.
 */
export interface BlobStore {
  /** Streams `source` into `key`, failing with BlobTooLargeError past `maxBytes`. */
  put(key: string, source: Readable | AsyncIterable<Buffer>, options?: { maxBytes?: number }): Promise<BlobWriteResult>;
  /** Writes the blobs of `partKeys`, in order, into `key`. */
  concat(key: string, partKeys: string[]): Promise<BlobWriteResult>;
  /** The blob's content; a missing blob fails the stream with BlobNotFoundError. */
  read(key: string): Readable;
  /** Streams the blob into the local `file` (replaced whole, never half-written); BlobNotFoundError when missing. */
  download(key: string, file: string): Promise<void>;
  /** Bytes, or null when there is no such blob. */
  size(key: string): Promise<number | null>;
  /** The keys under `prefix` ('' for all), sorted. */
  list(prefix: string): Promise<string[]>;
  /** Removes one blob; nothing when it is missing. */
  remove(key: string): Promise<void>;
  /** Removes every blob under `prefix`. */
  removePrefix(prefix: string): Promise<void>;
}

/** Segments of letters, digits, _, - and . (file names such as adapter_config.json), never starting with a dot (no `.` or `..`). */
const KEY = /^[A-Za-z0-9_-][A-Za-z0-9._-]*(\/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$/;
/** writeFileAtomically's temp files. */
const TEMP_FILE = /\.[0-9a-f-]{36}\.part$/;

/** Throws unless `key` is a well-formed key (or prefix): safe path segments joined by '/'. */
export function checkKey(key: string): string {
  if (!KEY.test(key)) throw new Error(`Invalid blob key '${key}'`);
  return key;
}

/** Counts the bytes and md5 of what flows through, failing with BlobTooLargeError past `maxBytes`. */
export function blobMeter(maxBytes = Infinity): { meter: Transform; result(): BlobWriteResult } {
  const hash = crypto.createHash('md5');
  let bytes = 0;
  const meter = new Transform({
    transform(chunk: Buffer, _enc, done) {
      bytes += chunk.length;
      if (bytes > maxBytes) return done(new BlobTooLargeError(maxBytes));
      hash.update(chunk);
      done(null, chunk);
    },
  });
  return { meter, result: () => ({ bytes, md5: hash.digest('hex') }) };
}

/** Writes a local file through a temp file beside it, renamed into place: readers never see half a file. */
export async function writeFileAtomically(target: string, write: (tmpPath: string) => Promise<unknown>): Promise<void> {
  await fsp.mkdir(path.dirname(target), { recursive: true });
  const tmpPath = `${target}.${crypto.randomUUID()}.part`;
  try {
    await write(tmpPath);
    await fsp.rename(tmpPath, target);
  } catch (err) {
    await fsp.rm(tmpPath, { force: true });
    throw err;
  }
}

/**
 * Blobs as files under DATA_DIR/blobs. Writes stream to a temp file and are renamed into place, so
 * a reader never sees half a blob and a crash leaves only a temp file behind.
 */
export class FsBlobStore implements BlobStore {
  private readonly root: string;

  constructor(dataDir: string) {
    this.root = path.join(dataDir, 'blobs');
    fs.mkdirSync(this.root, { recursive: true });
  }

  /** Where `key` (a blob or a prefix) lives on disk: BlobCache hands these out instead of copying. */
  pathOf(key: string): string {
    return path.join(this.root, ...checkKey(key).split('/'));
  }

  async put(key: string, source: Readable | AsyncIterable<Buffer>, options: { maxBytes?: number } = {}) {
    const { meter, result } = blobMeter(options.maxBytes);
    await writeFileAtomically(this.pathOf(key), (tmpPath) => pipeline(source, meter, fs.createWriteStream(tmpPath)));
    return result();
  }

  concat(key: string, partKeys: string[]) {
    return this.put(key, concatenated(this, partKeys));
  }

  read(key: string): Readable {
    const file = this.pathOf(key);
    return Readable.from(
      (async function* () {
        try {
          yield* fs.createReadStream(file);
        } catch (err) {
          throw isMissing(err) ? new BlobNotFoundError(key) : err;
        }
      })(),
      { objectMode: false },
    );
  }

  async download(key: string, file: string): Promise<void> {
    await writeFileAtomically(file, (tmpPath) =>
      fsp.copyFile(this.pathOf(key), tmpPath).catch((err: unknown) => {
        throw isMissing(err) ? new BlobNotFoundError(key) : err;
      }),
    );
  }

  async size(key: string): Promise<number | null> {
    try {
      const stat = await fsp.stat(this.pathOf(key));
      return stat.isFile() ? stat.size : null;
    } catch {
      return null;
    }
  }

  async list(prefix: string): Promise<string[]> {
    const dir = prefix === '' ? this.root : this.pathOf(prefix);
    let entries: fs.Dirent[];
    try {
      entries = await fsp.readdir(dir, { withFileTypes: true, recursive: true });
    } catch (err) {
      if (isMissing(err) || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return [];
      throw err;
    }
    return entries
      .filter((e) => e.isFile())
      .map((e) => path.relative(this.root, path.join(e.parentPath, e.name)).split(path.sep).join('/'))
      .filter((key) => KEY.test(key) && !TEMP_FILE.test(key)) // not temp files of writes in progress
      .sort();
  }

  async remove(key: string): Promise<void> {
    await fsp.rm(this.pathOf(key), { force: true });
  }

  async removePrefix(prefix: string): Promise<void> {
    await fsp.rm(this.pathOf(prefix), { force: true, recursive: true });
  }
}

/** The blobs of `keys`, one after the other, as one stream. */
export function concatenated(store: BlobStore, keys: string[]): Readable {
  return Readable.from(
    (async function* () {
      for (const key of keys) yield* store.read(key);
    })(),
    { objectMode: false },
  );
}

function isMissing(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
}
