// Crash recovery with real processes: `tuneforge serve` (node + tsx, a temporary DATA_DIR, short
// leases) is killed with SIGKILL mid-training and started again on the same DATA_DIR and database
// (SQLite, and PostgreSQL where TEST_DATABASE_URL is set). The job's lease expires, the new
// embedded worker claims it, continues from its last resume point (CHECKPOINT_EVERY_STEPS) and
// succeeds, with exactly one metrics event per step.
import assert from 'node:assert/strict';
import { execFileSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, it } from 'node:test';
import OpenAI from 'openai';
import { describeOnEachBackend, freshDatabase, type TestDatabase } from '../support/database.ts';
import { waitFor } from '../support/server.ts';
import { TERMINAL, allEvents, createJob, metricsEvents, spawnCli, uploadFiles, waitForStatus, waitForStep } from './support.ts';
import { alive, exited } from '../support/processes.ts';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tuneforge-crash-'));
const children: ChildProcess[] = [];

after(() => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  fs.rmSync(root, { recursive: true, force: true });
});

/** Starts `serve` as its own process on `store`, with short leases; resolves once it listens. */
async function serve(store: { DATA_DIR: string; DATABASE_URL: string }): Promise<{ child: ChildProcess; url: string }> {
  const started = await spawnCli('serve', {
    ...store,
    JOB_LEASE_MS: '1500',
    JOB_HEARTBEAT_MS: '100',
    JOB_POLL_MS: '100',
    CHECKPOINT_EVERY_STEPS: '3',
  });
  children.push(started.child);
  return started;
}

describeOnEachBackend('crash recovery', (backend) => {
  let database: TestDatabase;
  before(async () => (database = await freshDatabase(backend)));
  after(() => database?.drop());
  it('a server killed with SIGKILL mid-training recovers the job on restart, without losing or repeating events', () =>
    killAndRecover({ DATA_DIR: path.join(root, backend), DATABASE_URL: database.url ?? '' }));
});

async function killAndRecover(store: { DATA_DIR: string; DATABASE_URL: string }) {
  const first = await serve(store);
  let client = new OpenAI({ apiKey: 'unused', baseURL: first.url, maxRetries: 0 });
  const files = await uploadFiles(client);
  const job = await createJob(client, files, { n_epochs: 3, batch_size: 1 });
  await waitForStep(client, job.id, 8); // resume points at steps 3 and 6 exist by now
  const before = await metricsEvents(client, job.id);
  assert.ok(before.length < 36, `killed at step ${before.length}`);
  // The server's training processes (other children, such as tsx's esbuild service, come and go).
  const trainers = execFileSync('ps', ['-o', 'pid=,args=', '--ppid', String(first.child.pid)], { encoding: 'utf8' })
    .split('\n')
    .filter((line) => line.includes('train-process'))
    .map((line) => Number(line.trim().split(/\s+/)[0]));
  assert.equal(trainers.length, 1, 'one training process');
  first.child.kill('SIGKILL');
  await exited(first.child);
  // The orphaned trainer notices its parent is gone and exits: nothing trains the job twice.
  await waitFor(async () => trainers.filter(alive), (left) => left.length === 0);

  const second = await serve(store);
  client = new OpenAI({ apiKey: 'unused', baseURL: second.url, maxRetries: 0 });
  const done = await waitForStatus(client, job.id, TERMINAL);
  assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
  assert.ok(done.fine_tuned_model);

  const metrics = await metricsEvents(client, job.id);
  assert.deepEqual(metrics.map((m) => m.step), Array.from({ length: 36 }, (_, i) => i + 1), 'one metrics event per step');
  // Steps recorded before the crash kept their values; the rest continued from the resume point.
  assert.deepEqual(metrics.slice(0, before.length), before);
  const messages = (await allEvents(client, job.id)).map((e) => e.message);
  assert.equal(messages.filter((m) => m === 'Fine-tuning job started').length, 1);
  const continued = messages.filter((m) => m.startsWith('Training continues from its last resume point'));
  assert.equal(continued.length, 1);
  const from = Number(/step (\d+)/.exec(continued[0])?.[1]);
  assert.ok(from >= 6 && from % 3 === 0 && from < 36, continued[0]); // not from scratch
  assert.equal(messages.filter((m) => m.includes('stopped responding')).length, 1);
  assert.equal(messages.filter((m) => m === 'The job has successfully completed').length, 1);
  for (const step of [12, 24, 36]) assert.equal(messages.filter((m) => m.startsWith(`Checkpoint created at step ${step} `)).length, 1, `checkpoint ${step}`);
  assert.deepEqual((await client.fineTuning.jobs.checkpoints.list(job.id)).data.map((c) => c.step_number), [36, 24, 12]);
  assert.ok((await client.models.list()).data.some((m) => m.id === done.fine_tuned_model));

  second.child.kill('SIGTERM');
  await exited(second.child);
}
