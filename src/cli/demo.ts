// `npm run demo`: the whole path on the embedded defaults, in one command. It starts the service
// (SQLite and files in a temporary DATA_DIR, an embedded worker, the bundled tiny model), uploads
// the pirate sample with the official `openai` SDK, fine-tunes, shows progress, and then asks the
// base model and the fine-tuned model the same held-out questions, side by side.
//
// Options: --epochs N (default 10), --keep (leave the temporary DATA_DIR in place and print it).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { loadConfig } from '../config.ts';
import { startServer, type RunningServer } from '../api/server.ts';
import { ModelCatalogue } from '../models/catalogue.ts';
import { defaultJobRunner } from './main.ts';
import { followJob } from './progress.ts';
import { bold, clock, cyan, dim, green } from './terminal.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BASE_MODEL = 'tiny-llama';
const TRAIN_FILE = path.join(ROOT, 'samples/demo-train.jsonl');
const VALID_FILE = path.join(ROOT, 'samples/demo-valid.jsonl');

function parseArgs(args: string[]) {
  let epochs = 10;
  let keep = false;
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--keep') keep = true;
    else if (args[i] === '--epochs') epochs = Number(args[++i]);
    else throw new Error(`demo: unknown option ${args[i]} (options: --epochs N, --keep)`);
  }
  if (!Number.isInteger(epochs) || epochs < 1 || epochs > 50) throw new Error('demo: --epochs must be an integer from 1 to 50');
  return { epochs, keep };
}

/** A compact loss curve: one column per bucket of steps, as block characters. */
function sparkline(values: number[], width = 60): string {
  if (values.length === 0) return '';
  const buckets: number[] = [];
  const per = Math.max(1, Math.ceil(values.length / width));
  for (let i = 0; i < values.length; i += per) {
    const chunk = values.slice(i, i + per);
    buckets.push(chunk.reduce((a, b) => a + b, 0) / chunk.length);
  }
  const lo = Math.min(...buckets);
  const hi = Math.max(...buckets);
  const blocks = '▁▂▃▄▅▆▇█';
  return buckets.map((v) => blocks[hi > lo ? Math.round(((v - lo) / (hi - lo)) * (blocks.length - 1)) : 0]).join('');
}

/** Wraps `text` to lines of at most `width` characters. */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.replace(/\s+/g, ' ').trim().split(' ')) {
    for (let w = word; w.length > 0; ) {
      const room = line ? width - line.length - 1 : width;
      if (w.length <= room) {
        line = line ? `${line} ${w}` : w;
        w = '';
      } else if (line) {
        lines.push(line);
        line = '';
      } else {
        lines.push(w.slice(0, width));
        w = w.slice(width);
      }
    }
  }
  if (line) lines.push(line);
  return lines.length ? lines : [''];
}

function sideBySide(left: string, right: string, width: number, paintRight: (s: string) => string = (s) => s): string {
  const a = wrap(left, width);
  const b = wrap(right, width);
  const rows: string[] = [];
  for (let i = 0; i < Math.max(a.length, b.length); i++) rows.push(`  ${(a[i] ?? '').padEnd(width)}  │  ${paintRight(b[i] ?? '')}`);
  return rows.join('\n');
}

/** Printable: the untrained model emits arbitrary bytes and control tokens. */
const printable = (s: string) => s.replace(/[\u0000-\u001f\u007f-\u009f\ufffd]/g, '·');

