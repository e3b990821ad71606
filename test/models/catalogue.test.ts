// The model catalogue over a real store (SQLite, and PostgreSQL when TEST_DATABASE_URL is set) and
// real blobs: what each kind of name resolves to (blob keys), the typed not-found (with its reason)
// for everything else, and the folders `open` gives on this host (the store's own with the local
// store, copies in the blob cache with any other).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, it } from 'node:test';
import { chatTemplateOf, ModelCatalogue, ModelNotFoundError, type ModelNotFoundReason } from '../../src/models/catalogue.ts';
import { FsBlobStore } from '../../src/store/blobs.ts';
import { BlobCache } from '../../src/store/blob-cache.ts';
import type { Store } from '../../src/store/index.ts';
import { RemoteLikeBlobStore } from '../support/remote-blobs.ts';
import { describeOnEachBackend } from '../support/database.ts';
import { TINY_CONFIG } from '../support/server.ts';
import { queuedJob, tempStore } from '../support/store.ts';

const TEMPLATE = '{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}';

describeOnEachBackend('ModelCatalogue', (backend) => {
  let store: Store;
  let dataDir: string;
  let cleanup: () => Promise<void>;
  let modelsDir: string;
  let catalogue: ModelCatalogue;

  /** Blobs under `key` holding `files` (name → content); returns the key. */
  const blobFolder = async (key: string, files: Record<string, string>) => {
    for (const [file, content] of Object.entries(files)) await store.blobs.put(`${key}/${file}`, Readable.from([Buffer.from(content)]));
    return key;
  };
  const addModel = (id: string, organization: string, parent: string, dir: string | null, jobId = 'ftjob-x') =>
    store.models.add({ id, organization_id: organization, created_at: 1, job_id: jobId, base_model: parent, dir });
  const notFound = async (name: string, organization: string, reason: ModelNotFoundReason) => {
    const error = await catalogue.resolve(name, organization).then(() => assert.fail(`${name} resolved`), (err: unknown) => err);
    assert.ok(error instanceof ModelNotFoundError, String(error));
    assert.equal(error.reason, reason, `${name}: ${error.message}`);
    assert.equal(error.model, name);
    assert.equal(await catalogue.find(name, organization), null);
  };

  beforeEach(async () => {
    ({ store, dataDir, cleanup } = await tempStore(backend));
    modelsDir = path.join(dataDir, 'models');
    fs.mkdirSync(path.join(modelsDir, 'base-a'), { recursive: true });
    fs.copyFileSync(TINY_CONFIG, path.join(modelsDir, 'base-a', 'config.json'));
    fs.writeFileSync(path.join(modelsDir, 'base-a', 'tokenizer_config.json'), JSON.stringify({ chat_template: TEMPLATE }));
    catalogue = new ModelCatalogue(store, modelsDir);
  });
  afterEach(() => cleanup());

  it('a base model: base-models/<name>, opened from MODELS_DIR with its chat template, for any organization', async () => {
    const model = await catalogue.resolve('base-a', 'org-a');
    assert.deepEqual(model, { name: 'base-a', kind: 'base', owner: null, shared: false, parent: null, weights: 'base-models/base-a', adapter: null });
    const files = await catalogue.open(model);
    assert.deepEqual([files.modelDir, files.adapterDir], [path.join(modelsDir, 'base-a'), null]);
    assert.equal(chatTemplateOf(files.modelDir), TEMPLATE);
    files.release();
  });

  it('a LoRA model runs over its parent’s weights; a full fine-tune over its own; the local store opens them in place', async () => {
    const adapter = await blobFolder('jobs/ftjob-lora/checkpoints/step-2', { 'adapter_config.json': '{}' });
    await addModel('ft:base-a:org-a::lora', 'org-a', 'base-a', adapter);
    const lora = await catalogue.resolve('ft:base-a:org-a::lora', 'org-a');
    assert.deepEqual([lora.kind, lora.parent, lora.weights, lora.adapter], ['fine-tuned', 'base-a', 'base-models/base-a', adapter]);
    const files = await catalogue.open(lora);
    assert.deepEqual([files.modelDir, files.adapterDir], [path.join(modelsDir, 'base-a'), (store.blobs as FsBlobStore).pathOf(adapter)], 'no copies');
    files.release();

    const full = await blobFolder('jobs/ftjob-full/checkpoints/step-2', { 'config.json': '{}', 'chat_template.jinja': 'own template' });
    await addModel('ft:base-a:org-a::full', 'org-a', 'base-a', full, 'ftjob-full');
    const tuned = await catalogue.resolve('ft:base-a:org-a::full', 'org-a');
    assert.deepEqual([tuned.weights, tuned.adapter], [full, null]);

    // An adapter trained on that full fine-tune runs over the copy its job's start record names.
    const copy = await blobFolder('jobs/ftjob-again/start/weights', { 'config.json': '{}' });
    await blobFolder('jobs/ftjob-again/start', { 'start.json': JSON.stringify({ model: 'ft:base-a:org-a::full', weights: copy, adapter: null }) });
    const again = await blobFolder('jobs/ftjob-again/checkpoints/step-2', { 'adapter_config.json': '{}' });
    await addModel('ft:ft-base-a:org-a::again', 'org-a', 'ft:base-a:org-a::full', again, 'ftjob-again');
    assert.equal((await catalogue.resolve('ft:ft-base-a:org-a::again', 'org-a')).weights, copy);
  });

  it('a checkpoint: its owner’s, or shared with another organization through a permission', async () => {
    const job = await queuedJob(store, 'org-a', { model: 'base-a' });
    const dir = await blobFolder(`jobs/${job.id}/checkpoints/step-4`, { 'adapter_config.json': '{}' });
    const name = 'ft:base-a:org-a::ckpt:ckpt-step-4';
    await store.checkpoints.add({ id: 'ftckpt-1', job_id: job.id, organization_id: 'org-a', created_at: 1, fine_tuned_model_checkpoint: name, step_number: 4, metrics: {}, dir });
    const own = await catalogue.resolve(name, 'org-a');
    assert.deepEqual([own.kind, own.owner, own.shared, own.parent, own.adapter], ['checkpoint', 'org-a', false, 'base-a', dir]);
    await notFound(name, 'org-b', 'unknown');
    await store.permissions.add({ id: 'cp-1', checkpoint: name, project_id: 'org-b', created_at: 1 });
    const shared = await catalogue.resolve(name, 'org-b');
    assert.deepEqual([shared.owner, shared.shared], ['org-a', true]);
  });

  it('not found, with its reason: unknown, another organization’s, no weights, a parent gone', async () => {
    await notFound('no-such-model', 'org-a', 'unknown');
    await notFound('../base-a', 'org-a', 'unknown');
    const adapter = await blobFolder('jobs/ftjob-lora/checkpoints/step-2', { 'adapter_config.json': '{}' });
    await addModel('ft:base-a:org-a::lora', 'org-a', 'base-a', adapter);
    await notFound('ft:base-a:org-a::lora', 'org-b', 'unknown');

    await addModel('ft:base-a:org-a::never-stored', 'org-a', 'base-a', null);
    await notFound('ft:base-a:org-a::never-stored', 'org-a', 'no_weights');
    await addModel('ft:base-a:org-a::deleted', 'org-a', 'base-a', 'jobs/ftjob-gone/checkpoints/step-2');
    await notFound('ft:base-a:org-a::deleted', 'org-a', 'no_weights');

    await addModel('ft:base-b:org-a::orphan', 'org-a', 'base-b', await blobFolder('jobs/ftjob-orphan/checkpoints/step-1', { 'adapter_config.json': '{}' }));
    await notFound('ft:base-b:org-a::orphan', 'org-a', 'parent_unavailable');
    const error = await catalogue.resolve('ft:base-b:org-a::orphan', 'org-a').catch((err: ModelNotFoundError) => err);
    assert.equal((error as ModelNotFoundError).parent, 'base-b');
  });

  it('an adapter from before start records runs over the base folder its adapter_config.json records, while that is there', async () => {
    const adapter = await blobFolder('jobs/ftjob-old/checkpoints/step-3', { 'adapter_config.json': JSON.stringify({ base_model_name_or_path: path.join(modelsDir, 'base-a') }) });
    await addModel('ft:renamed:org-a::lora', 'org-a', 'renamed', adapter, 'ftjob-old');
    assert.equal((await catalogue.resolve('ft:renamed:org-a::lora', 'org-a')).weights, 'base-models/base-a');
  });

  it('a host without the base in MODELS_DIR finds it in the store (base-models/<name>), and another store is copied into the cache, once', async () => {
    const remote = new RemoteLikeBlobStore(store.blobs as FsBlobStore);
    const cacheDir = path.join(dataDir, 'other-host-cache');
    const elsewhere = new ModelCatalogue({ ...store, blobs: remote, cache: new BlobCache(remote, { dir: cacheDir, maxBytes: 1 << 20 }) }, path.join(dataDir, 'no-models'));
    assert.equal(await elsewhere.find('base-a', 'org-a'), null, 'MODELS_DIR of another host');
    await blobFolder('base-models/base-s', { 'config.json': fs.readFileSync(TINY_CONFIG, 'utf8') });
    const base = await elsewhere.resolve('base-s', 'org-a');
    assert.equal(base.weights, 'base-models/base-s');
    const files = await elsewhere.open(base);
    assert.ok(files.modelDir.startsWith(cacheDir), files.modelDir);
    assert.equal(fs.readFileSync(path.join(files.modelDir, 'config.json'), 'utf8'), fs.readFileSync(TINY_CONFIG, 'utf8'));
    const downloads = remote.downloads;
    const again = await elsewhere.open(base);
    assert.equal(again.modelDir, files.modelDir);
    assert.equal(remote.downloads, downloads, 'the second open reads the cached copy');
    files.release();
    again.release();
  });
});
