// The `tuneforge` client commands through the real binary (bin/tuneforge.js, and once through
// `npx tuneforge`), each a child process with a deadline, against a running server whose worker
// trains the bundled tiny model for real. What the CLI prints is checked against what the official SDK
// reads from the same server.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import OpenAI from 'openai';
import { BASE_MODEL, ROOT, TRAIN_JSONL, VALID_JSONL, startTrainingServer, waitForStep } from '../e2e/support.ts';
import type { TestServer } from '../support/server.ts';

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

const BIN = path.join(ROOT, 'bin/tuneforge.js');
/** The whole demo training set (42 examples): at batch size 1, 42 steps an epoch. */
const DEMO_TRAIN_JSONL = fs.readFileSync(path.join(ROOT, 'samples/demo-train.jsonl'), 'utf8');

/** Runs `command args` to its end, killed after `timeoutMs`; OPENAI_* from the caller's environment is left out. */
function run(command: string, args: string[], options: { env?: Record<string, string>; cwd?: string; input?: string; timeoutMs?: number } = {}): Promise<Run> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('OPENAI_')));
  const child = spawn(command, args, {
    cwd: options.cwd ?? ROOT,
    env: { ...env, ...options.env },
    timeout: options.timeoutMs ?? 60_000,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk) => (stdout += chunk));
  child.stderr.on('data', (chunk) => (stderr += chunk));
  child.stdin.end(options.input ?? '');
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

