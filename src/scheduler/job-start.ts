// Where a job starts training: a base model's folder, or (tuning a tuned model) a fine-tuned model or
// checkpoint of the organization, or one shared with it. A job on a tuned model keeps its own links to
// what it starts from, in DATA_DIR/jobs/<id>/start: hard links (copies across file systems) of the
// parent's full weights when they are not a base model's, and of the parent's LoRA adapter. Deleting
// the parent, its job pruning or cancelling it, breaks neither this job (a resumed run starts from the
// same files, even with the parent gone) nor the model it makes (a LoRA model over a full fine-tune
// runs over this copy, which its adapter records).
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { findBaseModel } from '../models/base-models.ts';
import { ModelCatalogue } from '../models/catalogue.ts';
import type { JobRecord, Store } from '../store/index.ts';
import { JobError } from './job-error.ts';

export interface JobStart {
  /** The job's `model`: a base model, or the fine-tuned model or checkpoint it continues. */
  model: string;
  /** The full Hugging Face folder it trains on. */
  baseModelDir: string;
  /** The parent's LoRA adapter (trained on baseModelDir), which the job continues; null when none. */
  initialAdapterDir: string | null;
}

const START_FILE = 'start.json';

/** The job's starting point, resolved and linked into `workDir/start` the first time it runs. */
export async function jobStart(job: JobRecord, store: Store, modelsDir: string, workDir: string): Promise<JobStart> {
  const startDir = path.join(workDir, 'start');
  const recorded = await fs.readFile(path.join(startDir, START_FILE), 'utf8').catch(() => null);
  if (recorded !== null) return JSON.parse(recorded) as JobStart;

  const model = await new ModelCatalogue(store, modelsDir).find(job.model, job.organization_id);
  if (!model) throw new JobError(`Model ${job.model} is no longer available.`, 'model_not_available', 'model');
  if (model.kind === 'base') return { model: job.model, baseModelDir: model.modelDir, initialAdapterDir: null };

  // Linked under a temporary name and renamed: a run that dies halfway leaves no half start.
  const linking = path.join(workDir, `start-${randomUUID()}`);
  const ownBase = (await findBaseModel(modelsDir, path.basename(model.modelDir)))?.dir === model.modelDir;
  const start: JobStart = {
    model: job.model,
    baseModelDir: ownBase ? model.modelDir : path.join(startDir, 'weights'),
    initialAdapterDir: model.adapterDir ? path.join(startDir, 'adapter') : null,
  };
  try {
    await fs.mkdir(linking, { recursive: true });
    if (!ownBase) await linkTree(model.modelDir, path.join(linking, 'weights'));
    if (model.adapterDir) await linkTree(model.adapterDir, path.join(linking, 'adapter'));
    await fs.writeFile(path.join(linking, START_FILE), JSON.stringify(start, null, 2) + '\n');
    await fs.rm(startDir, { recursive: true, force: true });
    await fs.rename(linking, startDir);
  } catch (err) {
    await fs.rm(linking, { recursive: true, force: true });
    throw err;
  }
  return start;
}

/** `to` holding hard links to every file under `from` (copies where a link cannot be made). */
async function linkTree(from: string, to: string): Promise<void> {
  await fs.mkdir(to, { recursive: true });
  for (const entry of await fs.readdir(from, { withFileTypes: true })) {
    const source = path.join(from, entry.name);
    const target = path.join(to, entry.name);
    if (entry.isDirectory()) await linkTree(source, target);
    else await fs.link(source, target).catch(() => fs.copyFile(source, target));
  }
}
