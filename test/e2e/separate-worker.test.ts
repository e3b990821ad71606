// The deployment with a separate worker: `tuneforge serve` with EMBEDDED_WORKER=0 and `tuneforge
// worker` as two processes sharing DATA_DIR and the database (SQLite, and PostgreSQL where
// TEST_DATABASE_URL is set). The server never trains; the worker trains the job for real, and the
// server then serves the fine-tuned model it finds in the shared store.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, it } from 'node:test';
import OpenAI from 'openai';
import { describeOnEachBackend, freshDatabase, type TestDatabase } from '../support/database.ts';
import { TERMINAL, createJob, metricsEvents, spawnCli, uploadFiles, waitForStatus } from './support.ts';

describeOnEachBackend('serve without a worker, and a separate worker process', (backend) => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tuneforge-split-'));
  const children: ChildProcess[] = [];
  let database: TestDatabase;
  let env: Record<string, string>;

  before(async () => {
    database = await freshDatabase(backend);
    env = { DATA_DIR: path.join(root, 'data'), DATABASE_URL: database.url ?? '', JOB_POLL_MS: '100', JOB_HEARTBEAT_MS: '100' };
  });
  after(async () => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await database?.drop();
    fs.rmSync(root, { recursive: true, force: true });
  });

  it('the job waits queued until the worker starts, trains there, and the server serves the result', async () => {
    const server = await spawnCli('serve', { ...env, EMBEDDED_WORKER: '0' });
    children.push(server.child);
    const client = new OpenAI({ apiKey: 'unused', baseURL: server.url, maxRetries: 0 });
    const job = await createJob(client, await uploadFiles(client), { n_epochs: 1, batch_size: 4 });
    assert.equal((await waitForStatus(client, job.id, ['queued', ...TERMINAL])).status, 'queued');

    const worker = await spawnCli('worker', env);
    children.push(worker.child);
    const done = await waitForStatus(client, job.id, TERMINAL);
    assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
    assert.deepEqual((await metricsEvents(client, job.id)).map((m) => m.step), [1, 2, 3]);

    const chat = await client.chat.completions.create({ model: done.fine_tuned_model!, messages: [{ role: 'user', content: 'Ahoy?' }], max_tokens: 8, seed: 1 });
    assert.equal(chat.model, done.fine_tuned_model);
    assert.ok(chat.usage!.completion_tokens > 0);
  });
});
