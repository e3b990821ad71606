// Each architecture beside Llama end to end through the official SDK: a random tiny model of it in a
// temporary MODELS_DIR is listed, a short LoRA job and a short full fine-tuning job on the pirate
// sample succeed with falling loss, and the fine-tuned model answers chat completions.
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { TestServer } from '../support/server.ts';
import { writeTinyModel, type TinyArchitecture } from '../engine/models/tiny-models.ts';
import { TERMINAL, metricsEvents, startTrainingServer, uploadFiles, waitForStatus } from './support.ts';

const ARCHITECTURES: TinyArchitecture[] = ['qwen3', 'smollm3', 'phi3'];

describe('architectures beside Llama: LoRA and full fine-tuning jobs end to end', () => {
  const modelsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tuneforge-architectures-models-'));
  const servers: { lora?: TestServer; full?: TestServer } = {};

  before(async () => {
    for (const architecture of ARCHITECTURES) writeTinyModel(path.join(modelsDir, `tiny-${architecture}`), architecture, 3);
    servers.lora = await startTrainingServer({ modelsDir });
    servers.full = await startTrainingServer({ modelsDir, lora: null });
  });
  after(async () => {
    for (const server of [servers.lora, servers.full]) {
      await server?.close();
      assert.deepEqual(server?.specFailures ?? [], []);
    }
    fs.rmSync(modelsDir, { recursive: true, force: true });
  });

  /** Trains `tiny-<architecture>` on `server` and returns the fine-tuned model's name. */
  async function trainOn(server: TestServer, architecture: TinyArchitecture, suffix: string): Promise<string> {
    const client = server.client();
    const files = await uploadFiles(client);
    const created = await client.fineTuning.jobs.create({
      model: `tiny-${architecture}`,
      training_file: files.training,
      suffix,
      seed: 7,
      method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 3, batch_size: 4, learning_rate_multiplier: 2 } } },
    });
    const job = await waitForStatus(client, created.id, TERMINAL);
    assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
    const metrics = await metricsEvents(client, job.id);
    assert.equal(metrics.length, 9);
    assert.ok(metrics[8].train_loss < metrics[0].train_loss - 0.5, `loss fell: ${metrics.map((m) => m.train_loss.toFixed(2))}`);
    return job.fine_tuned_model!;
  }

  async function assertAnswers(server: TestServer, model: string) {
    const completion = await server.client().chat.completions.create({
      model,
      messages: [{ role: 'user', content: 'Where be the treasure?' }],
      max_tokens: 8,
      temperature: 0,
    });
    assert.equal(completion.model, model);
    assert.ok((completion.choices[0].message.content ?? '').length > 0);
  }

  for (const architecture of ARCHITECTURES) {
    it(`${architecture}: listed, LoRA job succeeds, the adapter serves`, async () => {
      const client = servers.lora!.client();
      assert.ok((await client.models.list()).data.some((m) => m.id === `tiny-${architecture}`));
      const model = await trainOn(servers.lora!, architecture, `${architecture}-lora`);
      assert.match(model, new RegExp(`^ft:tiny-${architecture}:org-local:${architecture}-lora:`));
      await assertAnswers(servers.lora!, model);
    });

    it(`${architecture}: full fine-tuning job succeeds, the weights serve`, async () => {
      const model = await trainOn(servers.full!, architecture, `${architecture}-full`);
      await assertAnswers(servers.full!, model);
    });
  }

  it("Phi-3's fused module names are LoRA targets on Phi-3 only", async () => {
    const client = servers.lora!.client();
    const files = await uploadFiles(client);
    const create = (model: string) =>
      client.fineTuning.jobs.create({ model, training_file: files.training, lora_trainable_modules: 'qkv_proj,o_proj' } as OpenAI.FineTuning.JobCreateParams);
    const job = (await create('tiny-phi3')) as OpenAI.FineTuning.FineTuningJob & { training_options: { lora_trainable_modules: string } };
    await client.fineTuning.jobs.cancel(job.id);
    assert.equal(job.training_options.lora_trainable_modules, 'qkv_proj,o_proj');
    const refused = await create('tiny-qwen3').then(() => assert.fail('accepted'), (e: InstanceType<typeof OpenAI.APIError>) => e);
    assert.equal(refused.status, 400);
    assert.equal(refused.param, 'lora_trainable_modules');
  });
});
