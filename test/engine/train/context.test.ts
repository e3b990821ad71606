// A job's context: the model's max_position_embeddings unless the job sets context_length, and no
// longer than a row the worker's memory can hold.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { makePlan, memoryContext } from '../../../src/engine/train/plan.ts';
import { readHfConfig } from '../../../src/engine/io/hf-model.ts';
import { ChatFormatter } from '../../../src/engine/data/chat-format.ts';
import { loadTokenizer } from '../../../src/engine/data/tokenizer.ts';
import type { TrainSpec } from '../../../src/engine/contract.ts';
import type { StepShape } from '../../../src/engine/train/step.ts';

test('memoryContext: the model\'s context while the longest row fits, else the longest bucket that does', () => {
  const asked: number[] = [];
  const upTo = (tokens: number) => (s: StepShape) => (asked.push(s.seqLen), s.rows * s.seqLen <= tokens);
  assert.equal(memoryContext(5000, 8192, upTo(1e9)), 8192);
  assert.deepEqual(asked, [6144]);
  asked.length = 0;
  assert.equal(memoryContext(5000, 8192, upTo(4096)), 4096);
  assert.deepEqual(asked, [6144, 4096], 'down the buckets');
  asked.length = 0;
  assert.equal(memoryContext(1500, 8192, upTo(0)), 8192, 'rows within a micro-batch are not estimated here');
  assert.deepEqual(asked, []);
  assert.equal(memoryContext(20_000, 32_768, upTo(1000)), 2048, 'nothing longer fits: the micro-batch length (the step check then says what would)');
  assert.equal(memoryContext(7000, 7000, upTo(1e9)), 7000, "the model's own context need not be a bucket");
});

test("a plan without context_length trains at the model's context, cut where memory says; with it, at the job's", (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tuneforge-context-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const tiny = resolve(import.meta.dirname, '../../../models/tiny-llama');
  const modelDir = join(dir, 'model');
  mkdirSync(modelDir);
  for (const f of readdirSync(tiny)) if (f !== 'config.json') copyFileSync(join(tiny, f), join(modelDir, f));
  writeFileSync(join(modelDir, 'config.json'), JSON.stringify({ ...JSON.parse(readFileSync(join(tiny, 'config.json'), 'utf8')), max_position_embeddings: 8192 }));
  const { config } = readHfConfig(modelDir);

  // One example between 4096 and 6144 tokens, the others short.
  const formatter = new ChatFormatter(loadTokenizer(modelDir));
  const chat = (words: number) => ({ messages: [{ role: 'user', content: 'Tell me a long story.' }, { role: 'assistant', content: Array.from({ length: words }, (_, i) => ['sea', 'ship', 'gold'][i % 3]).join(' ') }] });
  const perWord = formatter.tokenizeExample(chat(1000), 1e9).ids.length / 1000;
  const long = chat(Math.round(5000 / perWord));
  const longLength = formatter.tokenizeExample(long, 1e9).ids.length;
  assert.ok(longLength > 4096 && longLength <= 6144, `${longLength} tokens`);
  const trainingFile = join(dir, 'train.jsonl');
  writeFileSync(trainingFile, [long, ...Array.from({ length: 11 }, (_, i) => chat(10 + i))].map((e) => JSON.stringify(e)).join('\n') + '\n');
  const spec = (over: Partial<TrainSpec> = {}): TrainSpec => ({
    baseModelDir: modelDir, method: 'supervised', trainingFile, outputDir: dir, seed: 1, lora: null,
    hyperparameters: { n_epochs: 1, batch_size: 1, learning_rate_multiplier: 1 }, ...over,
  });

  const roomy = makePlan(spec(), config, () => true);
  // Its row: its length rounded up to 32, a row length of its own (the memory check asked about the ladder's 6144).
  assert.deepEqual([roomy.context, roomy.train.truncatedCount, roomy.largestShape], [8192, 0, { rows: 1, seqLen: Math.ceil(longLength / 32) * 32, packs: false }]);
  assert.equal(roomy.train.tokenCount > longLength, true);
  // The short examples, one a step, run the graph for any length, each in a row exactly its own length.
  const shortest = Math.min(...roomy.train.examples.map((e) => e.ids.length));
  const secondLongest = [...roomy.train.examples].map((e) => e.ids.length).sort((a, b) => b - a)[1];
  assert.deepEqual(roomy.shapes, [{ rows: 1, seqLen: secondLongest, packs: false, anyLength: true }, roomy.largestShape]);
  const batches = Array.from({ length: roomy.totalSteps }, (_, s) => roomy.microBatches(s)).flat();
  const unpadded = batches.filter((b) => b.shape?.anyLength);
  assert.equal(unpadded.length, 11);
  for (const b of unpadded) assert.ok(b.inputIds.length === b.shape!.seqLen && b.shape!.seqLen >= shortest && b.lossWeights.some((w) => w > 0));

  const tight = makePlan(spec(), config, (s) => s.rows * s.seqLen <= 4096);
  assert.deepEqual([tight.context, tight.train.truncatedCount, tight.largestShape], [4096, 1, { rows: 1, seqLen: 4096, packs: false }]);
  assert.equal(tight.train.tokenCount, roomy.train.tokenCount - (longLength - 4096), 'the long example cut to 4096 tokens');

  const chosen = makePlan(spec({ contextLength: 1024 }), config, () => assert.fail('a job that sets context_length is not fitted'));
  assert.deepEqual([chosen.context, chosen.train.truncatedCount, chosen.largestShape.seqLen], [1024, 1, 1024]);
  assert.throws(() => makePlan(spec({ contextLength: 10_000 }), config), /beyond the model's 8192 positions/);
});
