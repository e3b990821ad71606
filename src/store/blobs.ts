// Blob store on the local filesystem under DATA_DIR/blobs. Keys are ids chosen by the service
// (never user-supplied names). Writes stream to a temp file and are renamed into place, so a
// reader never sees half a blob and a crash leaves only a temp file behind.
import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
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

export interface BlobStore {
  /** Streams `source` into `key`, failing with BlobTooLargeError past `maxBytes`. */
  put(key: string, source: Readable | AsyncIterable<Buffer>, options?: { maxBytes?: number }): Promise<BlobWriteResult>;
  /** Writes the blobs of `partKeys`, in order, into `key`. */
  concat(key: string, partKeys: string[]): Promise<BlobWriteResult>;
  read(key: string): Readable;
  size(key: string): Promise<number | null>;
  remove(key: string): Promise<void>;
  /** A local path for code that needs one (dataset validation, the engine). */
  localPath(key: string): string;
}

const KEY = /^[A-Za-z0-9_-]+(\/[A-Za-z0-9_-]+)*$/;

export class FsBlobStore implements BlobStore {
  private readonly root: string;
  private readonly tmp: string;

  constructor(dataDir: string) {
    this.root = path.join(dataDir, 'blobs');
    this.tmp = path.join(dataDir, 'tmp');
    fs.mkdirSync(this.root, { recursive: true });
    fs.mkdirSync(this.tmp, { recursive: true });
  }

  localPath(key: string): string {
    if (!KEY.test(key)) throw new Error(`Invalid blob key '${key}'`);
    return path.join(this.root, ...key.split('/'));
  }

  async put(key: string, source: Readable | AsyncIterable<Buffer>, options: { maxBytes?: number } = {}) {
    const target = this.localPath(key);
    const maxBytes = options.maxBytes ?? Infinity;
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
    await this.writeAtomically(target, (tmpPath) => pipeline(source, meter, fs.createWriteStream(tmpPath)));
    return { bytes, md5: hash.digest('hex') };
  }

  async concat(key: string, partKeys: string[]) {
    const target = this.localPath(key);
    const hash = crypto.createHash('md5');
    let bytes = 0;
    await this.writeAtomically(target, async (tmpPath) => {
      const out = fs.createWriteStream(tmpPath);
      try {
        for (const part of partKeys) {
          for await (const chunk of fs.createReadStream(this.localPath(part))) {
            bytes += chunk.length;
            hash.update(chunk);
            if (!out.write(chunk)) await new Promise<void>((r) => out.once('drain', () => r()));
          }
        }
      } finally {
        await new Promise<void>((resolve, reject) => {
          out.once('error', reject);
          out.end(() => resolve());
        });
      }
    });
    return { bytes, md5: hash.digest('hex') };
  }

  read(key: string): Readable {
    return fs.createReadStream(this.localPath(key));
  }

  async size(key: string): Promise<number | null> {
    try {
      return (await fsp.stat(this.localPath(key))).size;
    } catch {
      return null;
    }
  }

  async remove(key: string): Promise<void> {
    await fsp.rm(this.localPath(key), { force: true, recursive: true });
  }

  private async writeAtomically(target: string, write: (tmpPath: string) => Promise<unknown>) {
    const tmpPath = path.join(this.tmp, `${crypto.randomUUID()}.part`);
    try {
      await write(tmpPath);
      await fsp.mkdir(path.dirname(target), { recursive: true });
      await fsp.rename(tmpPath, target);
    } catch (err) {
      await fsp.rm(tmpPath, { force: true });
      throw err;
    }
  }
}
