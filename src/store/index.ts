// The store: SQL repositories plus the blob store, opened together (rows in SQLite under DATA_DIR
// or in PostgreSQL, blobs under DATA_DIR or in an S3 bucket) and the local cache of blobs.
import path from 'node:path';
import { BlobCache } from './blob-cache.ts';
import { FsBlobStore, type BlobStore } from './blobs.ts';
import { S3BlobStore } from './s3-blobs.ts';
import { CheckpointsRepository } from './checkpoints.ts';
import { inTransaction, openDatabase, type ChangeStamp, type Db, type StoreLocation } from './database.ts';
import { EventsRepository } from './events.ts';
import { FilesRepository } from './files.ts';
import { JobsRepository } from './jobs.ts';
import { ModelsRepository } from './models.ts';
import { PermissionsRepository } from './permissions.ts';
import { UploadsRepository } from './uploads.ts';
import { WorkersRepository } from './workers.ts';

export interface Store {
  db: Db;
  files: FilesRepository;
  uploads: UploadsRepository;
  jobs: JobsRepository;
  events: EventsRepository;
  checkpoints: CheckpointsRepository;
  permissions: PermissionsRepository;
  models: ModelsRepository;
  workers: WorkersRepository;
  blobs: BlobStore;
  /** Local paths of blobs, for the engine: `store.cache.lease()`. */
  cache: BlobCache;
  /** A value that changes whenever rows may have changed (for caches of reads; see ChangeStamp). */
  changeStamp: ChangeStamp;
  /**
   * Runs `fn` with repositories bound to one transaction: readers see all of its writes or none
   * (a job's status change together with its events). Blobs are not part of it.
   */
  transaction<T>(fn: (tx: Store) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/** `now`: the clock (Unix seconds) deciding which files have expired; tests move it. */
/** `blobs`: another blob store than the location's (tests of hosts with no shared disk). */
export async function openStore(location: StoreLocation, options: { now?: () => number; blobs?: BlobStore } = {}): Promise<Store> {
  const { db: root, dialect, changeStamp } = await openDatabase(location);
  const { blobs, closeBlobs } = options.blobs ? { blobs: options.blobs, closeBlobs: () => {} } : openBlobStore(location);
  const cache = new BlobCache(blobs, location.blobCache ?? { dir: path.join(location.dataDir, 'cache'), maxBytes: 20 * 1024 ** 3 });
  const over = (db: Db): Store => ({
    db,
    files: new FilesRepository(db, options.now),
    uploads: new UploadsRepository(db),
    jobs: new JobsRepository(db, dialect),
    events: new EventsRepository(db),
    checkpoints: new CheckpointsRepository(db),
    permissions: new PermissionsRepository(db),
    models: new ModelsRepository(db),
    workers: new WorkersRepository(db),
    blobs,
    cache,
    changeStamp,
    transaction: (fn) => inTransaction(db, (tx) => fn(over(tx))),
    close: async () => {
      await root.destroy();
      closeBlobs();
    },
  });
  return over(root);
}

function openBlobStore(location: StoreLocation): { blobs: BlobStore; closeBlobs: () => void } {
  if (!location.blobStore) return { blobs: new FsBlobStore(location.dataDir), closeBlobs: () => {} };
  const s3 = new S3BlobStore(location.blobStore, location.s3 ?? { endpoint: null, region: 'us-east-1', credentials: null });
  return { blobs: s3, closeBlobs: () => s3.close() };
}

/** Blob keys: derived from ids only. */
export const blobKeys = {
  file: (fileId: string) => `files/${fileId}`,
  uploadPart: (uploadId: string, partId: string) => `uploads/${uploadId}/${partId}`,
  upload: (uploadId: string) => `uploads/${uploadId}`,
  /**
   * Everything a job keeps: its start (start/start.json and copies of a tuned parent's weights and
   * adapter), checkpoints/step-N (the last one is the fine-tuned model), resume/step-N.
   */
  job: (jobId: string) => `jobs/${jobId}`,
  jobStartRecord: (jobId: string) => `jobs/${jobId}/start/start.json`,
  /** A base model for hosts without it in MODELS_DIR (put there by the operator). */
  baseModel: (name: string) => `base-models/${name}`,
};

export type { StoreLocation } from './database.ts';
export type { Page, PageRequest } from './pagination.ts';
export type { JobRecord, JobMethod, JobErrorDetails, JobPatch, NewJob } from './jobs.ts';
export type { EventRecord } from './events.ts';
export type { CheckpointRecord } from './checkpoints.ts';
export type { PermissionRecord } from './permissions.ts';
export type { FineTunedModelRecord } from './models.ts';
export type { NewWorker, WorkerRecord } from './workers.ts';
export type { FileRow, UploadRow, UploadPartRow } from './schema.ts';
export { BlobNotFoundError, BlobTooLargeError, type BlobStore } from './blobs.ts';
export type { BlobCache, BlobLease } from './blob-cache.ts';
