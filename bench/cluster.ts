// Cluster benchmark (`npm run bench:cluster`): tuneforge's processes on hosts of their own (network
// namespaces on this machine, test/cluster/), sharing one PostgreSQL and the blob store.
//
// 1. Jobs per minute through the queue: `--jobs` one-step tiny-llama jobs queued at once, from the
//    first create to the last success, with one worker host and then with two.
// 2. API requests per second: GET /v1/fine_tuning/jobs/{id} (what clients poll) from autocannon in
//    this namespace, against one API replica and against two (autocannon's connections alternate
//    between the replicas' addresses: client-side round robin), `--rounds` alternations, medians.
// Peak RSS of each kind of process (API replica, worker, per-job training process) is sampled
// throughout. On one machine the hosts share its cores: two workers cannot be twice as fast on 2.
//
// Needs root on Linux (ip netns) and a PostgreSQL server: DATABASE_URL (or TEST_DATABASE_URL); the
// bench works in a schema of its own and drops it. With TEST_S3_URL (scripts/start-test-s3.sh) blobs
// go to that S3 server and each process has its own DATA_DIR; without it the hosts share a folder.
// Flags: --jobs 10 --connections 32 --seconds 8 --rounds 3.
import fs from 'node:fs';
import os from 'node:os';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import type OpenAI from 'openai';
import { API_KEY, createCluster, type Cluster } from '../test/cluster/cluster.ts';
import { networkUnavailable } from '../test/cluster/netns.ts';
import { TERMINAL, TRAIN_JSONL, createJob } from '../test/e2e/support.ts';
import { waitFor } from '../test/support/server.ts';

const { values: flags } = parseArgs({
  options: {
    jobs: { type: 'string', default: '10' },
    connections: { type: 'string', default: '32' },
    seconds: { type: 'string', default: '8' },
    rounds: { type: 'string', default: '3' },
  },
});
const jobCount = Number(flags.jobs);
const connections = Number(flags.connections);
const seconds = Number(flags.seconds);
const rounds = Number(flags.rounds);

const unavailable = networkUnavailable();
const databaseServer = process.env.DATABASE_URL || process.env.TEST_DATABASE_URL;
if (unavailable || !databaseServer) {
  console.error(`bench:cluster cannot run here: ${unavailable || 'set DATABASE_URL to a PostgreSQL server (scripts/start-test-postgres.sh prints one)'}`);
  process.exit(1);
}

