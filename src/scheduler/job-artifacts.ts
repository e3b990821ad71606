// Where a job's files live on disk, and removing them: a job owns DATA_DIR/jobs/<id> (the engine's
// output folder: epoch checkpoints, resume points, scratch files).
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Store } from '../store/index.ts';

export const jobWorkDir = (dataDir: string, jobId: string) => path.join(dataDir, 'jobs', jobId);

/** A cancelled job leaves nothing behind: its checkpoints (rows and folders) and scratch files go. */
export async function removeJobArtifacts(store: Store, dataDir: string, jobId: string): Promise<void> {
  await store.checkpoints.prune(jobId, 0);
  await fs.rm(jobWorkDir(dataDir, jobId), { recursive: true, force: true });
}

/** Resume points only matter while a job can still continue; its checkpoints stay. */
export async function removeResumePoints(dataDir: string, jobId: string): Promise<void> {
  await fs.rm(path.join(jobWorkDir(dataDir, jobId), 'resume'), { recursive: true, force: true });
}
