// Creating a job on a tuned model, through the official SDK (no training: a stand-in runner): what
// may be tuned further (the organization's fine-tuned models and checkpoints, checkpoints shared with
// it), what is refused (another organization's, a LoRA setting that differs from the adapter's), and
// the job and model names. Training itself continuing the weights is test/e2e/tune-chain.test.ts's.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import { after, before, describe, it } from 'node:test';
import { BASE_MODEL, chatJsonl, startTestServer, waitFor, type TestServer } from '../support/server.ts';
import { NonTrainingRunner } from '../support/runners.ts';
import type { FsBlobStore } from '../../src/store/blobs.ts';

const MODEL = `ft:${BASE_MODEL}:org-a:lora:abcdefgh`;
const CHECKPOINT = `${MODEL}:ckpt-step-2`;

describe('a job on a tuned model', () => {
  let server: TestServer;
  const a = () => server.client('sk-a');
  const b = () => server.client('sk-b');
  const files = new Map<string, string>();

  before(async () => {
    server = await startTestServer(
      { env: { API_KEYS: 'sk-a:org-a,sk-b:org-b', ADMIN_API_KEYS: 'sk-admin-a:org-a' } },
      { runJob: new NonTrainingRunner().runJob },
    );
    // org-a's LoRA model (rank 4 on q and v) and an earlier checkpoint of its job, as a worker records them.
    const key = 'jobs/ftjob-parent/checkpoints/step-4';
    const adapter = (server.store.blobs as FsBlobStore).pathOf(key);
    fs.mkdirSync(adapter, { recursive: true });
    fs.writeFileSync(path.join(adapter, 'adapter_config.json'), JSON.stringify({
      peft_type: 'LORA', r: 4, lora_alpha: 8, target_modules: ['v_proj', 'q_proj'], base_model_name_or_path: path.join(server.modelsDir, BASE_MODEL),
    }));
    await server.store.models.add({ id: MODEL, organization_id: 'org-a', created_at: 1, job_id: 'ftjob-parent', base_model: BASE_MODEL, dir: key });
    await server.store.checkpoints.add({
      id: 'ftckpt_parent2', job_id: 'ftjob-parent', organization_id: 'org-a', created_at: 1, fine_tuned_model_checkpoint: CHECKPOINT,
      step_number: 2, metrics: {}, dir: key,
    });
    for (const [org, client] of [['org-a', a], ['org-b', b]] as const) {
      files.set(org, (await client().files.create({ file: new File([chatJsonl(10)], 'train.jsonl'), purpose: 'fine-tune' })).id);
    }
  });
  after(async () => {
    await server.close();
    assert.deepEqual(server.specFailures, []);
  });

  const create = (client: OpenAI, org: string, model: string, extra: Record<string, unknown> = {}) =>
    client.fineTuning.jobs.create({ model, training_file: files.get(org)!, suffix: 'next', ...extra } as OpenAI.FineTuning.JobCreateParams);
  const refused = async (promise: Promise<unknown>, param: string, code: string) => {
    const error = await promise.then(() => assert.fail('the job was created'), (err: unknown) => err);
    assert.ok(error instanceof OpenAI.BadRequestError, String(error));
    assert.deepEqual([error.param, error.code], [param, code], error.message);
    return error;
  };
  const finished = (client: OpenAI, id: string) => waitFor(() => client.fineTuning.jobs.retrieve(id), (job) => job.status === 'succeeded', 20, 30_000);

  it('the organization’s own model: the job echoes it, continues its adapter’s LoRA settings, and names its model after the root base', async () => {
    const job = await create(a(), 'org-a', MODEL);
    assert.equal(job.model, MODEL);
    const options = (job as unknown as { training_options: Record<string, unknown> }).training_options;
    assert.deepEqual([options.lora, options.lora_r, options.lora_alpha, options.lora_trainable_modules], [true, 4, 8, 'v_proj,q_proj']);
    const done = await finished(a(), job.id);
    assert.match(done.fine_tuned_model!, new RegExp(`^ft:${BASE_MODEL}:org-a:next:[A-Za-z0-9]{8}$`));
    assert.ok((await a().models.list()).data.some((m) => m.id === done.fine_tuned_model && m.owned_by === 'org-a'));
  });

  it('its checkpoint, and full fine-tuning on the LoRA model', async () => {
    assert.equal((await create(a(), 'org-a', CHECKPOINT)).model, CHECKPOINT);
    const full = await create(a(), 'org-a', MODEL, { lora: false });
    assert.equal((full as unknown as { training_options: { lora: boolean } }).training_options.lora, false);
  });

  it('a LoRA setting that differs from the adapter’s is a 400 naming it; the same ones are accepted', async () => {
    const error = await refused(create(a(), 'org-a', MODEL, { lora_r: 16 }), 'lora_r', 'invalid_value');
    assert.match(error.message, /LoRA adapter with lora_r 4/);
    await refused(create(a(), 'org-a', MODEL, { lora_alpha: 16 }), 'lora_alpha', 'invalid_value');
    await refused(create(a(), 'org-a', CHECKPOINT, { lora_trainable_modules: 'all-linear' }), 'lora_trainable_modules', 'invalid_value');
    await create(a(), 'org-a', MODEL, { lora_r: 4, lora_alpha: 8, lora_trainable_modules: 'q_proj,v_proj' });
  });

  it('another organization’s model or checkpoint is refused like an unknown one, until the checkpoint is shared', async () => {
    for (const model of [MODEL, CHECKPOINT]) {
      const error = await refused(create(b(), 'org-b', model), 'model', 'model_not_available');
      assert.equal(error.message, `400 Model ${model} is not available for fine-tuning or does not exist.`);
    }
    const grant = await server.request('POST', `/v1/fine_tuning/checkpoints/${encodeURIComponent(CHECKPOINT)}/permissions`, {
      key: 'sk-admin-a', body: JSON.stringify({ project_ids: ['org-b'] }), headers: { 'content-type': 'application/json' },
    });
    assert.equal(grant.status, 200);
    const job = await create(b(), 'org-b', CHECKPOINT);
    assert.equal(job.model, CHECKPOINT);
    assert.match((await finished(b(), job.id)).fine_tuned_model!, new RegExp(`^ft:${BASE_MODEL}:org-b:next:`));
    await refused(create(b(), 'org-b', MODEL), 'model', 'model_not_available');
  });
});
