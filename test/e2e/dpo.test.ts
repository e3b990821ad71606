// A DPO job end to end with the official SDK: preference files validated, the embedded worker
// trains the tiny model for real (child process), metrics events carry OpenAI's keys plus the DPO
// reward ones, checkpoints list, and the result CSV has the reward columns after OpenAI's five.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { TestServer } from '../support/server.ts';
import { BASE_MODEL, ROOT, TERMINAL, allEvents, metricsEvents, startTrainingServer, waitForStatus } from './support.ts';

describe('DPO job end to end (real engine, tiny model)', () => {
  let server: TestServer;
  const client = () => server.client();

  before(async () => {
    server = await startTrainingServer();
  });
  after(async () => {
    await server?.close();
    assert.deepEqual(server.specFailures, []);
  });

  it('trains to succeeded with DPO metrics, checkpoints and a result CSV', async () => {
    const upload = (name: string) => client().files.create({ file: new File([fs.readFileSync(path.join(ROOT, 'samples', name))], name), purpose: 'fine-tune' });
    const training = await upload('dpo-train.jsonl');
    const validation = await upload('dpo-valid.jsonl');
    const created = await client().fineTuning.jobs.create({
      model: BASE_MODEL,
      training_file: training.id,
      validation_file: validation.id,
      seed: 7,
      suffix: 'dpo',
      method: { type: 'dpo', dpo: { hyperparameters: { n_epochs: 2, batch_size: 8, learning_rate_multiplier: 2 } } },
    });
    assert.equal(created.method?.type, 'dpo');
    const job = await waitForStatus(client(), created.id, TERMINAL);
    assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
    assert.equal(job.method?.dpo?.hyperparameters?.beta, 0.1, 'beta auto = 0.1');
    assert.ok(job.trained_tokens! > 0);
    assert.match(job.fine_tuned_model!, /^ft:tiny-llama:org-local:dpo:/);

    const metrics = await metricsEvents(client(), job.id);
    assert.deepEqual(metrics.map((m) => m.step), Array.from({ length: 10 }, (_, i) => i + 1));
    for (const m of metrics) {
      for (const k of ['train_loss', 'train_mean_token_accuracy', 'train_rewards_chosen', 'train_rewards_rejected', 'train_reward_accuracy', 'train_reward_margin']) {
        assert.equal(typeof m[k], 'number', `${k} at step ${m.step}`);
      }
      assert.ok(Math.abs(m.train_reward_margin - (m.train_rewards_chosen - m.train_rewards_rejected)) < 1e-5);
    }
    assert.ok(Math.abs(metrics[0].train_loss - Math.LN2) < 0.05, `first DPO loss ≈ log 2: ${metrics[0].train_loss}`);
    const last = metrics[9];
    for (const k of ['valid_loss', 'valid_reward_margin', 'full_valid_loss', 'full_valid_reward_margin', 'full_valid_reward_accuracy']) assert.equal(typeof last[k], 'number', k);
    assert.ok(last.full_valid_reward_margin > 0, `held-out margin ${last.full_valid_reward_margin}`);
    const messages = (await allEvents(client(), job.id)).map((e) => e.message);
    assert.ok(messages.some((m) => m.startsWith('DPO (beta 0.1)')));

    const checkpoints = await client().fineTuning.jobs.checkpoints.list(job.id);
    assert.deepEqual(checkpoints.data.map((c) => c.step_number), [10, 5]);
    assert.equal(checkpoints.data[0].fine_tuned_model_checkpoint, job.fine_tuned_model);
    assert.equal(typeof checkpoints.data[0].metrics.full_valid_loss, 'number');

    const csv = (await (await client().files.content(job.result_files[0])).text()).trim().split('\n');
    assert.equal(
      csv[0],
      'step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy,' +
        'train_rewards_chosen,train_rewards_rejected,train_reward_accuracy,train_reward_margin,' +
        'valid_rewards_chosen,valid_rewards_rejected,valid_reward_accuracy,valid_reward_margin',
    );
    const rows = csv.slice(1).map((line) => line.split(','));
    assert.deepEqual(rows.map((r) => Number(r[1])), metrics.map((m) => m.train_loss));
    assert.deepEqual(rows.map((r) => Number(r[8])), metrics.map((m) => m.train_reward_margin));
  });
});
