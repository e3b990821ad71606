// Where a job's files live. What a job keeps is in the blob store under jobs/<id>/ (blobKeys.job:
// start/, checkpoints/step-N, resume/step-N; one object per file, a folder is a prefix), so a worker
// on any host can continue it and any host can serve its models. The engine writes into a local
// folder, the job's work folder: with the local store that folder is the store's own jobs/<id>
// (pushing costs nothing); with another store it is scratch under DATA_DIR/jobs/<id>, and each
// resume point, checkpoint and start is pushed as soon as it is complete.
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { FsBlobStore, type BlobStore } from '../store/blobs.ts';
import { blobKeys, type Store } from '../store/index.ts';

/** The local folder the engine writes job `jobId`'s files into. */
export function jobWorkDir(blobs: BlobStore, dataDir: string, jobId: string): string {
  return blobs instanceof FsBlobStore ? blobs.pathOf(blobKeys.job(jobId)) : path.join(dataDir, 'jobs', jobId);
}

/** The blob key of a folder inside a job's work folder (its path below it, under jobs/<id>). */
export function artifactKey(jobId: string, workDir: string, dir: string): string {
  const relative = path.relative(workDir, dir);
  if (relative === '' || relative.startsWith('..') || path.isAbsolute(relative)) throw new Error(`${dir} is not inside the job's folder`);
  return `${blobKeys.job(jobId)}/${relative.split(path.sep).join('/')}`;
}

/** Puts every file under the local folder `dir` into the store under `key`; nothing to do when `dir` is that key's own folder. */
export async function pushFolder(blobs: BlobStore, dir: string, key: string): Promise<void> {
  if (blobs instanceof FsBlobStore && blobs.pathOf(key) === path.resolve(dir)) return;
  for (const entry of await fs.readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile()) continue;
    const file = path.join(entry.parentPath, entry.name);
    const relative = path.relative(dir, file).split(path.sep).join('/');
    await blobs.put(`${key}/${relative}`, createReadStream(file));
  }
}

/**
 * Copies the blobs under `from` to `to`: hard links with the local store (copies where a link
 * cannot be made), streamed object by object otherwise.
 */
export async function copyPrefix(blobs: BlobStore, from: string, to: string): Promise<void> {
  if (blobs instanceof FsBlobStore) return linkTree(blobs.pathOf(from), blobs.pathOf(to));
  for (const key of await blobs.list(from)) await blobs.put(`${to}${key.slice(from.length)}`, blobs.read(key));
}

async function linkTree(from: string, to: string): Promise<void> {
  await fs.mkdir(to, { recursive: true });
  for (const entry of await fs.readdir(from, { withFileTypes: true })) {
    const source = path.join(from, entry.name);
    const target = path.join(to, entry.name);
    if (entry.isDirectory()) await linkTree(source, target);
    else await fs.link(source, target).catch(() => fs.copyFile(source, target));
  }
}

/** A cancelled job leaves nothing behind: its checkpoints (rows and blobs), start, resume points and scratch go. */
export async function removeJobArtifacts(store: Store, dataDir: string, jobId: string): Promise<void> {
  await store.checkpoints.prune(jobId, 0);
  await store.blobs.removePrefix(blobKeys.job(jobId));
  await fs.rm(path.join(dataDir, 'jobs', jobId), { recursive: true, force: true });
}

/** Resume points only matter while a job can still continue; its checkpoints stay. */
export async function removeResumePoints(store: Store, dataDir: string, jobId: string): Promise<void> {
  await store.blobs.removePrefix(`${blobKeys.job(jobId)}/resume`);
  await removeScratch(dataDir, jobId);
}

/** This host's scratch copy of a job's files, once everything in it is in the store (nothing with the local store). */
export async function removeScratch(dataDir: string, jobId: string): Promise<void> {
  await fs.rm(path.join(dataDir, 'jobs', jobId), { recursive: true, force: true });
}
