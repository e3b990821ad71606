// Where a job starts (jobStart) over a real store and real blobs: a base model in place; a tuned
// model through the job's own copy in the store (hard links with the local store, objects copied
// with any other), which a later run, on any host, finds again even once the parent's rows and
// blobs are gone.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, it } from 'node:test';
import { ModelCatalogue } from '../../src/models/catalogue.ts';
import { JobError } from '../../src/scheduler/job-error.ts';
import { jobStart } from '../../src/scheduler/job-start.ts';
import type { FsBlobStore } from '../../src/store/blobs.ts';
import type { Store } from '../../src/store/index.ts';
import { describeOnEachBackend } from '../support/database.ts';
import { RemoteLikeBlobStore } from '../support/remote-blobs.ts';
import { TINY_CONFIG } from '../support/server.ts';
import { queuedJob, tempStore } from '../support/store.ts';

describeOnEachBackend('jobStart', (backend) => {
  let store: Store;
  let dataDir: string;
  let cleanup: () => Promise<void>;
  let modelsDir: string;
  let catalogue: ModelCatalogue;

  /** A parent's weights (its job's final checkpoint) holding `files`, registered as org-a's model `id`. */
  const parentModel = async (id: string, files: Record<string, string>) => {
    const dir = 'jobs/ftjob-parent/checkpoints/step-3';
    for (const [name, content] of Object.entries(files)) await store.blobs.put(`${dir}/${name}`, Readable.from([Buffer.from(content)]));
    await store.models.add({ id, organization_id: 'org-a', created_at: 1, job_id: 'ftjob-parent', base_model: 'tiny-test', dir });
    return dir;
  };
  const local = (key: string) => (store.blobs as FsBlobStore).pathOf(key);
  const sameFile = (a: string, b: string) => fs.statSync(a).ino === fs.statSync(b).ino;
  const text = async (key: string) => {
    const chunks: Buffer[] = [];
    for await (const chunk of store.blobs.read(key)) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks).toString('utf8');
  };

  beforeEach(async () => {
    ({ store, dataDir, cleanup } = await tempStore(backend));
    modelsDir = path.join(dataDir, 'models');
    fs.mkdirSync(path.join(modelsDir, 'tiny-test'), { recursive: true });
    fs.copyFileSync(TINY_CONFIG, path.join(modelsDir, 'tiny-test', 'config.json'));
    catalogue = new ModelCatalogue(store, modelsDir);
  });
  afterEach(() => cleanup());

  it('a base model: its own weights, nothing copied; the start record is in the store', async () => {
    const job = await queuedJob(store, 'org-a');
    const start = await jobStart(job, store, catalogue);
    assert.deepEqual(start, { model: 'tiny-test', weights: 'base-models/tiny-test', adapter: null });
    assert.deepEqual(await store.blobs.list(`jobs/${job.id}`), [`jobs/${job.id}/start/start.json`]);
    assert.deepEqual(JSON.parse(await text(`jobs/${job.id}/start/start.json`)), start);
  });

  it('a full fine-tune: its weights linked into the job’s start, found again once the parent is deleted and its blobs gone', async () => {
    const parent = await parentModel('ft:tiny-test:org-a::full', { 'config.json': fs.readFileSync(TINY_CONFIG, 'utf8'), 'model.safetensors': 'weights' });
    const job = await queuedJob(store, 'org-a', { model: 'ft:tiny-test:org-a::full' });
    const start = await jobStart(job, store, catalogue);
    assert.deepEqual(start, { model: 'ft:tiny-test:org-a::full', weights: `jobs/${job.id}/start/weights`, adapter: null });
    assert.ok(sameFile(local(`${parent}/model.safetensors`), local(`${start.weights}/model.safetensors`)), 'a hard link, not a copy');

    await store.models.delete('ft:tiny-test:org-a::full', 'org-a');
    await store.blobs.removePrefix(parent);
    assert.deepEqual(await jobStart(job, store, catalogue), start, 'a resumed run starts from the same blobs');
    assert.equal(await text(`${start.weights}/model.safetensors`), 'weights');
  });

  it('a LoRA fine-tune: its adapter copied, over the base model in place; with a store on another machine, object by object', async () => {
    const parent = await parentModel('ft:tiny-test:org-a::lora', { 'adapter_config.json': '{}', 'adapter_model.safetensors': 'adapter' });
    const job = await queuedJob(store, 'org-a', { model: 'ft:tiny-test:org-a::lora' });
    const start = await jobStart(job, store, catalogue);
    assert.deepEqual(start, { model: 'ft:tiny-test:org-a::lora', weights: 'base-models/tiny-test', adapter: `jobs/${job.id}/start/adapter` });
    assert.ok(sameFile(local(`${parent}/adapter_model.safetensors`), local(`${start.adapter}/adapter_model.safetensors`)));

    const remote = { ...store, blobs: new RemoteLikeBlobStore(store.blobs as FsBlobStore) };
    const other = await queuedJob(store, 'org-a', { model: 'ft:tiny-test:org-a::lora' });
    const copied = await jobStart(other, remote, new ModelCatalogue(remote, modelsDir));
    assert.equal(copied.adapter, `jobs/${other.id}/start/adapter`);
    assert.equal(await text(`${copied.adapter}/adapter_model.safetensors`), 'adapter');
    assert.ok(!sameFile(local(`${parent}/adapter_model.safetensors`), local(`${copied.adapter}/adapter_model.safetensors`)), 'copied through the store’s API');
  });

  it('a model gone before the job first ran: model_not_available, naming model', async () => {
    const job = await queuedJob(store, 'org-a', { model: 'ft:tiny-test:org-a::gone' });
    const error = await jobStart(job, store, catalogue).catch((err: unknown) => err);
    assert.ok(error instanceof JobError);
    assert.deepEqual([error.code, error.param], ['model_not_available', 'model']);
  });
});
