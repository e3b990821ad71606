// Where a job starts (jobStart) over a real store and real folders: a base model in place; a tuned
// model through the job's own hard links, which a later run finds again even once the parent's
// rows and files are gone.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, it } from 'node:test';
import { JobError } from '../../src/scheduler/job-error.ts';
import { jobStart } from '../../src/scheduler/job-start.ts';
import type { Store } from '../../src/store/index.ts';
import { describeOnEachBackend } from '../support/database.ts';
import { TINY_CONFIG } from '../support/server.ts';
import { queuedJob, tempStore } from '../support/store.ts';

describeOnEachBackend('jobStart', (backend) => {
  let store: Store;
  let dataDir: string;
  let cleanup: () => Promise<void>;
  let modelsDir: string;
  let base: string;

  /** A parent's folder (under its own job's folder) holding `files`, registered as org-a's model `id`. */
  const parentModel = async (id: string, files: Record<string, string>) => {
    const dir = path.join(dataDir, 'jobs', 'ftjob-parent', 'final');
    fs.mkdirSync(dir, { recursive: true });
    for (const [name, content] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), content);
    await store.models.add({ id, organization_id: 'org-a', created_at: 1, job_id: 'ftjob-parent', base_model: 'tiny-test', dir });
    return dir;
  };
  const workDirOf = (jobId: string) => path.join(dataDir, 'jobs', jobId);
  const sameFile = (a: string, b: string) => fs.statSync(a).ino === fs.statSync(b).ino;

  beforeEach(async () => {
    ({ store, dataDir, cleanup } = await tempStore(backend));
    modelsDir = path.join(dataDir, 'models');
    base = path.join(modelsDir, 'tiny-test');
    fs.mkdirSync(base, { recursive: true });
    fs.copyFileSync(TINY_CONFIG, path.join(base, 'config.json'));
  });
  afterEach(() => cleanup());

  it('a base model: its own folder, nothing linked', async () => {
    const job = await queuedJob(store, 'org-a');
    assert.deepEqual(await jobStart(job, store, modelsDir, workDirOf(job.id)), { model: 'tiny-test', baseModelDir: base, initialAdapterDir: null });
    assert.equal(fs.existsSync(path.join(workDirOf(job.id), 'start')), false);
  });

  it('a full fine-tune: its weights linked into the job’s folder, found again once the parent is deleted and its files gone', async () => {
    const parent = await parentModel('ft:tiny-test:org-a::full', { 'config.json': fs.readFileSync(TINY_CONFIG, 'utf8'), 'model.safetensors': 'weights' });
    const job = await queuedJob(store, 'org-a', { model: 'ft:tiny-test:org-a::full' });
    const start = await jobStart(job, store, modelsDir, workDirOf(job.id));
    assert.deepEqual(start, { model: 'ft:tiny-test:org-a::full', baseModelDir: path.join(workDirOf(job.id), 'start', 'weights'), initialAdapterDir: null });
    assert.ok(sameFile(path.join(parent, 'model.safetensors'), path.join(start.baseModelDir, 'model.safetensors')), 'a hard link, not a copy');

    await store.models.delete('ft:tiny-test:org-a::full', 'org-a');
    fs.rmSync(parent, { recursive: true });
    assert.deepEqual(await jobStart(job, store, modelsDir, workDirOf(job.id)), start, 'a resumed run starts from the same files');
    assert.equal(fs.readFileSync(path.join(start.baseModelDir, 'model.safetensors'), 'utf8'), 'weights');
  });

  it('a LoRA fine-tune: its adapter linked, over the base model in place', async () => {
    const parent = await parentModel('ft:tiny-test:org-a::lora', { 'adapter_config.json': '{}', 'adapter_model.safetensors': 'adapter' });
    const job = await queuedJob(store, 'org-a', { model: 'ft:tiny-test:org-a::lora' });
    const start = await jobStart(job, store, modelsDir, workDirOf(job.id));
    assert.deepEqual(start, { model: 'ft:tiny-test:org-a::lora', baseModelDir: base, initialAdapterDir: path.join(workDirOf(job.id), 'start', 'adapter') });
    assert.ok(sameFile(path.join(parent, 'adapter_model.safetensors'), path.join(start.initialAdapterDir!, 'adapter_model.safetensors')));
  });

  it('a model gone before the job first ran: model_not_available, naming model', async () => {
    const job = await queuedJob(store, 'org-a', { model: 'ft:tiny-test:org-a::gone' });
    const error = await jobStart(job, store, modelsDir, workDirOf(job.id)).catch((err: unknown) => err);
    assert.ok(error instanceof JobError);
    assert.deepEqual([error.code, error.param], ['model_not_available', 'model']);
  });
});
