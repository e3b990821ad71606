// Tuning a tuned model, end to end with the official SDK and the real engine (tiny model): a job's
// `model` may be a fine-tuned model or a checkpoint. LoRA continues the parent's adapter, full
// fine-tuning its weights, and a job may use any method after any other (supervised → DPO →
// reinforcement, full → LoRA). The proof that weights continue: on the parent's own training data,
// with the same seed (so the same first batch), the child's first-step loss is lower than the
// parent's first step, which was a fresh job on the base; DPO's first loss is log 2 and
// reinforcement's first KL 0 against the model they start from. The child outlives its parent:
// deleted, and its files gone.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type OpenAI from 'openai';
import { trainInChildProcess } from '../../src/scheduler/train-process.ts';
import { createTrainRunner } from '../../src/scheduler/train-runner.ts';
import { RFT_GRADER, RFT_TRAIN } from '../../scripts/make-rft-data.ts';
import { startTestServer, type TestServer } from '../support/server.ts';
import { BASE_MODEL, MODELS_DIR, ROOT, TERMINAL, metricsEvents, uploadFiles, waitForStatus } from './support.ts';

/** Supervised hyperparameters of every job here: 12 examples, 3 steps an epoch. */
const HP = { n_epochs: 2, batch_size: 4, learning_rate_multiplier: 2 };

