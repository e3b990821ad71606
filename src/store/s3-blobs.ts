// Blobs in an S3-compatible bucket (AWS, Ceph's radosgw, MinIO…) under a key prefix: BLOB_STORE=
// s3://bucket/prefix. Everything streams: uploads go up in parts as they arrive (multipart past
// one part), downloads come down as they are read; no blob is held whole in memory.
import fs from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  S3Client,
  UploadPartCopyCommand,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { blobMeter, BlobNotFoundError, checkKey, concatenated, writeFileAtomically, type BlobStore, type BlobWriteResult } from './blobs.ts';

/** How to reach the bucket: AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY. */
export interface S3Settings {
  /** An S3-compatible server (path-style addressing, as Ceph and MinIO need); null: AWS itself. */
  endpoint: string | null;
  region: string;
  /** null: the SDK's default chain (environment, profile, instance or pod role). */
  credentials: { accessKeyId: string; secretAccessKey: string } | null;
}

/** S3's smallest part but the last: uploads go up in parts of this size, and concat copies server-side only parts this big. */
export const MULTIPART_PART_BYTES = 5 * 1024 * 1024;
/** Parts in flight per upload: with the part size, what an upload may buffer. */
const UPLOAD_QUEUE = 2;

export class S3BlobStore implements BlobStore {
  readonly bucket: string;
  /** Prepended to every key, with a '/': '' for the bucket's root. */
  private readonly root: string;
  private readonly client: S3Client;