/** The highest resident set (VmHWM) seen per kind of process, sampled from the hosts' processes. */
function peakRssSampler(cluster: Cluster) {
  const peaks = { api: 0, worker: 0, training: 0 };
  const sample = () => {
    for (const host of cluster.network.hosts) {
      for (const pid of cluster.network.pids(host)) {
        try {
          const hwm = Number(/VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024;
          const kind = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('train-process') ? 'training' : host.name.startsWith('api') ? 'api' : 'worker';
          peaks[kind] = Math.max(peaks[kind], hwm);
        } catch {
          // gone meanwhile
        }
      }
    }
  };
  const timer = setInterval(sample, 250);
  return { peaks, stop: () => (sample(), clearInterval(timer)) };
}

async function jobsPerMinute(api: OpenAI, trainingFile: string, label: string): Promise<number> {
  const started = performance.now();
  const jobs = await Promise.all(Array.from({ length: jobCount }, (_, i) => createJob(api, { training: trainingFile }, { n_epochs: 1, batch_size: 12 }, { suffix: `${label}-${i}` })));
  const done = await Promise.all(jobs.map((job) => waitFor(() => api.fineTuning.jobs.retrieve(job.id), (j) => TERMINAL.includes(j.status), 500, 900_000)));
  const failed = done.filter((job) => job.status !== 'succeeded');
  if (failed.length > 0) throw new Error(`${failed.length} job(s) did not succeed, e.g. ${failed[0].id}: ${JSON.stringify(failed[0].error)}`);
  return jobCount / ((performance.now() - started) / 60_000);
}

interface Load {
  rps: number;
  p99: number;
}

async function load(urls: string[]): Promise<Load> {
  // autocannon takes a list of URLs (connection i → urls[i % n]), though its types say one string.
  const result = await autocannon({ url: urls as unknown as string, connections, duration: seconds, headers: { authorization: `Bearer ${API_KEY}` }, workers: 1 });
  if (result.non2xx > 0 || result.errors > 0) throw new Error(`${urls.join(', ')}: ${result.non2xx} non-2xx, ${result.errors} errors`);
  return { rps: result.requests.average, p99: result.latency.p99 };
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const medianLoad = (loads: Load[]): Load => ({ rps: median(loads.map((l) => l.rps)), p99: median(loads.map((l) => l.p99)) });
const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MB`;
const stopped = (child: import('node:child_process').ChildProcess) =>
  new Promise<void>((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve() : (child.once('exit', () => resolve()), child.kill('SIGTERM'))));

const loadBefore = os.loadavg();
const cluster = await createCluster({
  hosts: ['api-1', 'api-2', 'worker-1', 'worker-2'],
  databaseServer,
  blobStore: process.env.TEST_S3_URL ? 's3' : 'fs',
  env: { MAX_RUNNING_JOBS_PER_ORG: String(jobCount), JOB_POLL_MS: '200', FILE_SWEEP_INTERVAL_SECONDS: '0' },
});
const rss = peakRssSampler(cluster);
try {
  await cluster.start('api-1', 'serve'); // migrates the schema
  await Promise.all([cluster.start('api-2', 'serve'), cluster.start('worker-1', 'worker')]);
  const api = cluster.client('api-1');
  const trainingFile = (await api.files.create({ file: new File([TRAIN_JSONL], 'train.jsonl'), purpose: 'fine-tune' })).id;

  // One job first, untimed: the first run on a host pays for cold caches (modules, the blob cache).
  const warmUp = await createJob(api, { training: trainingFile }, { n_epochs: 1, batch_size: 12 }, { suffix: 'warm-up' });
  await waitFor(() => api.fineTuning.jobs.retrieve(warmUp.id), (j) => TERMINAL.includes(j.status), 500, 900_000);
  console.log(`jobs through the queue: ${jobCount} one-step tiny-llama LoRA jobs queued at once, first create to last success`);
  const oneWorker = await jobsPerMinute(api, trainingFile, 'one');
  console.log(`  1 worker host:  ${oneWorker.toFixed(1)} jobs/min`);
  await cluster.start('worker-2', 'worker');
  await new Promise((resolve) => setTimeout(resolve, 5_000)); // its start-up's CPU is not the jobs'
  const twoWorkers = await jobsPerMinute(api, trainingFile, 'two');
  console.log(`  2 worker hosts: ${twoWorkers.toFixed(1)} jobs/min (${(twoWorkers / oneWorker).toFixed(2)}× one)`);
  // The workers idle-poll the database: stop them so that the API figures are the APIs' alone.
  await Promise.all(['worker-1', 'worker-2'].map((name) => stopped(cluster.processes.get(name)!)));

  const job = (await api.fineTuning.jobs.list({ limit: 1 })).data[0];
  const target = (name: string) => `${cluster.origin(name)}/v1/fine_tuning/jobs/${job.id}`;
  console.log(`API: GET /v1/fine_tuning/jobs/{id}, ${connections} connections, ${seconds} s, median of ${rounds} alternations`);
  const one: Load[] = [];
  const two: Load[] = [];
  for (let round = 0; round < rounds; round++) {
    one.push(await load([target('api-1')]));
    two.push(await load([target('api-1'), target('api-2')]));
  }
  const [oneReplica, twoReplicas] = [medianLoad(one), medianLoad(two)];
  console.log(`  1 replica:  ${oneReplica.rps.toFixed(0)} req/s, p99 ${oneReplica.p99} ms`);
  console.log(`  2 replicas: ${twoReplicas.rps.toFixed(0)} req/s, p99 ${twoReplicas.p99} ms (${(twoReplicas.rps / oneReplica.rps).toFixed(2)}× one)`);
} finally {
  rss.stop();
  await cluster.close();
}
console.log(`peak RSS: API replica ${mb(rss.peaks.api)}, worker ${mb(rss.peaks.worker)}, training process ${mb(rss.peaks.training)}`);
console.log(`machine: ${os.availableParallelism()} CPUs, ${mb(os.totalmem())}; load average ${loadBefore[0].toFixed(1)} before, ${os.loadavg()[0].toFixed(1)} after`);