describe('tuning a tuned model (real engine, tiny model)', () => {
  let server: TestServer;
  let files: { training: string; validation: string };
  const client = () => server.client();

  before(async () => {
    const runJob = createTrainRunner(trainInChildProcess, { modelsDir: MODELS_DIR, checkpointEverySteps: 0, rftMaxCompletionTokens: 16 });
    server = await startTestServer({ modelsDir: MODELS_DIR, queue: { leaseMs: 5_000, heartbeatMs: 50, pollMs: 50 } }, { runJob });
    files = await uploadFiles(client());
  });
  after(async () => {
    await server?.close();
    assert.deepEqual(server.specFailures, []);
  });

  /** A supervised job on `model` over the training file (LoRA unless `full`); resolves once it ended (it must succeed). */
  async function supervised(model: string, suffix: string, { full = false } = {}) {
    const created = await client().fineTuning.jobs.create({
      model, training_file: files.training, seed: 7, suffix,
      method: { type: 'supervised', supervised: { hyperparameters: HP } },
      ...(full ? { lora: false } : {}),
    } as OpenAI.FineTuning.JobCreateParams);
    assert.equal(created.model, model, 'the job echoes the model it was asked for');
    const job = await waitForStatus(client(), created.id, TERMINAL);
    assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
    return { job, losses: (await metricsEvents(client(), job.id)).map((m) => m.train_loss) };
  }

  /** The parent is deleted and its job's blobs are gone: what the child needs must be its own. */
  async function removeParent(job: OpenAI.FineTuning.FineTuningJob) {
    assert.equal((await client().models.delete(job.fine_tuned_model!)).deleted, true);
    await server.store.blobs.removePrefix(`jobs/${job.id}`);
  }

  async function chats(model: string) {
    const reply = await client().chat.completions.create({ model, messages: [{ role: 'user', content: 'Where be the treasure?' }], max_tokens: 8, temperature: 0 });
    assert.equal(reply.model, model);
    assert.ok(reply.choices[0].message.content!.length > 0);
  }

  async function exports(model: string, format: 'peft' | 'safetensors') {
    const res = await server.request('GET', `/v1/models/${encodeURIComponent(model)}/export?format=${format}`);
    assert.equal(res.status, 200, `export ${format} of ${model}: ${JSON.stringify(res.body).slice(0, 300)}`);
  }

  it('LoRA: supervised → supervised and a checkpoint → supervised continue the adapter; supervised → DPO → reinforcement, which outlive their parent', async () => {
    const parent = await supervised(BASE_MODEL, 'sft');
    const parentModel = parent.job.fine_tuned_model!;
    assert.match(parentModel, /^ft:tiny-llama:org-local:sft:[A-Za-z0-9]{8}$/);

    const child = await supervised(parentModel, 'again');
    assert.match(child.job.fine_tuned_model!, /^ft:tiny-llama:org-local:again:[A-Za-z0-9]{8}$/, 'named after the root base, as OpenAI does');
    assert.ok(child.losses[0] < parent.losses[0] - 0.1, `first-step loss: child ${child.losses[0]}, fresh ${parent.losses[0]}`);
    assert.ok(child.losses[0] < parent.losses[2], `the child starts below where the parent was after its first epoch's steps: ${child.losses[0]} vs ${parent.losses[2]}`);

    // A checkpoint as the start: the parent's first epoch.
    const checkpoint = (await client().fineTuning.jobs.checkpoints.list(parent.job.id)).data.find((c) => c.step_number === 3)!;
    const fromCheckpoint = await supervised(checkpoint.fine_tuned_model_checkpoint, 'from-ckpt');
    assert.ok(fromCheckpoint.losses[0] < parent.losses[0] - 0.05, `from the checkpoint: ${fromCheckpoint.losses[0]} vs fresh ${parent.losses[0]}`);
    assert.ok(fromCheckpoint.losses[0] > child.losses[0], 'the checkpoint is less trained than the final model');

    // DPO on the supervised model: its reference is that model, so the first loss is log 2.
    const upload = (name: string) => client().files.create({ file: new File([fs.readFileSync(path.join(ROOT, 'samples', name))], name), purpose: 'fine-tune' });
    const dpoFile = await upload('dpo-train.jsonl');
    const dpoCreated = await client().fineTuning.jobs.create({
      model: parentModel, training_file: dpoFile.id, seed: 7, suffix: 'dpo',
      method: { type: 'dpo', dpo: { hyperparameters: { n_epochs: 1, batch_size: 8, learning_rate_multiplier: 2 } } },
    });
    const dpo = await waitForStatus(client(), dpoCreated.id, TERMINAL);
    assert.equal(dpo.status, 'succeeded', JSON.stringify(dpo.error));
    assert.equal(dpo.model, parentModel);
    const dpoLosses = (await metricsEvents(client(), dpo.id)).map((m) => m.train_loss);
    assert.ok(Math.abs(dpoLosses[0] - Math.LN2) < 0.02, `first DPO loss ≈ log 2 against the supervised model: ${dpoLosses[0]}`);

    // Reinforcement on the DPO model: its reference is that model, so the first step's KL is 0.
    const rftFile = await client().files.create({ file: new File([RFT_TRAIN.slice(0, 12).join('\n') + '\n'], 'rft-train.jsonl'), purpose: 'fine-tune' });
    const rftCreated = await client().fineTuning.jobs.create({
      model: dpo.fine_tuned_model!, training_file: rftFile.id, seed: 7, suffix: 'rft',
      method: { type: 'reinforcement', reinforcement: { grader: { ...RFT_GRADER }, hyperparameters: { n_epochs: 1, batch_size: 4, compute_multiplier: 0.5, reasoning_effort: 'default' } } },
    });
    const rft = await waitForStatus(client(), rftCreated.id, TERMINAL);
    assert.equal(rft.status, 'succeeded', JSON.stringify(rft.error));
    const rftMetrics = await metricsEvents(client(), rft.id);
    assert.ok(Math.abs(rftMetrics[0].kl) < 1e-6, `first-step KL to the DPO model: ${rftMetrics[0].kl}`);
    assert.match(rft.fine_tuned_model!, /^ft:tiny-llama:org-local:rft:/);

    const listed = (await client().models.list()).data.find((m) => m.id === dpo.fine_tuned_model);
    assert.deepEqual(listed && { id: listed.id, owned_by: listed.owned_by }, { id: dpo.fine_tuned_model, owned_by: 'org-local' });

    await removeParent(parent.job);
    await chats(rft.fine_tuned_model!);
    await chats(dpo.fine_tuned_model!);
    await exports(dpo.fine_tuned_model!, 'peft');
    await chats(child.job.fine_tuned_model!);
  });

  it('full → LoRA and full → full continue the full weights, and outlive their parent', async () => {
    const parent = await supervised(BASE_MODEL, 'full', { full: true });
    const loraChild = await supervised(parent.job.fine_tuned_model!, 'lora-on-full');
    assert.ok(loraChild.losses[0] < parent.losses[0] - 0.1, `LoRA on full: ${loraChild.losses[0]} vs fresh ${parent.losses[0]}`);
    const fullChild = await supervised(parent.job.fine_tuned_model!, 'full-on-full', { full: true });
    assert.ok(fullChild.losses[0] < parent.losses[0] - 0.1, `full on full: ${fullChild.losses[0]} vs fresh ${parent.losses[0]}`);

    await removeParent(parent.job);
    for (const model of [loraChild.job.fine_tuned_model!, fullChild.job.fine_tuned_model!]) {
      await chats(model);
      await exports(model, 'safetensors');
    }
  });
});
