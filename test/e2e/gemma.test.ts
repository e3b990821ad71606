// Gemma 2 and Gemma 3 text base models end to end through the official SDK: tiny random folders in
// a temporary MODELS_DIR are listed, a LoRA job on each (and a full fine-tune of Gemma 3) trains
// in the worker's child process to succeeded, the fine-tuned model answers chat completions with
// the KV-cache decoder, and exports: as a PEFT adapter with PEFT's module names (LoRA), as a merged
// safetensors folder that answers as the service did, and as a GGUF file of llama.cpp's architecture.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { trainInChildProcess } from '../../src/scheduler/train-process.ts';
import { createTrainRunner } from '../../src/scheduler/train-runner.ts';
import { startTestServer, type TestServer } from '../support/server.ts';
import { writeTinyModel } from '../engine/models/tiny-models.ts';
import { readTar, extractTar } from '../engine/export/untar.ts';
import { chatPrompt, loadModelForInference } from '../../src/engine/infer/model.ts';
import { TERMINAL, createJob, metricsEvents, uploadFiles, waitForStatus } from './support.ts';

describe('Gemma 2 and Gemma 3 base models end to end (real engine, tiny random models)', () => {
  const modelsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tuneforge-gemma-models-'));
  let server: TestServer;
  let files: { training: string; validation: string };
  const client = () => server.client();

  before(async () => {
    writeTinyModel(path.join(modelsDir, 'tiny-gemma2'), 'gemma2', 3);
    writeTinyModel(path.join(modelsDir, 'tiny-gemma3'), 'gemma3', 3);
    const runJob = createTrainRunner(trainInChildProcess, { modelsDir, checkpointEverySteps: 2 });
    server = await startTestServer({ modelsDir, queue: { leaseMs: 5_000, heartbeatMs: 50, pollMs: 50 } }, { runJob });
    files = await uploadFiles(client());
  });
  after(async () => {
    await server?.close();
    fs.rmSync(modelsDir, { recursive: true, force: true });
    assert.deepEqual(server.specFailures, []);
  });

  it('lists both folders as base models', async () => {
    const ids = [];
    for await (const m of client().models.list()) ids.push(m.id);
    assert.ok(ids.includes('tiny-gemma2') && ids.includes('tiny-gemma3'), ids.join(', '));
  });

  const download = async (model: string, query: string) => {
    const res = await fetch(`${server.url}/v1/models/${encodeURIComponent(model)}/export?${query}`);
    assert.equal(res.status, 200, query);
    return Buffer.from(await res.arrayBuffer());
  };

  /** Trains `model` to succeeded, then chats with the result and exports it. */
  async function trainChatExport(model: string, options: { lora: boolean }) {
    const created = await createJob(client(), files, { n_epochs: 2, batch_size: 4 }, { model, suffix: 'gemma', ...options });
    const job = await waitForStatus(client(), created.id, TERMINAL);
    assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
    const metrics = await metricsEvents(client(), job.id);
    assert.equal(metrics.length, 6);
    assert.ok(metrics.every((m) => Number.isFinite(m.train_loss)), JSON.stringify(metrics));
    assert.ok(metrics[5].train_loss < metrics[0].train_loss, `loss fell: ${metrics.map((m) => m.train_loss.toFixed(2))}`);

    const messages = [{ role: 'user' as const, content: 'What colour is the sky?' }];
    const reply = await client().chat.completions.create({ model: job.fine_tuned_model!, messages, max_tokens: 8, temperature: 0 });
    assert.equal(reply.model, job.fine_tuned_model);
    assert.ok(reply.usage!.completion_tokens > 0);

    if (options.lora) {
      const entries = readTar(await download(job.fine_tuned_model!, 'format=peft'));
      const adapterConfig = JSON.parse(entries.find((e) => e.path.endsWith('adapter_config.json'))!.data.toString('utf8'));
      // The default targets, all-linear, as PEFT names Gemma's linears.
      assert.deepEqual([...adapterConfig.target_modules].sort(), ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']);
      const weights = entries.find((e) => e.path.endsWith('adapter_model.safetensors'))!.data;
      assert.ok(weights.includes('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight'));
    }
    // The merged folder, loaded on its own, answers exactly as the service did.
    const out = path.join(modelsDir, `merged-${job.id}`);
    const [configPath] = extractTar(await download(job.fine_tuned_model!, 'format=safetensors&dtype=f32'), out).filter((p) => p.endsWith('config.json') && !p.includes('_config'));
    const merged = await loadModelForInference({ baseModelDir: path.dirname(path.join(out, configPath)) }, { intraOpNumThreads: 1 });
    try {
      assert.equal(merged.config.architecture, model === 'tiny-gemma2' ? 'gemma2' : 'gemma3');
      const local = await merged.generate(chatPrompt(merged, messages), { maxTokens: 8, temperature: 0 });
      assert.equal(local.text, reply.choices[0].message.content);
    } finally {
      await merged.release();
    }

    const gguf = await download(job.fine_tuned_model!, 'format=gguf&dtype=f16');
    assert.equal(gguf.subarray(0, 4).toString('latin1'), 'GGUF');
    assert.ok(gguf.subarray(0, 4096).toString('latin1').includes(model === 'tiny-gemma2' ? 'gemma2' : 'gemma3'));
  }

  it('Gemma 2: a LoRA job succeeds, its model chats and exports as GGUF', async () => {
    await trainChatExport('tiny-gemma2', { lora: true });
  });

  it('Gemma 3: a LoRA job and a full fine-tune succeed, their models chat and export as GGUF', async () => {
    await trainChatExport('tiny-gemma3', { lora: true });
    await trainChatExport('tiny-gemma3', { lora: false });
  });
});
