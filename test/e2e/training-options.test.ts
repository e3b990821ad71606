// Per-job training options end to end: jobs created through the official SDK with the extension
// keys, trained by the real engine on the bundled tiny model, and each option's effect seen where a
// user sees it: the model's files, the events, the checkpoints.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type OpenAI from 'openai';
import type { FsBlobStore } from '../../src/store/blobs.ts';
import { ChatFormatter } from '../../src/engine/data/chat-format.ts';
import { tokenizeDataset } from '../../src/engine/data/dataset.ts';
import { loadTokenizer } from '../../src/engine/data/tokenizer.ts';
import { readSafetensors } from '../../src/engine/io/safetensors.ts';
import type { TestServer } from '../support/server.ts';
import { BASE_MODEL, MODELS_DIR, TERMINAL, allEvents, createJob, metricsEvents, startTrainingServer, uploadFiles, waitForStatus } from './support.ts';

describe('training options end to end (real engine, tiny model)', () => {
  let server: TestServer;
  let files: { training: string; validation: string };
  const client = () => server.client();

  before(async () => {
    server = await startTrainingServer();
    files = await uploadFiles(client());
  });
  after(async () => {
    await server?.close();
    assert.deepEqual(server.specFailures, []);
  });

  /** Creates a job with `options`, waits for it to end and returns it (succeeded) with its events' messages. */
  async function train(hyperparameters: { n_epochs: number; batch_size: number; learning_rate_multiplier?: number }, options: Record<string, unknown>, withValidation = false) {
    const created = await createJob(client(), withValidation ? files : { training: files.training }, hyperparameters, options);
    const job = await waitForStatus(client(), created.id, TERMINAL);
    assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
    const messages = (await allEvents(client(), job.id)).map((e) => e.message);
    return { job, messages };
  }
  const modelDir = async (job: OpenAI.FineTuning.FineTuningJob) => (server.store.blobs as FsBlobStore).pathOf((await server.store.models.get(job.fine_tuned_model!))!.dir!);
  /** The number in the engine's plan message: "…, N target tokens per epoch, …". */
  const targetTokens = (messages: string[]) => Number(/(\d+) target tokens per epoch/.exec(messages.find((m) => m.includes('target tokens per epoch'))!)![1]);

  it('lora: false trains every base weight and keeps n_checkpoints checkpoints', async () => {
    const { job } = await train({ n_epochs: 1, batch_size: 4 }, { lora: false, n_checkpoints: 3, weight_decay: 0.1, max_grad_norm: 0.5 });
    const dir = await modelDir(job);
    assert.ok(!fs.existsSync(path.join(dir, 'adapter_config.json')), 'a full fine-tune is no adapter');
    const tuned = readSafetensors(path.join(dir, 'model.safetensors')).tensors;
    const base = readSafetensors(path.join(MODELS_DIR, BASE_MODEL, 'model.safetensors')).tensors;
    for (const name of ['model.layers.0.self_attn.q_proj.weight', 'model.layers.3.mlp.down_proj.weight', 'model.embed_tokens.weight']) {
      assert.notDeepEqual(tuned.get(name)!.data, base.get(name)!.data, `${name} was trained`);
    }
    // 3 steps, a checkpoint at each, all kept (the default keeps one per epoch).
    const checkpoints = await client().fineTuning.jobs.checkpoints.list(job.id);
    assert.deepEqual(checkpoints.data.map((c) => c.step_number), [3, 2, 1]);
  });

  it('lora_r, lora_alpha and lora_trainable_modules shape the adapter; train_on_inputs and context_length the targets', async () => {
    const { job, messages } = await train({ n_epochs: 1, batch_size: 4 }, {
      lora_r: 4, lora_alpha: 32, lora_dropout: 0.05, lora_trainable_modules: 'q_proj,v_proj', train_on_inputs: true,
    });
    const dir = await modelDir(job);
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'));
    assert.equal(config.r, 4);
    assert.equal(config.lora_alpha, 32);
    assert.equal(config.lora_dropout, 0.05);
    assert.deepEqual(config.target_modules, ['q_proj', 'v_proj']);
    const tensors = readSafetensors(path.join(dir, 'adapter_model.safetensors')).tensors;
    assert.equal(tensors.size, 4 * 2 * 2, '4 layers × (q, v) × (A, B)');
    for (const [name, t] of tensors) {
      assert.match(name, /\.(q_proj|v_proj)\.lora_[AB]\.weight$/);
      assert.equal(name.includes('lora_A') ? t.shape[0] : t.shape[1], 4, name);
    }
    // train_on_inputs: every token but each example's first is a target, the system and user turns' too.
    const formatter = new ChatFormatter(loadTokenizer(path.join(MODELS_DIR, BASE_MODEL)));
    const lease = server.store.cache.lease();
    const dataset = tokenizeDataset(await lease.file(`files/${files.training}`), formatter, 512);
    lease.release();
    assert.equal(targetTokens(messages), dataset.tokenCount - 12);

    // Without it only the assistant's tokens are; context_length truncates the examples longer than it
    // (8 of the 12 have more than 48 tokens), as the model's own context does.
    const short = await train({ n_epochs: 1, batch_size: 4 }, { context_length: 48 });
    assert.ok(short.messages.includes('8 training examples were truncated to 48 tokens'), short.messages.join('\n'));
    const shapes = /micro-batches of (.+?) tokens/.exec(short.messages.join('\n'))?.[1].split(', ') ?? [];
    assert.ok(shapes.length > 0 && shapes.every((s) => s.endsWith('× 48')), `every row 48 tokens: ${short.messages.join('\n')}`);
    assert.ok(targetTokens(short.messages) > 0 && targetTokens(short.messages) < targetTokens(messages), short.messages.join('\n'));
  });

  it('n_evals sets how many validations run; early_stopping_patience ends a job whose validation loss stops improving', async () => {
    const evals = await train({ n_epochs: 2, batch_size: 4 }, { n_evals: 2 }, true);
    const validated = (await metricsEvents(client(), evals.job.id)).filter((m) => typeof m.valid_loss === 'number');
    assert.deepEqual(validated.map((m) => m.step), [3, 6]);
    for (const m of validated) assert.equal(typeof m.full_valid_loss, 'number', 'each evaluation is on the whole validation set');

    // Overfitting 12 examples at a high rate: the held-out loss turns up, and the job stops there.
    const { job, messages } = await train({ n_epochs: 10, batch_size: 4, learning_rate_multiplier: 8 }, { n_evals: 15, early_stopping_patience: 2 }, true);
    const stop = messages.find((m) => m.startsWith('Early stopping at step'));
    assert.ok(stop, messages.join('\n'));
    const stoppedAt = Number(/^Early stopping at step (\d+) of 30/.exec(stop)![1]);
    assert.ok(stoppedAt < 30);
    const metrics = await metricsEvents(client(), job.id);
    assert.equal(metrics[metrics.length - 1].step, stoppedAt, 'no step after the stop');
    const losses = metrics.filter((m) => typeof m.valid_loss === 'number').map((m) => m.valid_loss);
    const best = Math.min(...losses.slice(0, -2));
    assert.ok(losses.slice(-2).every((l) => l >= best), `the last two evaluations did not improve: ${losses.map((l) => l.toFixed(3))}`);
    // The model is the state at the stop, its last checkpoint.
    const checkpoints = await client().fineTuning.jobs.checkpoints.list(job.id);
    assert.equal(checkpoints.data[0].step_number, stoppedAt);
    assert.equal(checkpoints.data[0].fine_tuned_model_checkpoint, job.fine_tuned_model);
    assert.equal(job.trained_tokens, Math.round((evals.job.trained_tokens! / 6) * stoppedAt), 'trained tokens count the steps taken');
  });
});
