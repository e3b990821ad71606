// Hosts that share no disk: two worker processes, each with its own DATA_DIR, and an API process
// with a third, sharing only PostgreSQL (TEST_DATABASE_URL; skipped without it) and a blob store:
// S3 (TEST_S3_URL's server, `tuneforge worker` itself), and a folder seen as a store on another
// machine (test/support/remote-blobs.ts, through test/support/remote-worker.ts), so that what a job
// needs is pulled through each host's blob cache and what it writes is pushed. The first worker is
// killed with SIGKILL mid-training and its DATA_DIR removed; the second continues the job from the
// last pushed resume point, and the job succeeds once, with every step, checkpoint and event
// recorded once, and the API serves the model from its own cache.
import assert from 'node:assert/strict';
import { execFileSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import OpenAI from 'openai';
import { startServer, type RunningServer } from '../../src/api/server.ts';
import { loadConfig } from '../../src/config.ts';
import { FsBlobStore } from '../../src/store/blobs.ts';
import { openStore, type BlobStore, type Store } from '../../src/store/index.ts';
import { S3BlobStore } from '../../src/store/s3-blobs.ts';
import { testS3Location } from '../support/blob-stores.ts';
import { freshDatabase, type TestDatabase } from '../support/database.ts';
import { RemoteLikeBlobStore } from '../support/remote-blobs.ts';
import { waitFor } from '../support/server.ts';
import { MODELS_DIR, ROOT, TERMINAL, allEvents, createJob, metricsEvents, spawnCli, uploadFiles, waitForStatus, waitForStep } from './support.ts';
import { alive, exited } from '../support/processes.ts';

const WORKER = path.join(ROOT, 'test/support/remote-worker.ts');

/** The blob store the hosts share: how a worker host and the API host reach it, and a view of it for the assertions. */
interface SharedStore {
  workerEnv: Record<string, string>;
  workerEntry?: string;
  apiStore(config: ReturnType<typeof loadConfig>): Promise<Store>;
  apiEnv: Record<string, string>;
  bucket: BlobStore;
  close(): Promise<void>;
}

function folderStore(root: string): SharedStore {
  const folder = path.join(root, 'bucket');
  return {
    workerEnv: { SHARED_BLOBS: folder },
    workerEntry: WORKER,
    apiStore: (config) => openStore(config, { blobs: new RemoteLikeBlobStore(new FsBlobStore(folder)) }),
    apiEnv: {},
    bucket: new FsBlobStore(folder),
    close: async () => {},
  };
}

function s3Store(): SharedStore {
  const { blobStore, s3, env } = testS3Location();
  const bucket = new S3BlobStore(blobStore, s3);
  return {
    workerEnv: env,
    apiStore: (config) => openStore(config),
    apiEnv: env,
    bucket,
    close: async () => {
      for (const top of new Set((await bucket.list('')).map((key) => key.split('/')[0]))) await bucket.removePrefix(top);
      bucket.close();
    },
  };
}

const needsDatabase = process.env.TEST_DATABASE_URL ? false : 'needs TEST_DATABASE_URL (each host its own DATA_DIR, one database)';
const SHARED_STORES = [
  { name: 'S3', open: () => s3Store(), skip: needsDatabase || (process.env.TEST_S3_URL ? false : 'TEST_S3_URL is not set (scripts/start-test-s3.sh prints one)') },
  { name: 'a folder seen as another machine', open: (root: string) => folderStore(root), skip: needsDatabase },
];

for (const shared of SHARED_STORES) describe(`workers and inference on hosts with no shared disk (${shared.name})`, { skip: shared.skip }, () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tuneforge-hosts-'));
  const hostDir = (name: string) => path.join(root, name);
  const children: ChildProcess[] = [];
  let store: SharedStore;
  let database: TestDatabase;
  let api: RunningServer;
  let client: OpenAI;

  const startWorker = async (name: string) => {
    const started = await spawnCli('worker', {
      ...store.workerEnv, DATA_DIR: hostDir(name), DATABASE_URL: database.url!,
      JOB_LEASE_MS: '1500', JOB_HEARTBEAT_MS: '100', JOB_POLL_MS: '100', CHECKPOINT_EVERY_STEPS: '3',
    }, store.workerEntry ? { entry: store.workerEntry } : {});
    children.push(started.child);
    return started.child;
  };

  before(async () => {
    store = shared.open(root);
    database = await freshDatabase('postgres');
    const config = loadConfig({ host: '127.0.0.1', port: 0, dataDir: hostDir('api'), databaseUrl: database.url, modelsDir: MODELS_DIR }, store.apiEnv);
    api = await startServer(config, { logger: false, store: await store.apiStore(config) }); // no runner: this host never trains
    client = new OpenAI({ apiKey: 'unused', baseURL: `${api.url}/v1`, maxRetries: 0 });
  });
  after(async () => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await api?.close();
    await api?.store.close();
    await database?.drop();
    await store?.close();
    fs.rmSync(root, { recursive: true, force: true });
  });

  it('a worker killed mid-job on one host is resumed on another from the last pushed resume point', async () => {
    const files = await uploadFiles(client);
    const job = await createJob(client, files, { n_epochs: 3, batch_size: 1 });
    const first = await startWorker('host-a');
    await waitForStep(client, job.id, 8); // resume points at steps 3 and 6 are pushed by now
    const before = await metricsEvents(client, job.id);
    assert.ok(before.length < 36, `killed at step ${before.length}`);
    const trainers = execFileSync('ps', ['-o', 'pid=,args=', '--ppid', String(first.pid)], { encoding: 'utf8' })
      .split('\n').filter((line) => line.includes('train-process')).map((line) => Number(line.trim().split(/\s+/)[0]));
    first.kill('SIGKILL');
    await exited(first);
    await waitFor(async () => trainers.filter(alive), (left) => left.length === 0);
    const pushed = (await api.store.jobs.get(job.id))!.resume_point;
    assert.match(pushed ?? '', new RegExp(`^jobs/${job.id}/resume/step-\\d+$`), 'the resume point is a key of the store');
    fs.rmSync(hostDir('host-a'), { recursive: true, force: true }); // nothing of that host survives

    await startWorker('host-b');
    const done = await waitForStatus(client, job.id, TERMINAL);
    assert.equal(done.status, 'succeeded', JSON.stringify(done.error));

    const metrics = await metricsEvents(client, job.id);
    assert.deepEqual(metrics.map((m) => m.step), Array.from({ length: 36 }, (_, i) => i + 1), 'one metrics event per step');
    assert.deepEqual(metrics.slice(0, before.length), before);
    const messages = (await allEvents(client, job.id)).map((e) => e.message);
    const continued = messages.filter((m) => m.startsWith('Training continues from its last resume point'));
    assert.equal(continued.length, 1);
    const from = Number(/step (\d+)/.exec(continued[0])?.[1]);
    assert.ok(from >= 6 && from % 3 === 0, continued[0]);
    assert.equal(messages.filter((m) => m === 'Fine-tuning job started').length, 1);
    assert.equal(messages.filter((m) => m === 'The job has successfully completed').length, 1);
    for (const step of [12, 24, 36]) assert.equal(messages.filter((m) => m.startsWith(`Checkpoint created at step ${step} `)).length, 1, `checkpoint ${step}`);

    // The store holds the three checkpoints the rows name, and nothing else of the job but its start.
    const checkpoints = (await client.fineTuning.jobs.checkpoints.list(job.id)).data;
    assert.deepEqual(checkpoints.map((c) => c.step_number), [36, 24, 12]);
    const { bucket } = store;
    const folders = new Set((await bucket.list(`jobs/${job.id}`)).map((key) => key.split('/').slice(0, 4).join('/')));
    assert.deepEqual([...folders].sort(), [`jobs/${job.id}/checkpoints/step-12`, `jobs/${job.id}/checkpoints/step-24`, `jobs/${job.id}/checkpoints/step-36`, `jobs/${job.id}/start/start.json`]);
    const model = await api.store.models.get(done.fine_tuned_model!);
    assert.equal(model?.dir, `jobs/${job.id}/checkpoints/step-36`);
    assert.equal(fs.existsSync(path.join(hostDir('host-b'), 'jobs', job.id)), false, 'the worker’s scratch goes once everything is pushed');

    // The API host serves the model from its own cache.
    const chat = await client.chat.completions.create({ model: done.fine_tuned_model!, messages: [{ role: 'user', content: 'Ahoy?' }], max_tokens: 8, seed: 1 });
    assert.equal(chat.model, done.fine_tuned_model);
    assert.ok(chat.usage!.completion_tokens > 0);
    assert.ok(fs.readdirSync(path.join(hostDir('api'), 'cache'), { recursive: true }).some((name) => String(name).endsWith('adapter_model.safetensors')));

    // And exports it (the adapter, as PEFT) from the same cache.
    const exported = await fetch(`${api.url}/v1/models/${encodeURIComponent(done.fine_tuned_model!)}/export?format=peft`);
    assert.equal(exported.status, 200, await exported.clone().text());
    assert.ok((await exported.arrayBuffer()).byteLength > 0);

    // Deleting the model removes its blobs.
    await client.models.delete(done.fine_tuned_model!);
    assert.deepEqual(await bucket.list(model!.dir!), []);
  });
});
