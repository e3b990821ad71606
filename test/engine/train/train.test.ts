// train(spec, options) end to end on the bundled tiny model: events and checkpoints, determinism,
// resume equivalence, abort, a bf16 checkpoint's frozen weights at either width.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { train } from '../../../src/engine/train/train.ts';
import type { TrainEvent, TrainSpec } from '../../../src/engine/contract.ts';
import { loadPeftAdapter } from '../../../src/engine/io/peft.ts';
import { loadHfModel, readHfConfig, saveHfModel, storedDtypes } from '../../../src/engine/io/hf-model.ts';

const root = resolve(import.meta.dirname, '../../..');
const tmp = mkdtempSync(join(tmpdir(), 'tuneforge-train-'));
const lines = readFileSync(join(root, 'samples/demo-train.jsonl'), 'utf8').trim().split('\n');
const trainingFile = join(tmp, 'train.jsonl');
writeFileSync(trainingFile, lines.slice(0, 12).join('\n') + '\n');

const spec = (over: Partial<TrainSpec> = {}): TrainSpec => ({
  baseModelDir: join(root, 'models/tiny-llama'),
  method: 'supervised',
  trainingFile,
  validationFile: join(root, 'samples/demo-valid.jsonl'),
  hyperparameters: { n_epochs: 2, batch_size: 4, learning_rate_multiplier: 2 },
  seed: 7,
  lora: { rank: 4, alpha: 8, dropout: 0.1, targetModules: ['q_proj', 'v_proj', 'up_proj'] },
  outputDir: mkdtempSync(join(tmp, 'out-')),
  ...over,
});

async function run(s: TrainSpec, signal?: AbortSignal) {
  const events: TrainEvent[] = [];
  const result = await train(s, { signal, onEvent: (e) => void events.push(e) });
  const losses = events.flatMap((e) => (e.type === 'metrics' ? [e.metrics.train_loss] : []));
  return { result, events, losses };
}

test('LoRA: metrics every step, a PEFT checkpoint each epoch, loss goes down, same seed → same losses', async () => {
  const a = await run(spec({ hyperparameters: { n_epochs: 3, batch_size: 4, learning_rate_multiplier: 2 } }));
  assert.equal(a.result.steps, 9);
  assert.equal(a.losses.length, 9);
  const checkpoints = a.events.filter((e) => e.type === 'checkpoint');
  assert.equal(checkpoints.length, 3);
  assert.equal(a.result.finalDir, (checkpoints[2] as { dir: string }).dir);
  const adapter = loadPeftAdapter(a.result.finalDir);
  assert.equal(adapter.settings.rank, 4);
  assert.ok(adapter.tensors.has('base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight'));
  assert.ok(a.result.finalMetrics.full_valid_loss !== undefined);
  assert.ok(a.losses[8] < a.losses[0], `${a.losses}`);
  assert.ok(a.result.trainedTokens > 0);
  const b = await run(spec({ hyperparameters: { n_epochs: 3, batch_size: 4, learning_rate_multiplier: 2 } }));
  assert.deepEqual(b.losses, a.losses);
});

test('resuming from a resume point gives the same subsequent losses (LoRA with dropout, and full)', async () => {
  for (const lora of [spec().lora, null]) {
    const full = await run(spec({ lora, checkpointEverySteps: 2 }));
    const point = full.events.find((e) => e.type === 'resume_point' && e.step === 4) as { dir: string } | undefined;
    assert.ok(point, 'a resume point at step 4');
    const resumed = await run(spec({ lora, resumeFrom: point.dir }));
    assert.deepEqual(resumed.losses, full.losses.slice(4));
    if (!lora) {
      assert.ok(existsSync(join(full.result.finalDir, 'model.safetensors')));
      assert.ok(existsSync(join(full.result.finalDir, 'tokenizer.json')));
      assert.equal(readHfConfig(full.result.finalDir).config.hiddenSize, 128);
    }
  }
});

test('aborting stops training with an AbortError', async () => {
  const controller = new AbortController();
  const s = spec();
  await assert.rejects(
    train(s, { signal: controller.signal, onEvent: (e) => void (e.type === 'metrics' && controller.abort()) }),
    (err: Error) => err.name === 'AbortError',
  );
});

test("a bf16 checkpoint trains alike with its frozen weights kept at 2 bytes (no memory limit known) or widened once at load (memory to spare)", async () => {
  const tinyDir = join(root, 'models/tiny-llama');
  const dir = join(tmp, 'tiny-bf16');
  const tiny = loadHfModel(tinyDir);
  saveHfModel(dir, tiny.rawConfig, tiny.weights, 'BF16');
  for (const f of readdirSync(tinyDir)) if (!f.endsWith('.safetensors') && f !== 'config.json') copyFileSync(join(tinyDir, f), join(dir, f));
  assert.deepEqual(new Set(storedDtypes(dir).values()), new Set(['BF16']));
  // No limit known: ensureStepFits keeps what is stored; a roomy one widens the frozen weights at load.
  const kept = await run(spec({ baseModelDir: dir }));
  const widened = await run(spec({ baseModelDir: dir, memoryLimitBytes: 16e9 }));
  assert.equal(kept.losses.length, 6);
  kept.losses.forEach((l, i) => assert.ok(Math.abs(l - widened.losses[i]) <= 1e-5 * Math.abs(l), `step ${i + 1}: ${l} kept, ${widened.losses[i]} widened`));
});
