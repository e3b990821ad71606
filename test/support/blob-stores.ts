// The blob stores a test runs against: the filesystem store always, S3 when TEST_S3_ENDPOINT names
// a server (.ci/run starts one with scripts/start-test-s3.sh). Each store gets a fresh folder or
// key prefix of its own, so tests never see each other's blobs.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe } from 'node:test';
import { FsBlobStore, type BlobStore } from '../../src/store/blobs.ts';

export type BlobStoreKind = 'fs';
const BLOB_STORE_KINDS: readonly BlobStoreKind[] = ['fs'];

export interface TestBlobStore {
  store: BlobStore;
  close(): Promise<void>;
}

/** `describe(title (kind), body)` once per store, skipped where that store cannot run. */
export function describeOnEachBlobStore(title: string, body: (kind: BlobStoreKind) => void): void {
  for (const kind of BLOB_STORE_KINDS) describe(`${title} (${kind})`, () => body(kind));
}

export async function openTestBlobStore(kind: BlobStoreKind): Promise<TestBlobStore> {
  if (kind === 'fs') {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tuneforge-blobs-'));
    return { store: new FsBlobStore(dir), close: async () => fs.rmSync(dir, { recursive: true, force: true }) };
  }
  throw new Error(`unknown blob store ${kind as string}`);
}
