// tuneforge on several hosts: two API processes and two workers, each in its own network namespace
// with its own address (test/cluster/netns.ts) and its own DATA_DIR, sharing only PostgreSQL and the
// bucket of the S3 server TEST_S3_URL names (radosgw; without it, a folder all hosts share). Twenty
// tiny jobs go in through both APIs (the official SDK at each API's address); the worker training
// the long one is killed with SIGKILL; the other host resumes it from the pushed resume point and the
// killed host comes back with an empty disk. Every job succeeds exactly once: one success event, one
// metrics event per step, one result file, checkpoints neither lost nor repeated (rows and stored
// objects), every file and model listed once by both APIs, and the resumed model answers chat
// through the API that did not create it.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { waitFor } from '../support/server.ts';
import { TERMINAL, TRAIN_JSONL, allEvents, createJob } from '../e2e/support.ts';
import { ADMIN_API_KEY, createCluster, type Cluster } from './cluster.ts';
import { networkUnavailable } from './netns.ts';

const JOBS = 20;
/** The job the killed worker trains: long enough to be caught mid-training, with resume points every 3 steps. */
const LONG = { n_epochs: 1, batch_size: 1 };
const LONG_STEPS = 12; // TRAIN_JSONL's examples
const SHORT = { n_epochs: 1, batch_size: 12 }; // 1 step

const skip = networkUnavailable() || (!process.env.TEST_DATABASE_URL && 'TEST_DATABASE_URL is not set (scripts/start-test-postgres.sh prints one)');

