// Where a job starts training: a base model, or (tuning a tuned model) a fine-tuned model or
// checkpoint of the organization, or one shared with it. A job on a tuned model keeps its own copy
// of what it starts from in the store, under jobs/<id>/start: the parent's full weights when they
// are not a base model's, and the parent's LoRA adapter (hard links with the local store). Deleting
// the parent, its job pruning or cancelling it, breaks neither this job (a resumed run, on any host,
// starts from the same files, even with the parent gone) nor the model it makes (a LoRA model over a
// full fine-tune runs over this copy, which the start record names). The start record
// (start/start.json) is written last: a run that dies halfway leaves no half start.
import { Readable } from 'node:stream';
import { readJsonBlob, type ModelCatalogue } from '../models/catalogue.ts';
import { blobKeys, type JobRecord, type Store } from '../store/index.ts';
import { copyPrefix } from './job-artifacts.ts';
import { JobError } from './job-error.ts';

/** A job's start record: blob keys of what it trains from. */
export interface JobStart {
  /** The job's `model`: a base model, or the fine-tuned model or checkpoint it continues. */
  model: string;
  /** The full Hugging Face folder it trains on (base-models/<name> for a base model). */
  weights: string;
  /** The parent's LoRA adapter (trained on `weights`), which the job continues; null when none. */
  adapter: string | null;
}

/** The job's starting point: its start record, resolved and copied into the store the first time it runs. */
export async function jobStart(job: JobRecord, store: Store, catalogue: ModelCatalogue): Promise<JobStart> {
  const recordKey = blobKeys.jobStartRecord(job.id);
  const recorded = await readJsonBlob<Partial<JobStart>>(store, recordKey);
  if (recorded && typeof recorded.weights === 'string') return recorded as JobStart;

  const model = await catalogue.find(job.model, job.organization_id);
  if (!model) throw new JobError(`Model ${job.model} is no longer available.`, 'model_not_available', 'model');
  const startKey = `${blobKeys.job(job.id)}/start`;
  const ownBase = model.weights.startsWith(`${blobKeys.baseModel('')}`);
  const start: JobStart = {
    model: job.model,
    weights: ownBase ? model.weights : `${startKey}/weights`,
    adapter: model.adapter ? `${startKey}/adapter` : null,
  };
  await store.blobs.removePrefix(startKey); // what a run that died halfway copied
  if (!ownBase) await copyPrefix(store.blobs, model.weights, start.weights);
  if (model.adapter) await copyPrefix(store.blobs, model.adapter, start.adapter!);
  await store.blobs.put(recordKey, Readable.from([Buffer.from(JSON.stringify(start, null, 2) + '\n')]));
  return start;
}
