// A real fine-tuning job through the service against the training-step bench (`npm run bench:job`).
//   npm run bench:job -- [--examples 120] [--min-tokens 100] [--max-tokens 480] [--epochs 1] [--batch-size auto]
//                        [--layers 30 --hidden 576 --inter 1536 --heads 9 --kv 3 --vocab 49152] [--dtype f32|bf16]
//                        [--ref-seq 512 --ref-batch 4] [--ref off]
// Writes a randomly initialised Llama model of that shape (default: SmolLM2-135M's), its weights
// stored in --dtype (f32; bf16 as the hub's checkpoints are), with the
// bundled tiny model's tokenizer and chat template, generates a chat dataset whose examples spread
// evenly over [min, max] tokens, and trains it as a client would: an in-process server with its
// embedded worker (the production runner: a child training process per job, TRAIN_* settings from
// the environment), the official SDK, default training options (LoRA r 8 on every projection).
// Reports effective tokens/s = the job's trained_tokens / training wall time (its "started" event to
// its last step's metrics event; whole seconds), the training process's peak RSS, and the same
// figures of `bench:train` at the same model and LoRA shape (--ref-batch × --ref-seq rows), run
// before and after the job so that the job's share of a shared machine is bracketed; the ratio is
// job / mean of the two. Goal (issue 11): ≥ 0.85.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import OpenAI from 'openai';
import { startServer } from '../src/api/server.ts';
import { loadConfig } from '../src/config.ts';
import { defaultJobRunner } from '../src/cli/main.ts';
import { readHfConfig, saveHfModel } from '../src/engine/io/hf-model.ts';
import { llamaWeightShapes } from '../src/engine/models/llama.ts';
import { ChatFormatter } from '../src/engine/data/chat-format.ts';
import { loadTokenizer } from '../src/engine/data/tokenizer.ts';
import { SeededRandom } from '../src/engine/data/random.ts';
import type { HostTensor } from '../src/engine/io/safetensors.ts';

const FLAGS = ['examples', 'min-tokens', 'max-tokens', 'epochs', 'batch-size', 'layers', 'hidden', 'inter', 'heads', 'kv', 'vocab', 'dtype', 'ref-seq', 'ref-batch', 'ref'];
const a = parseArgs({ options: Object.fromEntries(FLAGS.map((k) => [k, { type: 'string' as const }])) }).values as Record<string, string | undefined>;
const withRef = a.ref !== 'off';
const dtype = a.dtype ?? 'f32';
if (!['f32', 'bf16'].includes(dtype)) throw new Error(`--dtype must be f32 or bf16, got ${dtype}`);
const num = (k: string, d: number) => (a[k] !== undefined ? Number(a[k]) : d);
const shape = { layers: num('layers', 30), hidden: num('hidden', 576), inter: num('inter', 1536), heads: num('heads', 9), kv: num('kv', 3), vocab: num('vocab', 49152) };
const [exampleCount, minTokens, maxTokens] = [num('examples', 120), num('min-tokens', 100), num('max-tokens', 480)];
const ROOT = path.resolve(import.meta.dirname, '..');
const TINY = path.join(ROOT, 'models/tiny-llama');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'tuneforge-bench-job-'));
const GB = (bytes: number) => (bytes / 1e9).toFixed(2);

/** A Llama of `shape` with random weights (as bench:train draws them), the tiny model's tokenizer files. */
function writeModel(dir: string) {
  fs.mkdirSync(dir, { recursive: true });
  for (const f of fs.readdirSync(TINY)) if (f.startsWith('tokenizer') || f === 'special_tokens_map.json' || f === 'generation_config.json') fs.copyFileSync(path.join(TINY, f), path.join(dir, f));
  const tiny = JSON.parse(fs.readFileSync(path.join(TINY, 'config.json'), 'utf8')) as Record<string, unknown>;
  const rawConfig = {
    ...tiny,
    hidden_size: shape.hidden, intermediate_size: shape.inter, num_hidden_layers: shape.layers, num_attention_heads: shape.heads,
    num_key_value_heads: shape.kv, head_dim: shape.hidden / shape.heads, vocab_size: shape.vocab, max_position_embeddings: 8192,
    tie_word_embeddings: true,
  };
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(rawConfig));
  const rng = new SeededRandom(0);
  const weights = new Map<string, HostTensor>();
  for (const [name, s] of llamaWeightShapes(readHfConfig(dir).config)) {
    const data = new Float32Array(s.reduce((x, y) => x * y, 1));
    if (name.endsWith('norm.weight')) data.fill(1);
    else for (let i = 0; i < data.length; i++) data[i] = (rng.next() * 2 - 1) * 0.035;
    weights.set(name, { shape: s, data });
  }
  saveHfModel(dir, rawConfig, weights, dtype === 'bf16' ? 'BF16' : 'F32');
}

