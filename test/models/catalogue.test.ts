// The model catalogue over a real store (SQLite, and PostgreSQL when TEST_DATABASE_URL is set) and
// real folders: what each kind of name resolves to, and the typed not-found (with its reason) for
// everything else.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, it } from 'node:test';
import { ModelCatalogue, ModelNotFoundError, type ModelNotFoundReason } from '../../src/models/catalogue.ts';
import type { Store } from '../../src/store/index.ts';
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

  /** A folder holding `files` (name → content). */
  const folder = (name: string, files: Record<string, string>) => {
    const dir = path.join(dataDir, name);
    fs.mkdirSync(dir, { recursive: true });
    for (const [file, content] of Object.entries(files)) fs.writeFileSync(path.join(dir, file), content);
    return dir;
  };
  const addModel = (id: string, organization: string, parent: string, dir: string | null) =>
    store.models.add({ id, organization_id: organization, created_at: 1, job_id: 'ftjob-x', base_model: parent, dir });
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

  it('a base model: its folder and chat template, for any organization', async () => {
    const model = await catalogue.resolve('base-a', 'org-a');
    assert.deepEqual(model, {
      name: 'base-a', kind: 'base', owner: null, shared: false, parent: null,
      modelDir: path.join(modelsDir, 'base-a'), adapterDir: null, chatTemplate: TEMPLATE,
    });
  });

  it('a LoRA model runs over its parent’s folder; a full fine-tune over its own', async () => {
    const adapter = folder('lora', { 'adapter_config.json': '{}' });
    await addModel('ft:base-a:org-a::lora', 'org-a', 'base-a', adapter);
    const lora = await catalogue.resolve('ft:base-a:org-a::lora', 'org-a');
    assert.equal(lora.kind, 'fine-tuned');
    assert.equal(lora.parent, 'base-a');
    assert.equal(lora.modelDir, path.join(modelsDir, 'base-a'));
    assert.equal(lora.adapterDir, adapter);
    assert.equal(lora.chatTemplate, TEMPLATE);

    const full = folder('full', { 'config.json': '{}', 'chat_template.jinja': 'own template' });
    await addModel('ft:base-a:org-a::full', 'org-a', 'base-a', full);
    const tuned = await catalogue.resolve('ft:base-a:org-a::full', 'org-a');
    assert.deepEqual([tuned.modelDir, tuned.adapterDir, tuned.chatTemplate], [full, null, 'own template']);

    // An adapter trained on that full fine-tune runs over the fine-tune's folder.
    const again = folder('lora-again', { 'adapter_config.json': JSON.stringify({ base_model_name_or_path: full }) });
    await addModel('ft:ft-base-a:org-a::again', 'org-a', 'ft:base-a:org-a::full', again);
    assert.equal((await catalogue.resolve('ft:ft-base-a:org-a::again', 'org-a')).modelDir, full);
  });

  it('a checkpoint: its owner’s, or shared with another organization through a permission', async () => {
    const job = await queuedJob(store, 'org-a', { model: 'base-a' });
    const dir = folder('ckpt', { 'adapter_config.json': '{}' });
    const name = 'ft:base-a:org-a::ckpt:ckpt-step-4';
    await store.checkpoints.add({ id: 'ftckpt-1', job_id: job.id, organization_id: 'org-a', created_at: 1, fine_tuned_model_checkpoint: name, step_number: 4, metrics: {}, dir });
    const own = await catalogue.resolve(name, 'org-a');
    assert.deepEqual([own.kind, own.owner, own.shared, own.parent, own.adapterDir], ['checkpoint', 'org-a', false, 'base-a', dir]);
    await notFound(name, 'org-b', 'unknown');
    await store.permissions.add({ id: 'cp-1', checkpoint: name, project_id: 'org-b', created_at: 1 });
    const shared = await catalogue.resolve(name, 'org-b');
    assert.deepEqual([shared.owner, shared.shared], ['org-a', true]);
  });

  it('not found, with its reason: unknown, another organization’s, no weights, a parent gone', async () => {
    await notFound('no-such-model', 'org-a', 'unknown');
    await notFound('../base-a', 'org-a', 'unknown');
    const adapter = folder('lora', { 'adapter_config.json': '{}' });
    await addModel('ft:base-a:org-a::lora', 'org-a', 'base-a', adapter);
    await notFound('ft:base-a:org-a::lora', 'org-b', 'unknown');

    await addModel('ft:base-a:org-a::never-stored', 'org-a', 'base-a', null);
    await notFound('ft:base-a:org-a::never-stored', 'org-a', 'no_weights');
    await addModel('ft:base-a:org-a::deleted', 'org-a', 'base-a', path.join(dataDir, 'gone'));
    await notFound('ft:base-a:org-a::deleted', 'org-a', 'no_weights');

    await addModel('ft:base-b:org-a::orphan', 'org-a', 'base-b', folder('orphan', { 'adapter_config.json': '{}' }));
    await notFound('ft:base-b:org-a::orphan', 'org-a', 'parent_unavailable');
    const error = await catalogue.resolve('ft:base-b:org-a::orphan', 'org-a').catch((err: ModelNotFoundError) => err);
    assert.equal((error as ModelNotFoundError).parent, 'base-b');
  });

  it('an adapter whose parent is gone still runs over the base folder it records, while that is there', async () => {
    const adapter = folder('recorded', { 'adapter_config.json': JSON.stringify({ base_model_name_or_path: path.join(modelsDir, 'base-a') }) });
    await addModel('ft:renamed:org-a::lora', 'org-a', 'renamed', adapter);
    assert.equal((await catalogue.resolve('ft:renamed:org-a::lora', 'org-a')).modelDir, path.join(modelsDir, 'base-a'));
  });
});