export async function runDemo(args: string[]): Promise<void> {
  const { epochs, keep } = parseArgs(args);
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tuneforge-demo-'));
  const modelsDir = path.resolve(process.env.MODELS_DIR || path.join(ROOT, 'models'));
  // The demo runs open on loopback: keys from the environment would only get in its way.
  const config = loadConfig(
    { host: '127.0.0.1', port: 0, dataDir, modelsDir },
    { ...process.env, API_KEYS: '', ADMIN_API_KEYS: '', DATA_DIR: dataDir, DATABASE_URL: '' },
  );
  console.log(bold('tuneforge demo') + dim(` — a real fine-tuning run on the bundled ${BASE_MODEL} (≈0.9 M parameters), on this CPU`));
  console.log(dim(`data in ${dataDir}`));

  let server: RunningServer | null = null;
  let jobId: string | null = null;
  let client: OpenAI | null = null;
  const onInterrupt = () => {
    console.log('\ninterrupted: cancelling the job');
    void (async () => {
      if (client && jobId) await client.fineTuning.jobs.cancel(jobId).catch(() => undefined);
      await server?.close().catch(() => undefined);
      if (!keep) fs.rmSync(dataDir, { recursive: true, force: true });
      process.exit(130);
    })();
  };
  process.once('SIGINT', onInterrupt);

  try {
    server = await startServer(config, { runJob: defaultJobRunner(config, () => {}), logger: false });
    client = new OpenAI({ apiKey: 'demo', baseURL: `${server.url}/v1`, maxRetries: 0 });
    console.log(`${green('✓')} service on ${server.url}/v1 with an embedded worker`);

    const training = await client.files.create({ file: fs.createReadStream(TRAIN_FILE), purpose: 'fine-tune' });
    const validation = await client.files.create({ file: fs.createReadStream(VALID_FILE), purpose: 'fine-tune' });
    console.log(`${green('✓')} uploaded ${path.basename(TRAIN_FILE)} → ${training.id}, ${path.basename(VALID_FILE)} → ${validation.id}`);

    let job = await client.fineTuning.jobs.create({
      model: BASE_MODEL,
      training_file: training.id,
      validation_file: validation.id,
      suffix: 'pirate',
      seed: 42,
      method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: epochs, batch_size: 2, learning_rate_multiplier: 2 } } },
    });
    jobId = job.id;
    console.log(`${green('✓')} created ${job.id} (${epochs} epochs, batch size 2, LoRA)`);

    // Progress from the job and its events, as any client of the API would follow it.
    const started = Date.now();
    const followed = await followJob(client, job.id);
    job = followed.job;
    const losses = followed.losses;
    if (job.status !== 'succeeded') {
      throw new Error(`the job ended ${job.status}${job.error ? `: ${job.error.message}` : ''}`);
    }

    const curve = [...losses.entries()].sort((a, b) => a[0] - b[0]).map(([, l]) => l);
    console.log(`${green('✓')} ${bold(job.fine_tuned_model!)} in ${clock((Date.now() - started) / 1000)}, ${job.trained_tokens} trained tokens`);
    console.log(`  training loss ${curve[0].toFixed(2)} → ${curve[curve.length - 1].toFixed(2)}  ${cyan(sparkline(curve))}`);
    const checkpoints = await client.fineTuning.jobs.checkpoints.list(job.id);
    for (const c of checkpoints.data) {
      const m = c.metrics;
      console.log(dim(`  checkpoint ${c.fine_tuned_model_checkpoint}  train loss ${m.train_loss?.toFixed(3)}  full valid loss ${m.full_valid_loss?.toFixed(3) ?? '–'}`));
    }
    const [resultFile] = job.result_files;
    if (resultFile) {
      const csv = await (await client.files.content(resultFile)).text();
      console.log(dim(`  result file ${resultFile}: ${csv.trim().split('\n').length - 1} rows of ${csv.split('\n')[0]}`));
    }

    await compare(server, job.fine_tuned_model!, modelsDir);
  } finally {
    process.removeListener('SIGINT', onInterrupt);
    await server?.close();
    if (keep) console.log(dim(`kept ${dataDir}`));
    else fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

/** The same held-out questions to the base and the fine-tuned model, greedy decoding. */
async function compare(server: RunningServer, fineTunedModel: string, modelsDir: string) {
  const { loadModelForInference, chatPrompt } = await import('../engine/index.ts');
  const catalogue = new ModelCatalogue(server.store, modelsDir);
  const files = await catalogue.open(await catalogue.resolve(fineTunedModel));
  const baseModelDir = path.join(modelsDir, BASE_MODEL);
  const base = await loadModelForInference({ baseModelDir });
  const tuned = await loadModelForInference(files.adapterDir ? { baseModelDir, adapterDir: files.adapterDir } : { baseModelDir, modelDir: files.modelDir });
  const questions = fs
    .readFileSync(VALID_FILE, 'utf8')
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line).messages as { role: string; content: string }[])
    .slice(0, 5);
  const width = Math.max(30, Math.min(60, Math.floor(((process.stdout.columns || 100) - 7) / 2)));
  console.log(`\n${bold('Held-out questions')} ${dim('(not in the training file; greedy decoding)')}`);
  console.log(`  ${bold(`base: ${BASE_MODEL}`.padEnd(width))}  │  ${bold('fine-tuned')}`);
  try {
    for (const messages of questions) {
      const prompt = messages.filter((m) => m.role !== 'assistant');
      const ask = async (model: Awaited<ReturnType<typeof loadModelForInference>>) =>
        printable((await model.generate(chatPrompt(model, prompt as never), { maxTokens: 40, temperature: 0 })).text);
      const [a, b] = [await ask(base), await ask(tuned)];
      console.log(`\n${cyan('Q:')} ${prompt[prompt.length - 1].content}`);
      console.log(sideBySide(a, b, width, green));
    }
  } finally {
    await base.release();
    await tuned.release();
    files.release();
  }
  console.log(`\n${dim('The base model was never trained: it emits noise. The fine-tuned one learned the persona from 42 examples.')}`);
}