const WORDS = 'the sea ship wind sail captain map gold island storm harbour rope deck crew star night morning river stone bridge market bread letter garden window question answer reason number colour music story'.split(' ');

/** `count` chat examples whose tokenized lengths spread evenly over [min, max] (within a few tokens). */
function dataset(formatter: ChatFormatter, count: number, min: number, max: number): { jsonl: string; tokens: number } {
  const rng = new SeededRandom(1);
  const text = (n: number) => Array.from({ length: n }, () => WORDS[rng.nextInt(WORDS.length)]).join(' ');
  const lines: string[] = [];
  let tokens = 0;
  for (let i = 0; i < count; i++) {
    const target = Math.round(min + ((max - min) * i) / Math.max(1, count - 1));
    const question = `Tell me about the ${text(4)}.`;
    const words = text(2 * max).split(' ');
    const example = (n: number) => ({ messages: [{ role: 'system', content: 'You are a helpful assistant.' }, { role: 'user', content: question }, { role: 'assistant', content: words.slice(0, n).join(' ') }] });
    const length = (n: number) => formatter.tokenizeExample(example(n), 1e9).ids.length;
    let [lo, hi] = [1, words.length]; // the fewest words reaching the target
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (length(mid) >= target) hi = mid;
      else lo = mid + 1;
    }
    lines.push(JSON.stringify(example(lo)));
    tokens += length(lo);
  }
  // Shuffled, so that neighbouring steps differ in length as in a real file.
  return { jsonl: rng.shuffle(lines).join('\n') + '\n', tokens };
}

/** bench:train at the job's model and LoRA shape: tokens/s and peak RSS. */
function benchTrain(): { tokensPerS: number; peakGb: number } {
  const args = [
    '--import', 'tsx', path.join(ROOT, 'bench/train.ts'), '--mode', 'lora', '--rank', '8',
    ...Object.entries(shape).flatMap(([k, v]) => [`--${k}`, String(v)]),
    '--seq', String(num('ref-seq', 512)), '--batch', String(num('ref-batch', 4)), '--steps', '3', '--dtype', dtype,
  ];
  const run = spawnSync(process.execPath, args, { encoding: 'utf8', cwd: ROOT });
  const out = run.stdout + run.stderr;
  const tokensPerS = Number(/tokens_per_s=([\d.]+)/.exec(out)?.[1]);
  const peakGb = Number(/peak_rss_gb=([\d.]+)/.exec(out)?.[1]);
  if (!(tokensPerS > 0)) throw new Error(`bench:train failed:\n${out}`);
  console.log(`bench:train ${num('ref-batch', 4)} × ${num('ref-seq', 512)}: ${tokensPerS.toFixed(1)} tokens/s, peak RSS ${peakGb.toFixed(2)} GB`);
  return { tokensPerS, peakGb };
}

