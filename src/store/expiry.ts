// Removing files and upload parts for real: on DELETE, on cancel/complete, and when they expire.
// Expired files are already hidden by the queries (FilesRepository); the sweep reclaims their space.
import { blobKeys, type FileRow, type Store } from './index.ts';

/** The row first, so no reader finds a file whose blob is gone. */
export async function removeFile(store: Store, file: FileRow): Promise<void> {
  await store.files.delete(file.id, file.organization_id);
  await store.blobs.remove(blobKeys.file(file.id));
}

export async function discardUploadParts(store: Store, uploadId: string): Promise<void> {
  await store.blobs.removePrefix(blobKeys.upload(uploadId));
  await store.uploads.deleteParts(uploadId);
}

/** Marks a pending upload expired and drops its parts; false when it was no longer pending. */
export async function expireUpload(store: Store, uploadId: string): Promise<boolean> {
  if (!(await store.uploads.updateIfStatus(uploadId, 'pending', { status: 'expired' }))) return false;
  await discardUploadParts(store, uploadId);
  return true;
}

/**
 * Removes files expired at `now` (Unix seconds), except those an unfinished job still trains on (a
 * later sweep takes them), and expires pending uploads past their lifetime.
 */
export async function sweepExpired(store: Store, now: number): Promise<{ files: number; uploads: number }> {
  const files = await store.files.listRemovable(now);
  for (const file of files) await removeFile(store, file);
  let uploads = 0;
  for (const upload of await store.uploads.listExpiredPending(now)) {
    if (await expireUpload(store, upload.id)) uploads++;
  }
  return { files: files.length, uploads };
}

export interface ExpirySweeper {
  /** Stops the timer and waits for a sweep in progress (the store may close after). */
  stop(): Promise<void>;
}

/** Pino's shape (the server passes its logger). */
interface SweepLog {
  info(extra: object, msg: string): void;
  error(extra: object, msg: string): void;
}

/** Sweeps every `intervalSeconds` (0: never). The timer does not keep the process alive. */
export function startExpirySweeper(store: Store, options: { intervalSeconds: number; now: () => number; log: SweepLog }): ExpirySweeper {
  let running: Promise<void> | null = null;
  const sweep = () => {
    if (running) return; // the previous sweep is still going
    running = sweepExpired(store, options.now())
      .then((removed) => {
        if (removed.files + removed.uploads > 0) options.log.info(removed, 'expired files and uploads swept');
      })
      .catch((err) => options.log.error({ err }, 'expired file sweep failed'))
      .finally(() => {
        running = null;
      });
  };
  const timer = options.intervalSeconds > 0 ? setInterval(sweep, options.intervalSeconds * 1000).unref() : null;
  return {
    async stop() {
      if (timer) clearInterval(timer);
      await running;
    },
  };
}
