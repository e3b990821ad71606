// Shared by the end-to-end tests: a real server whose embedded worker trains the bundled tiny model
// in a child process, the official SDK, tiny jobs on the pirate sample, and a webhook receiver.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import type OpenAI from 'openai';
import { generateWebhookSecret } from '../../src/integrations/webhooks.ts';
import { WandbLogger } from '../../src/integrations/wandb.ts';
import { trainInChildProcess } from '../../src/scheduler/train-process.ts';
import { createTrainRunner } from '../../src/scheduler/train-runner.ts';
import type { LoraSettings } from '../../src/engine/index.ts';
import type { Config } from '../../src/config.ts';
import { startFakeWandb } from '../support/fake-wandb.ts';
import { startTestServer, waitFor, type TestServer } from '../support/server.ts';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const MODELS_DIR = path.join(ROOT, 'models');
export const BASE_MODEL = 'tiny-llama';
const sample = (name: string) => fs.readFileSync(path.join(ROOT, 'samples', name), 'utf8').trim().split('\n');
const DEMO_TRAIN = sample('demo-train.jsonl');
/** 12 training examples (the minimum is 10) and 4 validation ones keep every job to seconds. */
export const TRAIN_JSONL = DEMO_TRAIN.slice(0, 12).join('\n') + '\n';
export const VALID_JSONL = sample('demo-valid.jsonl').slice(0, 4).join('\n') + '\n';

export const TERMINAL = ['succeeded', 'failed', 'cancelled'];

/**
 * A server with the real trainer (a child process per job) and fast leases, on the bundled models
 * unless `modelsDir` names another folder; `lora: null` makes it fine-tune fully.
 */
export async function startTrainingServer(
  options: {
    env?: Record<string, string>; checkpointEverySteps?: number; wandb?: WandbLogger; memoryLimitBytes?: number; modelsDir?: string;
    lora?: LoraSettings | null;
  } = {},
): Promise<TestServer> {
  const modelsDir = options.modelsDir ?? MODELS_DIR;
  const overrides: Partial<Config> & { env?: Record<string, string> } = {
    modelsDir,
    queue: { leaseMs: 5_000, heartbeatMs: 50, pollMs: 50 },
    env: options.env,
  };
  const runJob = createTrainRunner(trainInChildProcess, {
    modelsDir, checkpointEverySteps: options.checkpointEverySteps ?? 2, wandb: options.wandb, memoryLimitBytes: options.memoryLimitBytes,
    ...(options.lora !== undefined ? { lora: options.lora } : {}),
  });
  return startTestServer(overrides, { runJob });
}

/** Uploads TRAIN_JSONL, or the whole demo training set (42 examples) for tests that need long epochs. */
export async function uploadFiles(client: OpenAI, options: { allTrainingExamples?: boolean } = {}) {
  const jsonl = options.allTrainingExamples ? DEMO_TRAIN.join('\n') + '\n' : TRAIN_JSONL;
  const training = await client.files.create({ file: new File([jsonl], 'train.jsonl'), purpose: 'fine-tune' });
  const validation = await client.files.create({ file: new File([VALID_JSONL], 'valid.jsonl'), purpose: 'fine-tune' });
  return { training: training.id, validation: validation.id };
}

export function createJob(client: OpenAI, files: { training: string; validation?: string }, hyperparameters: { n_epochs: number; batch_size: number; learning_rate_multiplier?: number }, extra: Record<string, unknown> = {}) {
  return client.fineTuning.jobs.create({
    model: BASE_MODEL,
    training_file: files.training,
    ...(files.validation ? { validation_file: files.validation } : {}),
    seed: 7,
    method: { type: 'supervised', supervised: { hyperparameters: { learning_rate_multiplier: 2, ...hyperparameters } } },
    ...extra,
  });
}

export const waitForStatus = (client: OpenAI, jobId: string, statuses: string[]) =>
  waitFor(() => client.fineTuning.jobs.retrieve(jobId), (job) => statuses.includes(job.status), 50);