describe('two API hosts and two worker hosts, each with its own disk, sharing PostgreSQL and the bucket', { skip }, () => {
  let cluster: Cluster;

  before(async () => {
    cluster = await createCluster({
      hosts: ['api-1', 'api-2', 'worker-1', 'worker-2'],
      databaseServer: process.env.TEST_DATABASE_URL!,
      blobStore: process.env.TEST_S3_URL ? 's3' : 'fs',
      env: {
        MAX_RUNNING_JOBS_PER_ORG: String(JOBS),
        JOB_LEASE_MS: '2000',
        JOB_HEARTBEAT_MS: '200',
        JOB_POLL_MS: '200',
        CHECKPOINT_EVERY_STEPS: '3',
        FILE_SWEEP_INTERVAL_SECONDS: '0',
      },
    });
    // The first API migrates the schema; the other processes start once it is in place.
    await cluster.start('api-1', 'serve');
    await Promise.all([cluster.start('api-2', 'serve'), cluster.start('worker-1', 'worker'), cluster.start('worker-2', 'worker')]);
  });
  after(() => cluster?.close());

  it('twenty jobs through both APIs, a worker killed mid-training: each succeeds exactly once, nothing lost', async () => {
    const apis = [cluster.client('api-1'), cluster.client('api-2')];
    const other = (i: number) => apis[(i + 1) % 2];
    // Files uploaded through one API train jobs created through the other.
    const trainingFiles = await Promise.all(apis.map(async (api) => (await api.files.create({ file: new File([TRAIN_JSONL], 'train.jsonl'), purpose: 'fine-tune' })).id));
    const jobs = [];
    for (let i = 0; i < JOBS; i++) {
      jobs.push(await createJob(apis[i % 2], { training: trainingFiles[(i + 1) % 2] }, i === 0 ? LONG : SHORT, { suffix: `job-${i}` }));
    }
    const long = jobs[0];

    const db = new pg.Client({ connectionString: cluster.databaseUrl, connectionTimeoutMillis: 10_000, query_timeout: 30_000 });
    await db.connect();
    try {
      // Kill the worker that trains the long job once it has a resume point and steps to go. Its
      // orphaned trainer exits by itself; once the other worker has taken the job over, the killed
      // host starts a fresh worker.
      const longJobRow = async () => (await db.query<{ worker_id: string | null; step: number | null }>(
        `SELECT worker_id, (SELECT max((data::json->>'step')::int) FROM events WHERE job_id = $1 AND type = 'metrics') AS step FROM jobs WHERE id = $1`, [long.id],
      )).rows[0];
      const running = await waitFor(longJobRow, (row) => (row.step ?? 0) >= 4, 100, 120_000);
      assert.ok(running.step! < LONG_STEPS, `the long job was still training when its worker was killed (step ${running.step})`);
      const [victim] = [...cluster.processes.entries()].find(([name, child]) => name.startsWith('worker') && running.worker_id?.includes(`-${child.pid}-`)) ?? [];
      assert.ok(victim, `a worker process owns ${running.worker_id}`);
      cluster.processes.get(victim)!.kill('SIGKILL');
      await waitFor(async () => cluster.network.pids(cluster.network.host(victim)), (pids) => pids.length === 0, 100, 60_000);
      await waitFor(longJobRow, (row) => row.worker_id !== null && row.worker_id !== running.worker_id, 100, 120_000);
      await cluster.start(victim, 'worker');

      const done = await Promise.all(jobs.map((job, i) => waitFor(() => apis[i % 2].fineTuning.jobs.retrieve(job.id), (j) => TERMINAL.includes(j.status), 200, 480_000)));
      for (const job of done) assert.equal(job.status, 'succeeded', `${job.id}: ${JSON.stringify(job.error)}`);

      // Exactly once, read through the API that did not create each job.
      const checkpointRows = (await db.query<{ job_id: string; step_number: number }>('SELECT job_id, step_number FROM checkpoints')).rows;
      for (const [i, job] of done.entries()) {
        const events = await allEvents(other(i), job.id);
        const messages = events.map((e) => e.message);
        const steps = events.filter((e) => e.type === 'metrics').map((e) => (e.data as { step: number }).step);
        const total = i === 0 ? LONG_STEPS : 1;
        assert.deepEqual(steps, Array.from({ length: total }, (_, s) => s + 1), `${job.id}: one metrics event per step`);
        assert.equal(messages.filter((m) => m === 'Fine-tuning job started').length, 1, job.id);
        assert.equal(messages.filter((m) => m === 'The job has successfully completed').length, 1, job.id);
        assert.equal(messages.filter((m) => m.startsWith('New fine-tuned model created')).length, 1, job.id);

        assert.equal(job.result_files.length, 1, job.id);
        const csv = (await (await other(i).files.content(job.result_files[0])).text()).trim().split('\n');
        assert.equal(csv.length, 1 + total, `${job.id}: a result row per step`);

        // The final checkpoint is the model itself, at the last step: one row, one stored folder.
        const listed = (await other(i).fineTuning.jobs.checkpoints.list(job.id)).data.map((c) => c.step_number);
        assert.deepEqual(listed, [total], job.id);
        assert.deepEqual(checkpointRows.filter((r) => r.job_id === job.id).map((r) => r.step_number), [total], `${job.id}: checkpoint rows`);
        // In the store: that checkpoint and the job's start record; no resume point is left.
        const folders = await cluster.storedFolders(job.id);
        assert.deepEqual(folders.filter((f) => !f.startsWith('start/')), [`checkpoints/step-${total}`], `${job.id}: stored ${folders}`);
      }
      const longMessages = (await allEvents(apis[1], long.id)).map((e) => e.message);
      assert.equal(longMessages.filter((m) => m.includes('stopped responding')).length, 1, 'the killed worker\'s job was noticed once');
      assert.equal(longMessages.filter((m) => m.startsWith('Training continues from its last resume point')).length, 1, 'and resumed once');

      // Either API's /metrics: twenty jobs succeeded, none waits, and the workers are idle.
      for (const name of ['api-1', 'api-2']) {
        const res = await fetch(`${cluster.origin(name)}/metrics`, { headers: { authorization: `Bearer ${ADMIN_API_KEY}` }, signal: AbortSignal.timeout(30_000) });
        const metrics = await res.text();
        assert.match(metrics, new RegExp(`^tuneforge_jobs\\{status="succeeded"\\} ${JOBS}$`, 'm'));
        assert.match(metrics, /^tuneforge_jobs\{status="queued"\} 0$/m);
        const workers = metrics.split('\n').filter((line) => line.startsWith('tuneforge_worker_running_jobs{'));
        assert.ok(workers.length >= 2 && workers.every((line) => line.endsWith(' 0')), workers.join('\n'));
      }

      // Nothing lost or repeated: both APIs list the 2 datasets and 20 result files the bucket holds, and every model once.
      const models = done.map((job) => job.fine_tuned_model!);
      const stored = (await cluster.blobs.list('files')).map((key) => key.slice('files/'.length)).sort();
      assert.deepEqual(stored, [...trainingFiles, ...done.map((job) => job.result_files[0])].sort());
      for (const api of apis) {
        const files = [];
        for await (const file of api.files.list({ limit: 100 })) files.push(file);
        assert.deepEqual(files.map((f) => f.id).sort(), stored);
        const listedModels = (await api.models.list()).data.map((m) => m.id).filter((id) => id.startsWith('ft:'));
        assert.deepEqual(listedModels.sort(), [...models].sort());
      }

      // The model that two worker hosts trained answers through the API that did not create it.
      const chat = await apis[1].chat.completions.create({ model: done[0].fine_tuned_model!, messages: [{ role: 'user', content: 'Ahoy?' }], max_tokens: 8, seed: 1 });
      assert.equal(chat.model, done[0].fine_tuned_model);
      assert.ok(chat.usage!.completion_tokens > 0);
    } finally {
      await db.end();
    }
  });
});
