// Per-job training options (the create-job body's extension, domain/training-options.ts) through the
// official SDK, without a worker: what a job shows, the server's defaults, and each bad value's 400.
// What each option does to training is test/e2e/training-options.test.ts's.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import OpenAI, { toFile } from 'openai';
import type { JobCreateParams } from 'openai/resources/fine-tuning/jobs/jobs';
import { loadConfig } from '../../src/config.ts';
import { BASE_MODEL, chatJsonl, startTestServer, type TestServer } from '../support/server.ts';

/** The SDK sends keys its types do not know as given. */
const withOptions = (params: JobCreateParams, options: Record<string, unknown>) => ({ ...params, ...options }) as JobCreateParams;

async function refused(promise: Promise<unknown>, param: string, message?: RegExp) {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof OpenAI.BadRequestError, String(err));
    assert.equal(err.status, 400);
    assert.equal(err.param, param, err.message);
    if (message) assert.match(err.message, message);
    return true;
  });
}

describe('training options on the create-job body', () => {
  let server: TestServer;
  let client: OpenAI;
  let training = '';
  let validation = '';
  before(async () => {
    // Server defaults: full fine-tuning unless a job asks for LoRA, and a cosine schedule.
    server = await startTestServer({ env: { TRAINING_DEFAULTS: JSON.stringify({ weight_decay: 0.01, lr_scheduler: { lr_scheduler_type: 'cosine' } }) } });
    client = server.client();
    training = (await client.files.create({ file: await toFile(Buffer.from(chatJsonl(12)), 't.jsonl'), purpose: 'fine-tune' })).id;
    validation = (await client.files.create({ file: await toFile(Buffer.from(chatJsonl(4)), 'v.jsonl'), purpose: 'fine-tune' })).id;
  });
  after(() => server.close());

  const base = (): JobCreateParams => ({ model: BASE_MODEL, training_file: training });

  it('shows every option on the job, the built-in and server defaults filled in', async () => {
    const job = await client.fineTuning.jobs.create(base());
    const shown = (job as unknown as { training_options: Record<string, unknown> }).training_options;
    assert.deepEqual(shown, {
      lora: true,
      lora_r: 8,
      lora_alpha: 16,
      lora_dropout: 0,
      lora_trainable_modules: 'all-linear',
      train_on_inputs: false,
      warmup_ratio: 0.05,
      lr_scheduler: { lr_scheduler_type: 'cosine', lr_scheduler_args: { min_lr_ratio: 0 } },
      weight_decay: 0.01,
      max_grad_norm: 1,
      context_length: null, // the model's max_position_embeddings, as far as the worker's memory allows
      n_checkpoints: null,
      n_evals: null,
      early_stopping_patience: null,
    });
    // The same on retrieve and list; `method` stays OpenAI's (the spec check runs on every response).
    const again = await client.fineTuning.jobs.retrieve(job.id);
    assert.deepEqual((again as unknown as { training_options: unknown }).training_options, shown);
    assert.deepEqual(Object.keys(again.method!).sort(), ['supervised', 'type']);
    assert.deepEqual(server.specFailures, []);
  });

  it('takes what the request sets over the defaults', async () => {
    const job = await client.fineTuning.jobs.create(
      withOptions({ ...base(), validation_file: validation }, {
        lora_r: 4,
        lora_alpha: 8,
        lora_dropout: 0.1,
        lora_trainable_modules: 'q_proj,v_proj',
        train_on_inputs: true,
        warmup_ratio: 0.2,
        lr_scheduler: { lr_scheduler_type: 'constant' },
        weight_decay: 0,
        max_grad_norm: 0,
        context_length: 64,
        n_checkpoints: 2,
        n_evals: 3,
        early_stopping_patience: 2,
      }),
    );
    assert.deepEqual((job as unknown as { training_options: unknown }).training_options, {
      lora: true,
      lora_r: 4,
      lora_alpha: 8,
      lora_dropout: 0.1,
      lora_trainable_modules: 'q_proj,v_proj',
      train_on_inputs: true,
      warmup_ratio: 0.2,
      lr_scheduler: { lr_scheduler_type: 'constant', lr_scheduler_args: { min_lr_ratio: 0 } },
      weight_decay: 0,
      max_grad_norm: 0,
      context_length: 64,
      n_checkpoints: 2,
      n_evals: 3,
      early_stopping_patience: 2,
    });
    const full = await client.fineTuning.jobs.create(withOptions(base(), { lora: false, train_on_inputs: 'auto' }));
    const shown = (full as unknown as { training_options: Record<string, unknown> }).training_options;
    assert.equal(shown.lora, false);
    assert.equal(shown.train_on_inputs, false);
    for (const key of ['lora_r', 'lora_alpha', 'lora_dropout', 'lora_trainable_modules']) assert.equal(shown[key], null, key);
  });

  it('refuses bad values with a 400 naming the option', async () => {
    const bad: [Record<string, unknown>, string, RegExp?][] = [
      [{ lora: 'yes' }, 'lora'],
      [{ lora_r: 0 }, 'lora_r'],
      [{ lora_r: 2.5 }, 'lora_r'],
      [{ lora_alpha: 0 }, 'lora_alpha'],
      [{ lora_dropout: 1 }, 'lora_dropout'],
      [{ lora_trainable_modules: 'q_proj,attn' }, 'lora_trainable_modules', /Unknown LoRA module 'attn'/],
      [{ lora: false, lora_r: 16 }, 'lora_r', /LoRA fine-tuning only/],
      [{ train_on_inputs: 'sometimes' }, 'train_on_inputs'],
      [{ warmup_ratio: 1.5 }, 'warmup_ratio'],
      [{ lr_scheduler: { lr_scheduler_type: 'step' } }, 'lr_scheduler.lr_scheduler_type'],
      [{ lr_scheduler: { lr_scheduler_type: 'cosine', lr_scheduler_args: { min_lr_ratio: 2 } } }, 'lr_scheduler.lr_scheduler_args.min_lr_ratio'],
      [{ lr_scheduler: { lr_scheduler_type: 'cosine', warmup: 3 } }, 'lr_scheduler.warmup'],
      [{ weight_decay: -0.1 }, 'weight_decay'],
      [{ max_grad_norm: -1 }, 'max_grad_norm'],
      [{ context_length: 16 }, 'context_length'],
      [{ context_length: 4096 }, 'context_length', /more than the model's 512 positions/],
      [{ n_checkpoints: 0 }, 'n_checkpoints'],
      [{ n_evals: 2 }, 'n_evals', /needs a validation file/],
      [{ early_stopping_patience: 1 }, 'early_stopping_patience', /needs a validation file/],
    ];
    for (const [options, param, message] of bad) await refused(client.fineTuning.jobs.create(withOptions(base(), options)), param, message);
    // Rules tied to the method.
    const dpo = { ...base(), method: { type: 'dpo' as const } };
    await refused(client.fineTuning.jobs.create(withOptions(dpo, { train_on_inputs: true })), 'train_on_inputs', /supervised jobs only/);
    const grader = { type: 'string_check', name: 'eq', input: '{{sample.output_text}}', reference: '{{item.answer}}', operation: 'eq' };
    const rft = { ...base(), validation_file: validation, method: { type: 'reinforcement' as const, reinforcement: { grader } } } as JobCreateParams;
    await refused(client.fineTuning.jobs.create(withOptions(rft, { n_evals: 2 })), 'n_evals', /eval_interval/);
  });

  it('refuses a TRAINING_DEFAULTS the create-job body would refuse', () => {
    assert.throws(() => loadConfig({}, { TRAINING_DEFAULTS: '{"lora_r": 0}' }), /TRAINING_DEFAULTS: \/lora_r must be >= 1/);
    assert.throws(() => loadConfig({}, { TRAINING_DEFAULTS: '{"rank": 8}' }), /must NOT have additional properties \(rank\)/);
    assert.throws(() => loadConfig({}, { TRAINING_DEFAULTS: 'lora=false' }), /must be a JSON object/);
    assert.deepEqual(loadConfig({}, { TRAINING_DEFAULTS: '{"lora": false}' }).training.defaults, { lora: false });
  });
});