/** Every event of a job, oldest first, through the SDK's pagination. */
export async function allEvents(client: OpenAI, jobId: string) {
  const events = [];
  for await (const e of client.fineTuning.jobs.listEvents(jobId, { limit: 100 })) events.push(e);
  return events.reverse();
}

export async function metricsEvents(client: OpenAI, jobId: string) {
  return (await allEvents(client, jobId)).filter((e) => e.type === 'metrics').map((e) => e.data as Record<string, number>);
}

/** Waits until the job has a metrics event for `step` or later (or has ended). */
export async function waitForStep(client: OpenAI, jobId: string, step: number) {
  await waitFor(
    async () => ({
      page: await client.fineTuning.jobs.listEvents(jobId, { limit: 5 }),
      job: await client.fineTuning.jobs.retrieve(jobId),
    }),
    ({ page, job }) => TERMINAL.includes(job.status) || page.data.some((e) => e.type === 'metrics' && (e.data as { step: number }).step >= step),
    30,
  );
}

/**
 * Starts `tuneforge <command>` as its own process (node + tsx) on the bundled models, with `env` over
 * a base that keeps the caller's environment out (keys, webhooks, database). Resolves once it is up:
 * `serve` with its API URL, `worker` once it said it started; a process not up within
 * `startTimeoutMs` is killed and the call fails. The caller kills `child`. A `launcher` prefixes the
 * command line (e.g. `ip netns exec NS`, which execs it: `child` is then the CLI's process itself).
 * `entry`: another script that starts the same way (test/support/remote-worker.ts).
 */
export async function spawnCli(
  command: 'serve' | 'worker', env: Record<string, string>, options: { startTimeoutMs?: number; launcher?: string[]; entry?: string } = {},
): Promise<{ child: ChildProcess; url: string }> {
  const { startTimeoutMs = 120_000, launcher = [], entry = path.join(ROOT, 'src/cli/main.ts') } = options;
  const [executable, ...args] = [...launcher, process.execPath, '--import', 'tsx', entry, command];
  const child = spawn(executable, args, {
    cwd: ROOT,
    env: {
      ...process.env,
      HOST: '127.0.0.1',
      PORT: '0',
      MODELS_DIR: MODELS_DIR,
      DATABASE_URL: '',
      API_KEYS: '',
      ADMIN_API_KEYS: '',
      WEBHOOK_URLS: '',
      LOG_LEVEL: 'info',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines = readline.createInterface({ input: child.stdout! });
  let timer: NodeJS.Timeout | undefined;
  const url = await new Promise<string>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`${command} exited early (code ${code})`)));
    timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${command} did not start within ${startTimeoutMs / 1000} s`));
    }, startTimeoutMs);
    lines.on('line', (line) => {
      try {
        const entry = JSON.parse(line);
        if (command === 'serve' && typeof entry.url === 'string' && entry.url.endsWith('/v1')) resolve(entry.url);
        if (command === 'worker' && entry.msg === 'worker started') resolve('');
      } catch {
        // not a log line
      }
    });
  }).finally(() => clearTimeout(timer));
  lines.on('line', () => {}); // keep draining the logs
  return { child, url };
}

/** A local endpoint that records webhook deliveries. */
export async function webhookReceiver() {
  const secret = generateWebhookSecret();
  const received: { headers: http.IncomingHttpHeaders; body: string }[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      received.push({ headers: req.headers, body });
      res.writeHead(200).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return {
    secret,
    received,
    env: { WEBHOOK_URLS: `http://127.0.0.1:${port}/hooks`, WEBHOOK_SECRET: secret },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** The fake W&B that refuses what W&B would (test/support/fake-wandb.ts), and a logger sending to it. */
export async function fakeWandb() {
  const fake = await startFakeWandb();
  return { ...fake, logger: new WandbLogger({ apiKey: fake.apiKey, baseUrl: fake.baseUrl, flushIntervalMs: 50 }) };
}
