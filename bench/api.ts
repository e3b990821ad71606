// Control-plane benchmark (`npm run bench:api`).
//
// 1. HTTP: retrieve-job and list-jobs throughput, p99 latency and the server's CPU time per request
//    under concurrent load, each against a bare Fastify route (same framework, same JSON body)
//    measured in the same run: `--rounds` alternations of reference and server, reporting the median
//    of each (on a shared machine the load of others moves both). The server runs in this process;
//    autocannon drives it from a child process, so this process's CPU time is the server's alone: on
//    a loaded machine CPU per request compares better than requests per second. Issue 15's goals are
//    checked at the end: throughput at least 0.3× the bare route's, p99 under 10 ms.
// 2. Dataset validation: MB/s and peak RSS of `validateDataset` on a generated JSONL (200 MB by
//    default), in a child process so that its peak RSS is its own, against a plain streaming read
//    of the same file (the I/O floor) measured in the same run.
//
// Flags: --connections 32 --seconds 8 --rounds 3 --jobs 200 --file-mb 200. With DATABASE_URL set, the server keeps
// its rows in that PostgreSQL database (use an empty one) instead of SQLite.
import { execFile, execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs, promisify } from 'node:util';
import Fastify from 'fastify';
import OpenAI from 'openai';
import { startServer } from '../src/api/server.ts';
import { loadConfig } from '../src/config.ts';
import { chatExample, generateChatJsonl } from '../test/support/datasets.ts';

const { values: flags } = parseArgs({
  options: {
    connections: { type: 'string', default: '32' },
    seconds: { type: 'string', default: '8' },
    rounds: { type: 'string', default: '3' },
    jobs: { type: 'string', default: '200' },
    'file-mb': { type: 'string', default: '200' },
  },
});
const connections = Number(flags.connections);
const seconds = Number(flags.seconds);
const rounds = Number(flags.rounds);
const KEY = 'bench-key';

interface Load {
  rps: number;
  p99: number;
  /** This process's CPU time per request: the server's (or the bare route's), autocannon runs apart. */
  cpuMicros: number;
}

const autocannonCli = path.join(path.dirname(createRequire(import.meta.url).resolve('autocannon')), 'autocannon.js');
const run = promisify(execFile);