/** The largest peak RSS (VmHWM) seen among this process's children, polled while the job runs. */
function watchChildrenPeak() {
  let peak = 0;
  const timer = setInterval(() => {
    for (const task of fs.readdirSync(`/proc/${process.pid}/task`)) {
      let children = '';
      try { children = fs.readFileSync(`/proc/${process.pid}/task/${task}/children`, 'utf8'); } catch { continue; }
      for (const pid of children.trim().split(/\s+/).filter(Boolean)) {
        try {
          const kb = Number(/VmHWM:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
          peak = Math.max(peak, kb * 1024);
        } catch { /* gone */ }
      }
    }
  }, 500);
  return { stop: () => (clearInterval(timer), peak) };
}

async function runJob(modelsDir: string, jsonl: string) {
  const config = loadConfig({ host: '127.0.0.1', port: 0, dataDir: path.join(work, 'data'), databaseUrl: null, modelsDir }, { ...process.env, API_KEYS: 'bench-key:org-bench' });
  const server = await startServer(config, { runJob: defaultJobRunner(config, () => {}), logger: false });
  const client = new OpenAI({ apiKey: 'bench-key', baseURL: `${server.url}/v1`, maxRetries: 0 });
  try {
    const file = await client.files.create({ file: new File([jsonl], 'train.jsonl'), purpose: 'fine-tune' });
    const batchSize = a['batch-size'] === undefined || a['batch-size'] === 'auto' ? 'auto' : Number(a['batch-size']);
    let job = await client.fineTuning.jobs.create({
      model: 'bench-model', training_file: file.id, seed: 1,
      method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: num('epochs', 1), batch_size: batchSize } } },
    });
    const peak = watchChildrenPeak();
    const deadline = Date.now() + 4 * 3600_000;
    while (!['succeeded', 'failed', 'cancelled'].includes(job.status)) {
      if (Date.now() > deadline) throw new Error(`job ${job.id} still ${job.status} after 4 hours`);
      await new Promise((r) => setTimeout(r, 1000));
      job = await client.fineTuning.jobs.retrieve(job.id);
    }
    const peakBytes = peak.stop();
    if (job.status !== 'succeeded') throw new Error(`job ${job.id} ${job.status}: ${job.error?.message}`);
    const events = [];
    for await (const e of client.fineTuning.jobs.listEvents(job.id, { limit: 100 })) events.push(e);
    events.reverse();
    const started = events.find((e) => e.message === 'Fine-tuning job started')!.created_at;
    const steps = events.filter((e) => e.type === 'metrics');
    const trainingSeconds = steps[steps.length - 1].created_at - started;
    for (const e of events.filter((e) => e.type === 'message' && /micro-batches|truncated/.test(e.message))) console.log(`job: ${e.message}`);
    return { job, trainingSeconds, firstStepSeconds: steps[0].created_at - started, steps: steps.length, wholeSeconds: job.finished_at! - started, peakBytes };
  } finally {
    await server.close();
  }
}

const modelsDir = path.join(work, 'models');
writeModel(path.join(modelsDir, 'bench-model'));
const { jsonl, tokens } = dataset(new ChatFormatter(loadTokenizer(path.join(modelsDir, 'bench-model'))), exampleCount, minTokens, maxTokens);
console.log(`model: ${shape.layers} layers, hidden ${shape.hidden}, vocab ${shape.vocab}, ${dtype}; dataset: ${exampleCount} examples, ${tokens} tokens (${minTokens}–${maxTokens} each)`);

const refs = withRef ? [benchTrain()] : [];
const serviceCpu = process.cpuUsage();
const r = await runJob(modelsDir, jsonl);
const { user, system } = process.cpuUsage(serviceCpu);
if (withRef) refs.push(benchTrain());
const jobTokensPerS = r.job.trained_tokens! / r.trainingSeconds;
console.log(
  `job: ${r.job.trained_tokens} trained tokens in ${r.steps} steps of batch_size ${(r.job.hyperparameters as { batch_size?: unknown }).batch_size}, ` +
    `${r.trainingSeconds} s training (the first step done after ${r.firstStepSeconds} s: loading, compiling, its run; ${r.wholeSeconds} s to succeeded), ` +
    `peak RSS of the training process ${GB(r.peakBytes)} GB; this process (API server, worker, client) used ${((user + system) / 1e6).toFixed(1)} s of CPU meanwhile`,
);
console.log(`job_tokens_per_s=${jobTokensPerS.toFixed(1)}`);
if (refs.length) {
  const ref = refs.reduce((s, x) => s + x.tokensPerS, 0) / refs.length;
  console.log(`train_tokens_per_s=${ref.toFixed(1)} (mean of ${refs.map((x) => x.tokensPerS.toFixed(1)).join(' and ')}) ratio=${(jobTokensPerS / ref).toFixed(2)} (goal ≥ 0.85)`);
}
fs.rmSync(work, { recursive: true, force: true });