/** `run` for a result that must have succeeded. */
function ok(result: Run): Run {
  assert.equal(result.code, 0, `exit ${result.code ?? result.signal}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`);
  assert.doesNotMatch(result.stdout, /\x1b\[/, 'no colour when stdout is not a terminal');
  return result;
}

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe('tuneforge CLI, a client of a running server', () => {
  let server: TestServer;
  let client: OpenAI;
  let work: string;
  let env: Record<string, string>;
  const tuneforge = (args: string[], options: { cwd?: string; input?: string; timeoutMs?: number; env?: Record<string, string> } = {}) =>
    run(process.execPath, [BIN, ...args], { ...options, env: { ...env, ...options.env }, cwd: options.cwd ?? work });

  // Made by the tests in order: each uses what the one before created.
  let fileId: string;
  let jobId: string;
  let fineTunedModel: string;

  before(async () => {
    server = await startTrainingServer();
    client = server.client();
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'tuneforge-cli-'));
    fs.writeFileSync(path.join(work, 'train.jsonl'), TRAIN_JSONL);
    fs.writeFileSync(path.join(work, 'valid.jsonl'), VALID_JSONL);
    env = { OPENAI_BASE_URL: `${server.url}/v1` };
  });
  after(async () => {
    await server?.close();
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  it('files upload, list and get, as a table or key/value lines and with --json', async () => {
    const uploaded = ok(await tuneforge(['files', 'upload', 'valid.jsonl']));
    fileId = uploaded.stdout.match(/^id\s+(file-\S+)$/m)?.[1] ?? '';
    const file = await client.files.retrieve(fileId);
    assert.equal(file.filename, 'valid.jsonl');
    assert.equal(file.bytes, Buffer.byteLength(VALID_JSONL));
    assert.match(uploaded.stdout, /^filename\s+valid\.jsonl$/m);

    const table = ok(await tuneforge(['files', 'list'])).stdout.split('\n');
    assert.match(table[0], /^ID\s+BYTES\s+CREATED\s+PURPOSE\s+FILENAME$/);
    assert.match(table.find((line) => line.startsWith(fileId)) ?? '', new RegExp(`^${fileId}\\s+${file.bytes}\\s+\\S+ \\S+\\s+fine-tune\\s+valid\\.jsonl$`));
    const listed = JSON.parse(ok(await tuneforge(['files', 'list', '--json'])).stdout);
    assert.deepEqual(listed, (await client.files.list()).data);

    assert.match(ok(await tuneforge(['files', 'get', fileId])).stdout, new RegExp(`^id\\s+${fileId}\\n(.+\\n)*bytes\\s+${file.bytes}\\n`));
    assert.deepEqual(JSON.parse(ok(await tuneforge(['files', 'get', fileId, '--json'])).stdout), file);
  });

  it('jobs create uploads a local training file, takes an id for the validation file, and sends the flags', async () => {
    const created = ok(await tuneforge(['jobs', 'create', '--model', BASE_MODEL, '--training-file', './train.jsonl', '--validation-file', fileId, '--n-epochs', '1', '--batch-size', '4', '--learning-rate-multiplier', '2', '--seed', '7', '--suffix', 'cli']));
    const trainingFile = created.stdout.match(/^uploaded \.\/train\.jsonl → (file-\S+)$/m)?.[1];
    jobId = created.stdout.match(/^created (ftjob-\S+) /m)?.[1] ?? '';
    assert.ok(trainingFile, created.stdout);
    const job = await client.fineTuning.jobs.retrieve(jobId);
    assert.equal(job.training_file, trainingFile);
    assert.equal(await (await client.files.content(trainingFile)).text(), TRAIN_JSONL);
    assert.equal(job.validation_file, fileId);
    assert.equal(job.seed, 7);
    assert.equal((job as { user_provided_suffix?: string }).user_provided_suffix, 'cli');
    assert.equal(job.method?.type, 'supervised');
    assert.deepEqual(job.method?.supervised?.hyperparameters, { n_epochs: 1, batch_size: 4, learning_rate_multiplier: 2 });
  });

  it('jobs follow shows step and loss until the job succeeds, and exits 0', async () => {
    const followed = ok(await tuneforge(['jobs', 'follow', jobId], { timeoutMs: 240_000 }));
    const job = await client.fineTuning.jobs.retrieve(jobId);
    assert.equal(job.status, 'succeeded');
    fineTunedModel = job.fine_tuned_model!;
    const progress = followed.stdout.split('\n').filter((line) => /%\s+step \d+\//.test(line));
    const last = progress[progress.length - 1] ?? '';
    // The last metrics event: the job has a validation file, so it carries a validation loss too.
    const metrics = (await client.fineTuning.jobs.listEvents(jobId, { limit: 100 })).data.find((e) => e.type === 'metrics')!.data as Record<string, number>;
    const validLoss = metrics.full_valid_loss ?? metrics.valid_loss;
    assert.match(last, new RegExp(`100%\\s+step ${metrics.step}/${metrics.total_steps}\\s+loss ${metrics.train_loss.toFixed(3)}\\s+val ${validLoss.toFixed(3)}\\s+left 0:00$`));
    assert.match(followed.stdout, /· Fine-tuning job started\n/);
    assert.ok(followed.stdout.endsWith(`✓ ${jobId} succeeded: ${fineTunedModel}\n`), followed.stdout);
  });

  it('jobs list, get, events and checkpoints', async () => {
    assert.match(ok(await tuneforge(['jobs', 'list'])).stdout, new RegExp(`^${jobId}\\s+${BASE_MODEL}\\s+succeeded\\s+\\S+ \\S+\\s+${fineTunedModel.replace(/[.]/g, '\\.')}$`, 'm'));
    assert.deepEqual(JSON.parse(ok(await tuneforge(['jobs', 'list', '--json'])).stdout), (await client.fineTuning.jobs.list()).data);
    assert.match(ok(await tuneforge(['jobs', 'get', jobId])).stdout, new RegExp(`^status\\s+succeeded$`, 'm'));
    assert.deepEqual(JSON.parse(ok(await tuneforge(['jobs', 'get', jobId, '--json'])).stdout), await client.fineTuning.jobs.retrieve(jobId));

    const events = (await client.fineTuning.jobs.listEvents(jobId, { limit: 100 })).data.reverse();
    const table = ok(await tuneforge(['jobs', 'events', jobId])).stdout.trim().split('\n');
    assert.match(table[0], /^CREATED\s+LEVEL\s+MESSAGE$/);
    assert.deepEqual(table.slice(1).map((line) => line.split(/\s{2,}/).slice(-1)[0]), events.map((e) => e.message));
    assert.deepEqual(JSON.parse(ok(await tuneforge(['jobs', 'events', jobId, '--json'])).stdout), events);

    const checkpoints = (await client.fineTuning.jobs.checkpoints.list(jobId)).data;
    assert.ok(checkpoints.length > 0);
    const rows = ok(await tuneforge(['jobs', 'checkpoints', jobId])).stdout.trim().split('\n');
    assert.match(rows[0], /^STEP\s+TRAIN LOSS\s+VALID LOSS\s+CREATED\s+MODEL$/);
    assert.deepEqual(rows.slice(1).map((line) => line.split(/\s+/).slice(-1)[0]), checkpoints.map((c) => c.fine_tuned_model_checkpoint));
    assert.deepEqual(JSON.parse(ok(await tuneforge(['jobs', 'checkpoints', jobId, '--json'])).stdout), checkpoints);
  });

  it('models list shows the fine-tuned model', async () => {
    assert.match(ok(await tuneforge(['models', 'list'])).stdout, new RegExp(`^${fineTunedModel.replace(/[.]/g, '\\.')}\\s+org-local\\s+`, 'm'));
    assert.deepEqual(JSON.parse(ok(await tuneforge(['models', 'list', '--json'])).stdout), (await client.models.list()).data);
  });

  it('chat streams the tuned model answer to a prompt, and answers each line of stdin as a conversation', async () => {
    const sampling = { max_completion_tokens: 12, temperature: 0 };
    const flags = ['--model', fineTunedModel, '--system', 'You are a pirate.', '--max-tokens', '12', '--temperature', '0'];
    const system = { role: 'system', content: 'You are a pirate.' } as const;
    const ask = async (messages: OpenAI.Chat.ChatCompletionMessageParam[]) =>
      (await client.chat.completions.create({ model: fineTunedModel, messages, ...sampling })).choices[0].message.content ?? '';

    const first = await ask([system, { role: 'user', content: 'Where is the treasure?' }]);
    assert.equal(ok(await tuneforge(['chat', ...flags, 'Where is the treasure?'])).stdout, `${first}\n`);

    const second = await ask([system, { role: 'user', content: 'Where is the treasure?' }, { role: 'assistant', content: first }, { role: 'user', content: 'And the ship?' }]);
    assert.equal(ok(await tuneforge(['chat', ...flags], { input: 'Where is the treasure?\nAnd the ship?\n' })).stdout, `${first}\n${second}\n`);
  });

  it('models export downloads the GGUF export', async () => {
    const exported = ok(await tuneforge(['models', 'export', fineTunedModel, '--format', 'gguf', '-o', 'model.gguf']));
    const bytes = fs.readFileSync(path.join(work, 'model.gguf'));
    assert.equal(bytes.subarray(0, 4).toString('latin1'), 'GGUF');
    assert.equal(exported.stdout, `exported ${fineTunedModel} → model.gguf (${bytes.length} bytes)\n`);
  });

  it('jobs cancel, then jobs follow exits 1 with the outcome', async () => {
    const created = ok(await tuneforge(['jobs', 'create', '--model', BASE_MODEL, '--training-file', './train.jsonl', '--n-epochs', '1', '--json']));
    const job = JSON.parse(created.stdout) as OpenAI.FineTuning.FineTuningJob;
    assert.equal(ok(await tuneforge(['jobs', 'cancel', job.id])).stdout, `${job.id} cancelled\n`);
    const followed = await tuneforge(['jobs', 'follow', job.id]);
    assert.equal(followed.code, 1);
    assert.equal(followed.stderr, `error: job ${job.id} cancelled\n`);
  });

  it('jobs create sends the training-option flags as the API\'s keys; a bad value is the server\'s 400, naming the key', async () => {
    const created = ok(await tuneforge(['jobs', 'create', '--model', BASE_MODEL, '--training-file', './train.jsonl', '--n-epochs', '1', '--json',
      '--lora-r', '4', '--lora-alpha', '8', '--lora-trainable-modules', 'q_proj,v_proj', '--train-on-inputs', 'true', '--warmup-ratio', '0.1',
      '--lr-scheduler', 'cosine', '--min-lr-ratio', '0.1', '--weight-decay', '0.01', '--max-grad-norm', '0.5', '--n-checkpoints', '2']));
    const job = JSON.parse(created.stdout) as OpenAI.FineTuning.FineTuningJob & { training_options: Record<string, unknown> };
    await client.fineTuning.jobs.cancel(job.id);
    assert.deepEqual(
      { ...job.training_options, lora_dropout: undefined, context_length: undefined, n_evals: undefined, early_stopping_patience: undefined },
      { lora: true, lora_r: 4, lora_alpha: 8, lora_dropout: undefined, lora_trainable_modules: 'q_proj,v_proj', train_on_inputs: true, warmup_ratio: 0.1,
        lr_scheduler: { lr_scheduler_type: 'cosine', lr_scheduler_args: { min_lr_ratio: 0.1 } }, weight_decay: 0.01, max_grad_norm: 0.5,
        context_length: undefined, n_checkpoints: 2, n_evals: undefined, early_stopping_patience: undefined },
    );
    const full = JSON.parse(ok(await tuneforge(['jobs', 'create', '--model', BASE_MODEL, '--training-file', './train.jsonl', '--no-lora', '--json'])).stdout);
    await client.fineTuning.jobs.cancel(full.id);
    assert.equal(full.training_options.lora, false);
    const bad = await tuneforge(['jobs', 'create', '--model', BASE_MODEL, '--training-file', './train.jsonl', '--lora-r', '0']);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /^error: .+\(param: lora_r, code: [^)]+\)\n$/);
  });

  it("jobs create --follow on a job that fails: its error on stderr, exit 1", async () => {
    fs.writeFileSync(path.join(work, 'bad.jsonl'), 'not json\n'.repeat(12));
    const failed = await tuneforge(['jobs', 'create', '--model', BASE_MODEL, '--training-file', 'bad.jsonl', '--follow'], { timeoutMs: 120_000 });
    assert.equal(failed.code, 1, failed.stderr);
    const jobId = failed.stdout.match(/^created (ftjob-\S+) /m)?.[1] ?? '';
    const job = await client.fineTuning.jobs.retrieve(jobId);
    assert.equal(job.status, 'failed');
    assert.equal(failed.stderr, `error: job ${jobId} failed: ${job.error!.message} (code: ${job.error!.code})\n`);
  });

  it('jobs pause and resume a running job', { timeout: 300_000 }, async () => {
    fs.writeFileSync(path.join(work, 'long.jsonl'), DEMO_TRAIN_JSONL);
    const created = ok(await tuneforge(['jobs', 'create', '--model', BASE_MODEL, '--training-file', 'long.jsonl', '--n-epochs', '12', '--batch-size', '1', '--json']));
    const job = JSON.parse(created.stdout) as OpenAI.FineTuning.FineTuningJob;
    try {
      await waitForStep(client, job.id, 1); // 504 steps: still training when the CLI's pause (a new process) arrives
      assert.equal(ok(await tuneforge(['jobs', 'pause', job.id])).stdout, `${job.id} paused\n`);
      assert.equal((await client.fineTuning.jobs.retrieve(job.id)).status, 'paused');
      assert.equal(JSON.parse(ok(await tuneforge(['jobs', 'resume', job.id, '--json'])).stdout).status, 'queued');
    } finally {
      await client.fineTuning.jobs.cancel(job.id);
    }
  });

  it('files rm deletes the file', async () => {
    assert.equal(ok(await tuneforge(['files', 'rm', fileId])).stdout, `deleted ${fileId}\n`);
    await assert.rejects(client.files.retrieve(fileId), OpenAI.NotFoundError);
  });

  it("an unknown job id: one line with the server's message, exit 1", async () => {
    const error = await client.fineTuning.jobs.retrieve('ftjob-doesnotexist').then(() => assert.fail('found'), (e: InstanceType<typeof OpenAI.APIError>) => e);
    const failed = await tuneforge(['jobs', 'get', 'ftjob-doesnotexist']);
    assert.equal(failed.code, 1);
    assert.equal(failed.stdout, '');
    assert.equal(failed.stderr, `error: ${(error.error as { message: string }).message} (param: ${error.param}, code: ${error.code})\n`);
  });

  it('--base-url where nothing listens: one line naming the URL and the refusal, exit 1', async () => {
    const url = `http://127.0.0.1:${await closedPort()}/v1`;
    const failed = await tuneforge(['files', 'list', '--base-url', url]);
    assert.equal(failed.code, 1);
    assert.equal(failed.stderr, `error: cannot reach ${url}: connect ECONNREFUSED ${url.slice('http://'.length, -'/v1'.length)}\n`);
  });

  it('a usage mistake: the error and the usage on stderr, exit 2, nothing sent', async () => {
    const jobsBefore = (await client.fineTuning.jobs.list()).data.length;
    const failed = await tuneforge(['jobs', 'create', '--model', BASE_MODEL]);
    assert.equal(failed.code, 2);
    assert.match(failed.stderr, /^error: --training-file is required\nusage: tuneforge jobs create /);
    assert.equal((await client.fineTuning.jobs.list()).data.length, jobsBefore);
  });

  it('npx tuneforge runs the checkout\'s binary from a folder inside it', async () => {
    const listed = ok(await run('npx', ['tuneforge', 'jobs', 'list', '--json'], { env, cwd: path.join(ROOT, 'test'), timeoutMs: 120_000 }));
    assert.deepEqual(JSON.parse(listed.stdout), (await client.fineTuning.jobs.list()).data);
  });
});