async function load(url: string, headers: Record<string, string> = {}): Promise<Load> {
  const args = ['-c', String(connections), '-d', String(seconds), '-j', ...Object.entries(headers).flatMap(([k, v]) => ['-H', `${k}=${v}`]), url];
  const before = process.cpuUsage();
  const { stdout } = await run(process.execPath, [autocannonCli, ...args], { maxBuffer: 1 << 26 });
  const cpu = process.cpuUsage(before);
  const result = JSON.parse(stdout);
  if (result.non2xx > 0 || result.errors > 0) throw new Error(`${url}: ${result.non2xx} non-2xx, ${result.errors} errors`);
  return { rps: result.requests.average, p99: result.latency.p99, cpuMicros: (cpu.user + cpu.system) / result.requests.total };
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const medianLoad = (loads: Load[]): Load => ({
  rps: median(loads.map((l) => l.rps)),
  p99: median(loads.map((l) => l.p99)),
  cpuMicros: median(loads.map((l) => l.cpuMicros)),
});

/** Issue 15's goals for the request path. */
const GOAL_RATIO = 0.3;
const GOAL_P99_MS = 10;

/** A bare Fastify route answering the same JSON body: the framework's own ceiling. */
async function bareRoute(body: unknown): Promise<{ url: string; close(): Promise<void> }> {
  const app = Fastify({ logger: false });
  const json = JSON.stringify(body);
  app.get('/bare', async (_req, reply) => reply.type('application/json').send(json));
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return { url: `http://127.0.0.1:${port}/bare`, close: () => app.close() };
}

async function benchHttp(root: string) {
  const modelsDir = path.resolve('models');
  const config = loadConfig(
    { host: '127.0.0.1', port: 0, dataDir: path.join(root, 'data'), databaseUrl: process.env.DATABASE_URL || null, modelsDir },
    { API_KEYS: `${KEY}:org-bench` },
  );
  const server = await startServer(config, { logger: false });
  const client = new OpenAI({ apiKey: KEY, baseURL: `${server.url}/v1`, maxRetries: 0 });
  const baseModel = (await client.models.list()).data[0].id;

  const datasetPath = path.join(root, 'train.jsonl');
  fs.writeFileSync(datasetPath, Array.from({ length: 20 }, (_, i) => JSON.stringify(chatExample(i))).join('\n') + '\n');
  const file = await client.files.create({ file: fs.createReadStream(datasetPath), purpose: 'fine-tune' });
  const jobCount = Number(flags.jobs);
  let jobId = '';
  for (let i = 0; i < jobCount; i++) {
    const job = await client.fineTuning.jobs.create({ model: baseModel, training_file: file.id, metadata: { n: String(i) } });
    jobId = job.id;
  }

  const headers = { authorization: `Bearer ${KEY}` };
  const rows: string[] = [];
  const verdicts: string[] = [];
  for (const [name, url] of [
    ['retrieve job', `${server.url}/v1/fine_tuning/jobs/${jobId}`],
    ['list jobs (limit 20)', `${server.url}/v1/fine_tuning/jobs?limit=20`],
  ] as const) {
    const body = await (await fetch(url, { headers })).json();
    const bare = await bareRoute(body);
    const references: Load[] = [];
    const measures: Load[] = [];
    for (let round = 0; round < rounds; round++) {
      references.push(await load(bare.url));
      measures.push(await load(url, headers));
    }
    await bare.close();
    const reference = medianLoad(references);
    const measured = medianLoad(measures);
    const ratio = measured.rps / reference.rps;
    const cpuRatio = reference.cpuMicros / measured.cpuMicros;
    const figures = (l: Load) => `${l.rps.toFixed(0).padStart(7)} req/s  p99 ${String(l.p99).padStart(4)} ms  CPU ${l.cpuMicros.toFixed(0).padStart(4)} µs/req`;
    rows.push(`${name.padEnd(22)} ${figures(measured)} | bare Fastify ${figures(reference)} | ratio ${ratio.toFixed(2)} (by CPU ${cpuRatio.toFixed(2)})`);
    const met = (ok: boolean) => (ok ? 'met' : 'NOT met');
    verdicts.push(
      `${name}: throughput ratio ${ratio.toFixed(2)} ≥ ${GOAL_RATIO}: ${met(ratio >= GOAL_RATIO)}; ` +
        `p99 ${measured.p99} ms < ${GOAL_P99_MS} ms: ${met(measured.p99 < GOAL_P99_MS)} (bare route's own p99 ${reference.p99} ms)`,
    );
  }
  await server.close();
  const load1 = os.loadavg()[0];
  console.log(
    `HTTP, ${connections} connections, ${seconds} s each, median of ${rounds} rounds, ${jobCount} jobs stored (${config.databaseUrl ? 'PostgreSQL' : 'SQLite'}), load average ${load1.toFixed(1)}:`,
  );
  for (const row of rows) console.log('  ' + row);
  console.log(`Issue 15's goals (at least ${GOAL_RATIO}× the bare route's requests per second, p99 under ${GOAL_P99_MS} ms):`);
  for (const verdict of verdicts) console.log('  ' + verdict);
  if (load1 > os.cpus().length / 2) console.log(`  (load average ${load1.toFixed(1)} on ${os.cpus().length} CPUs: other work moved these figures; CPU per request moves least)`);
}

/** Runs `bench/validate-file.ts` in a child process and parses its one-line JSON answer. */
function childMeasure(mode: 'validate' | 'read', file: string): { seconds: number; maxRssMb: number; result?: string } {
  const out = execFileSync(process.execPath, ['--import', 'tsx', path.join('bench', 'validate-file.ts'), mode, file], {
    encoding: 'utf8',
  });
  return JSON.parse(out.trim().split('\n').pop()!);
}

async function benchValidation(root: string) {
  const file = path.join(root, 'big.jsonl');
  const { bytes, examples } = await generateChatJsonl(file, Number(flags['file-mb']) * 1024 * 1024);
  const mb = bytes / (1024 * 1024);
  const read = childMeasure('read', file);
  const validate = childMeasure('validate', file);
  console.log(`Dataset validation, ${mb.toFixed(0)} MB chat JSONL, ${examples} examples (result: ${validate.result}):`);
  console.log(
    `  validateDataset ${(mb / validate.seconds).toFixed(0)} MB/s, peak RSS ${validate.maxRssMb.toFixed(0)} MB` +
      ` | plain streaming read ${(mb / read.seconds).toFixed(0)} MB/s, peak RSS ${read.maxRssMb.toFixed(0)} MB` +
      ` | ratio ${(read.seconds / validate.seconds).toFixed(2)}`,
  );
}

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tuneforge-bench-api-'));
try {
  console.log(`machine: ${os.cpus().length} × ${os.cpus()[0]?.model}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`);
  await benchHttp(root);
  await benchValidation(root);
} finally {
  fs.rmSync(root, { recursive: true, force: true });
}
