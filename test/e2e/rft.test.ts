// A reinforcement fine-tuning job end to end through the official SDK: the embedded worker trains
// the bundled tiny model in a child process, grading its samples in the worker with the job's
// string_check grader; the job succeeds, metrics events carry the reward fields, checkpoints carry
// reward metrics, and the result CSV has the reward columns after OpenAI's five.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { TestServer } from '../support/server.ts';
import { startTestServer } from '../support/server.ts';
import { createTrainRunner } from '../../src/scheduler/train-runner.ts';
import { trainInChildProcess } from '../../src/scheduler/train-process.ts';
import { RFT_GRADER, RFT_TRAIN, RFT_VALID } from '../../scripts/make-rft-data.ts';
import { BASE_MODEL, MODELS_DIR, TERMINAL, allEvents, metricsEvents, waitForStatus } from './support.ts';
import { pythonLimitsFromEnv } from '../../src/graders/index.ts';
import { pythonSandboxSkip } from '../support/python-sandbox.ts';


describe('reinforcement jobs end to end (real engine, tiny model)', () => {
  let server: TestServer;
  const client = () => server.client();

  before(async () => {
    const runJob = createTrainRunner(trainInChildProcess, { modelsDir: MODELS_DIR, checkpointEverySteps: 2, rftMaxCompletionTokens: 16 });
    server = await startTestServer({ modelsDir: MODELS_DIR, queue: { leaseMs: 5_000, heartbeatMs: 50, pollMs: 50 } }, { runJob });
  });
  after(async () => {
    await server?.close();
    assert.deepEqual(server.specFailures, []);
  });

  it('a string_check job succeeds with reward metrics, reward checkpoints and reward CSV columns', async () => {
    const training = await client().files.create({ file: new File([RFT_TRAIN.slice(0, 12).join('\n') + '\n'], 'rft-train.jsonl'), purpose: 'fine-tune' });
    const validation = await client().files.create({ file: new File([RFT_VALID.slice(0, 4).join('\n') + '\n'], 'rft-valid.jsonl'), purpose: 'fine-tune' });
    const created = await client().fineTuning.jobs.create({
      model: BASE_MODEL,
      training_file: training.id,
      validation_file: validation.id,
      seed: 7,
      suffix: 'rft',
      method: {
        type: 'reinforcement',
        reinforcement: {
          grader: { ...RFT_GRADER },
          // reasoning_effort given: an unresolved "auto" is not in the spec's enum for the job object (reported).
          hyperparameters: { n_epochs: 1, batch_size: 4, compute_multiplier: 1, eval_interval: 1, eval_samples: 2, reasoning_effort: 'default' },
        },
      },
    });
    assert.equal(created.method?.type, 'reinforcement');
    const job = await waitForStatus(client(), created.id, TERMINAL);
    assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
    assert.match(job.fine_tuned_model!, /^ft:tiny-llama:org-local:rft:/);
    const hp = job.method!.reinforcement!.hyperparameters!;
    assert.equal(hp.compute_multiplier, 1);
    assert.equal(hp.eval_interval, 1);
    assert.ok(job.trained_tokens! > 0);

    const metrics = await metricsEvents(client(), job.id);
    assert.deepEqual(metrics.map((m) => m.step), [1, 2, 3]);
    for (const m of metrics) {
      assert.equal(m.total_steps, 3);
      for (const key of ['train_loss', 'train_reward_mean', 'train_reward_std', 'valid_reward_mean', 'kl']) assert.equal(typeof m[key], 'number', `${key} in ${JSON.stringify(m)}`);
      assert.ok(m.train_reward_mean >= 0 && m.train_reward_mean <= 1);
    }
    const messages = (await allEvents(client(), job.id)).map((e) => e.message);
    assert.ok(messages.some((m) => /^Validation reward before training: /.test(m)), messages.join('\n'));

    const checkpoints = await client().fineTuning.jobs.checkpoints.list(job.id);
    assert.equal(checkpoints.data.length, 1);
    assert.equal(typeof (checkpoints.data[0].metrics as Record<string, unknown>).valid_reward_mean, 'number');

    const csv = await (await client().files.content(job.result_files[0])).text();
    const [header, ...rows] = csv.trim().split('\n');
    assert.equal(header, 'step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy,train_reward_mean,train_reward_std,valid_reward_mean,kl');
    assert.equal(rows.length, 3);
    for (const row of rows) assert.equal(row.split(',').length, 9);
  });

  it('a python grader job grades in the sandbox (server data hidden) and succeeds', { skip: pythonSandboxSkip({ limits: pythonLimitsFromEnv() }) }, async () => {
    const training = await client().files.create({ file: new File([RFT_TRAIN.slice(0, 12).join('\n') + '\n'], 'rft-train.jsonl'), purpose: 'fine-tune' });
    // Reward 1 for the letter, and 0.5 more if the server's data folder were readable (it must not be).
    const source = [
      'import os',
      'def grade(sample, item):',
      `    leak = 0.5 if os.path.exists(${JSON.stringify(server.dataDir)}) and len(os.listdir(${JSON.stringify(server.dataDir)})) > 0 else 0.0`,
      '    return (1.0 if item["letter"] in sample["output_text"] else 0.0) + leak',
    ].join('\n');
    const created = await client().fineTuning.jobs.create({
      model: BASE_MODEL,
      training_file: training.id,
      seed: 7,
      method: {
        type: 'reinforcement',
        reinforcement: { grader: { type: 'python', name: 'letter', source }, hyperparameters: { n_epochs: 1, batch_size: 6, compute_multiplier: 0.5, reasoning_effort: 'default' } },
      },
    });
    const job = await waitForStatus(client(), created.id, TERMINAL);
    assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
    const metrics = await metricsEvents(client(), job.id);
    assert.deepEqual(metrics.map((m) => m.step), [1, 2]);
    for (const m of metrics) {
      assert.ok(m.train_reward_mean >= 0 && m.train_reward_mean <= 1, `no reward from a readable data folder: ${JSON.stringify(m)}`);
      assert.equal(m.valid_reward_mean, undefined, 'no validation file: no evaluation');
    }
  });
});