  /** `url`: s3://bucket or s3://bucket/prefix. */
  constructor(url: string, settings: S3Settings) {
    const parsed = /^s3:\/\/([^/]+)((?:\/[A-Za-z0-9_-]+)*)\/?$/.exec(url);
    if (!parsed) throw new Error(`Not an s3://bucket/prefix URL: '${url}'`);
    this.bucket = parsed[1];
    this.root = parsed[2] ? `${parsed[2].slice(1)}/` : '';
    this.client = new S3Client({
      region: settings.region,
      ...(settings.endpoint ? { endpoint: settings.endpoint, forcePathStyle: true } : {}),
      ...(settings.credentials ? { credentials: settings.credentials } : {}),
      // Deadlines: a server that stops answering fails the request (retried by the SDK) instead of hanging it.
      requestHandler: { connectionTimeout: 10_000, requestTimeout: 120_000 },
      // Checksums only where S3 requires them: the SDK's default (CRC32 trailers on every
      // upload) is newer than some S3-compatible servers; our own md5 covers the content.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
  }

  private objectKey(key: string): string {
    return this.root + checkKey(key);
  }

  async put(key: string, source: Readable | AsyncIterable<Buffer>, options: { maxBytes?: number } = {}): Promise<BlobWriteResult> {
    const { meter, result } = blobMeter(options.maxBytes);
    const upload = new Upload({
      client: this.client,
      params: { Bucket: this.bucket, Key: this.objectKey(key), Body: meter },
      partSize: MULTIPART_PART_BYTES,
      queueSize: UPLOAD_QUEUE,
      leavePartsOnError: false, // an upload that fails (too large, client gone) is aborted: the old blob stays
    });
    // The source's own failure (or the meter's BlobTooLargeError) is the one to report; a failed
    // upload stops the feeding, which would otherwise wait on a stream nobody reads.
    const uploading = upload.done().catch((err: unknown) => {
      meter.destroy(err as Error);
      throw err;
    });
    const [fed, uploaded] = await Promise.allSettled([pipeline(source, meter), uploading]);
    if (fed.status === 'rejected') {
      if (uploaded.status === 'fulfilled') await this.remove(key); // cannot happen for a truncated body, but never keep one
      throw fed.reason;
    }
    if (uploaded.status === 'rejected') throw uploaded.reason;
    return result();
  }

  /**
   * Server-side when S3 allows (every part but the last at least MULTIPART_PART_BYTES): the parts
   * are copied into a multipart upload, and only read back for the md5. Otherwise streamed through.
   */
  async concat(key: string, partKeys: string[]): Promise<BlobWriteResult> {
    const sizes = await Promise.all(partKeys.map(async (k) => ({ key: k, bytes: await this.size(k) })));
    const missing = sizes.find((s) => s.bytes === null);
    if (missing) throw new BlobNotFoundError(missing.key);
    const copyable = partKeys.length > 0 && partKeys.length <= 10_000 && sizes.every((s, i) => (i === sizes.length - 1 ? s.bytes! > 0 : s.bytes! >= MULTIPART_PART_BYTES));
    if (!copyable) return this.put(key, concatenated(this, partKeys));

    const { meter, result } = blobMeter();
    const hashing = pipeline(concatenated(this, partKeys), meter, async function* (chunks) {
      for await (const _ of chunks); // the md5 is all we want of the content
    });
    const target = { Bucket: this.bucket, Key: this.objectKey(key) };
    const { UploadId } = await this.client.send(new CreateMultipartUploadCommand(target));
    try {
      const parts = [];
      for (const [i, part] of partKeys.entries()) {
        const copied = await this.client.send(
          new UploadPartCopyCommand({ ...target, UploadId, PartNumber: i + 1, CopySource: encodeURI(`${this.bucket}/${this.objectKey(part)}`) }),
        );
        parts.push({ PartNumber: i + 1, ETag: copied.CopyPartResult!.ETag });
      }
      await hashing;
      await this.client.send(new CompleteMultipartUploadCommand({ ...target, UploadId, MultipartUpload: { Parts: parts } }));
    } catch (err) {
      await hashing.catch(() => undefined);
      await this.client.send(new AbortMultipartUploadCommand({ ...target, UploadId })).catch(() => undefined);
      throw err;
    }
    return result();
  }

  read(key: string): Readable {
    const request = () => this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) }));
    return Readable.from(
      (async function* () {
        const response = await request().catch((err: unknown) => {
          throw isMissing(err) ? new BlobNotFoundError(key) : err;
        });
        yield* response.Body as Readable;
      })(),
      { objectMode: false },
    );
  }

  async download(key: string, file: string): Promise<void> {
    this.objectKey(key);
    await writeFileAtomically(file, (tmpPath) => pipeline(this.read(key), fs.createWriteStream(tmpPath)));
  }

  async size(key: string): Promise<number | null> {
    try {
      const head = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) }));
      return head.ContentLength ?? 0;
    } catch (err) {
      if (isMissing(err)) return null;
      throw err;
    }
  }

  async list(prefix: string): Promise<string[]> {
    const under = prefix === '' ? this.root : `${this.objectKey(prefix)}/`;
    const keys: string[] = [];
    let ContinuationToken: string | undefined;
    do {
      const page = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: under, ContinuationToken }));
      for (const object of page.Contents ?? []) keys.push(object.Key!.slice(this.root.length));
      ContinuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (ContinuationToken);
    return keys.sort();
  }

  async remove(key: string): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) }));
  }

  async removePrefix(prefix: string): Promise<void> {
    checkKey(prefix);
    const keys = await this.list(prefix);
    for (let i = 0; i < keys.length; i += 1000) {
      const batch = keys.slice(i, i + 1000).map((key) => ({ Key: this.root + key }));
      const { Errors } = await this.client.send(new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: batch, Quiet: true } }));
      if (Errors?.length) throw new Error(`Could not remove ${Errors.length} blobs under '${prefix}': ${Errors[0].Code} ${Errors[0].Message}`);
    }
  }

  /** Ends the client's connections (the store is closing). */
  close(): void {
    this.client.destroy();
  }
}

function isMissing(err: unknown): boolean {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e?.name === 'NoSuchKey' || e?.name === 'NotFound' || e?.$metadata?.httpStatusCode === 404;
}
