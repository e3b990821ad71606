// The blob stores a test runs against: the filesystem store always, S3 when TEST_S3_URL names a
// server and bucket (http://ACCESS_KEY:SECRET_KEY@host:port/bucket; .ci/run starts Ceph's radosgw
// with scripts/start-test-s3.sh). Under CI (CI set) a missing TEST_S3_URL fails instead of
// skipping. Each store gets a fresh folder or key prefix of its own, so tests never see each
// other's blobs.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe } from 'node:test';
import { FsBlobStore, type BlobStore } from '../../src/store/blobs.ts';
import { S3BlobStore, type S3Settings } from '../../src/store/s3-blobs.ts';

export type BlobStoreKind = 'fs' | 's3';
const BLOB_STORE_KINDS: readonly BlobStoreKind[] = ['fs', 's3'];

const s3Url = process.env.TEST_S3_URL || null;

/** A reason when `kind` cannot run here, else false. */
const skipUnless = (kind: BlobStoreKind): string | false =>
  kind === 's3' && !s3Url && !process.env.CI ? 'TEST_S3_URL is not set (scripts/start-test-s3.sh prints one)' : false;

/** `describe(title (kind), body)` once per store, skipped where that store cannot run. */
export function describeOnEachBlobStore(title: string, body: (kind: BlobStoreKind) => void): void {
  for (const kind of BLOB_STORE_KINDS) describe(`${title} (${kind})`, { skip: skipUnless(kind) }, () => body(kind));
}

/** The test server's bucket as BLOB_STORE and the AWS settings, with a fresh prefix. */
export function testS3Location(): { blobStore: string; s3: S3Settings; env: Record<string, string> } {
  if (!s3Url) throw new Error('TEST_S3_URL is not set (scripts/start-test-s3.sh prints one)');
  const url = new URL(s3Url);
  const bucket = url.pathname.replace(/^\/|\/$/g, '');
  const blobStore = `s3://${bucket}/test-${crypto.randomBytes(6).toString('hex')}`;
  const s3 = {
    endpoint: url.origin,
    region: 'us-east-1',
    credentials: { accessKeyId: decodeURIComponent(url.username), secretAccessKey: decodeURIComponent(url.password) },
  };
  const env = { BLOB_STORE: blobStore, AWS_ENDPOINT_URL: s3.endpoint, AWS_REGION: s3.region, AWS_ACCESS_KEY_ID: s3.credentials.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.credentials.secretAccessKey };
  return { blobStore, s3, env };
}

export interface TestBlobStore {
  store: BlobStore;
  close(): Promise<void>;
}

export async function openTestBlobStore(kind: BlobStoreKind): Promise<TestBlobStore> {
  if (kind === 'fs') {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tuneforge-blobs-'));
    return { store: new FsBlobStore(dir), close: async () => fs.rmSync(dir, { recursive: true, force: true }) };
  }
  const { blobStore, s3 } = testS3Location();
  const store = new S3BlobStore(blobStore, s3);
  return {
    store,
    close: async () => {
      for (const top of new Set((await store.list('')).map((key) => key.split('/')[0]))) await store.removePrefix(top);
      store.close();
    },
  };
}
