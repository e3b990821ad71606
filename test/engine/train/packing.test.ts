// How a supervised step's examples become micro-batches (the job's row lengths, packed rows), and
// that a packed step scores every example exactly as it would alone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { resolve } from 'node:path';
import { MAX_ROW_LENGTHS, bucketLength, chooseRowLengths, layoutStep, rowLengthFor } from '../../../src/engine/data/batching.ts';
import { SeededRandom } from '../../../src/engine/data/random.ts';
import type { TokenizedExample } from '../../../src/engine/data/chat-format.ts';
import { microBatches, TOKENS_PER_MICRO_BATCH } from '../../../src/engine/train/plan.ts';
import { StepRunner, freshOptimizerState, type LossSums } from '../../../src/engine/train/runner.ts';
import { initialTensors, modelSetup } from '../../../src/engine/train/setup.ts';
import { loadHfModel } from '../../../src/engine/io/hf-model.ts';

test('the ladder of row lengths the memory check steps down: at least the tokens, at most the context, under a third padding', () => {
  assert.deepEqual([1, 32, 33, 64, 65, 96, 97, 129, 193, 257, 385, 513, 3000].map((n) => bucketLength(n, 8192)), [32, 32, 64, 64, 96, 96, 128, 192, 256, 384, 512, 768, 3072]);
  assert.deepEqual([bucketLength(290, 300), bucketLength(300, 300)], [300, 300], 'the context caps the row');
  for (let n = 1; n <= 10_000; n++) {
    const b = bucketLength(n, 16_384);
    assert.ok(b >= n && b % 32 === 0, `${n} → ${b}`);
    if (n > 64) assert.ok((b - n) / b < 1 / 3, `${n} → ${b}: too much padding`);
  }
});

test("a job's row lengths: the fewest padded tokens plus a compile's cost per length, every step held", () => {
  const steps = [[100], [130], [131], [250], [480], [470], [90, 60, 200]];
  assert.deepEqual(chooseRowLengths(steps, 8192, 2048, 0), [128, 160, 224, 256, 480], 'free compiles: each step at its own length rounded up to 32');
  assert.deepEqual(chooseRowLengths(steps, 8192, 2048, 0, 2), [160, 480], 'free compiles, at most two lengths');
  assert.deepEqual(chooseRowLengths(steps, 8192, 2048, 1e9), [480], 'dear compiles: one length, the longest');
  assert.deepEqual(chooseRowLengths([[290, 10]], 300, 2048, 0), [300], 'never longer than the context');
  assert.equal(rowLengthFor(129, [128, 160, 480]), 160);
  assert.throws(() => rowLengthFor(481, [128, 480]), /no row length holds 481 tokens/);

  // Against every subset of the candidate lengths, on random jobs (batches of 1–3 examples, packed).
  const rng = new SeededRandom(5);
  for (let trial = 0; trial < 30; trial++) {
    const jobSteps = Array.from({ length: 1 + rng.nextInt(25) }, () => Array.from({ length: 1 + rng.nextInt(3) }, () => 1 + rng.nextInt(400)));
    const compile = rng.nextInt(1500);
    const most = trial % 2 ? 3 : MAX_ROW_LENGTHS;
    const padded = (lengths: number[]) => (seqLen: number) => {
      const l = layoutStep(lengths, seqLen, 2048);
      return l.microBatches.length * l.rows * seqLen;
    };
    const cost = (rowLengths: number[]) =>
      compile * rowLengths.length + jobSteps.reduce((sum, s) => sum + padded(s)(rowLengthFor(Math.max(...s), rowLengths)), 0);
    const candidates = [...new Set(jobSteps.map((s) => Math.ceil(Math.max(...s) / 32) * 32))].sort((a, b) => a - b);
    let best = Infinity;
    for (let mask = 0; mask < 1 << (candidates.length - 1); mask++) {
      const subset = [...candidates.slice(0, -1).filter((_, i) => mask & (1 << i)), candidates[candidates.length - 1]];
      if (subset.length <= most) best = Math.min(best, cost(subset));
    }
    const chosen = chooseRowLengths(jobSteps, 8192, 2048, compile, most);
    assert.ok(chosen.length <= most, `${chosen.length} lengths, more than ${most}`);
    assert.ok(chosen.every((n, i) => n % 32 === 0 && (i === 0 || n > chosen[i - 1])), `ascending multiples of 32: ${chosen}`);
    assert.equal(cost(chosen), best, `trial ${trial}: ${chosen} is not the cheapest`);
  }
});

test("a step's layout: one example is one row; several are packed longest first, within the token budget", () => {
  assert.deepEqual(layoutStep([320], 384, 2048), { seqLen: 384, rows: 1, microBatches: [[[0]]] });
  const lengths = [300, 100, 200, 60, 480, 30];
  assert.deepEqual(layoutStep(lengths, 512, 2048), { seqLen: 512, rows: 3, microBatches: [[[4, 5], [0, 2], [1, 3]]] });
  // Two rows of 512 per micro-batch: the three rows split evenly, the second micro-batch padded with an empty row.
  assert.deepEqual(layoutStep(lengths, 512, 1024), { seqLen: 512, rows: 2, microBatches: [[[4, 5], [0, 2]], [[1, 3], []]] });

  const rng = new SeededRandom(3);
  for (let trial = 0; trial < 50; trial++) {
    const ls = Array.from({ length: 1 + rng.nextInt(40) }, () => 1 + rng.nextInt(700));
    const { seqLen, rows, microBatches: micro } = layoutStep(ls, bucketLength(Math.max(...ls), 1024), TOKENS_PER_MICRO_BATCH);
    assert.deepEqual(micro.flat(2).sort((a, b) => a - b), ls.map((_, i) => i), 'every example once');
    assert.ok(rows * seqLen <= Math.max(seqLen, TOKENS_PER_MICRO_BATCH));
    for (const m of micro) {
      assert.equal(m.length, rows);
      for (const row of m) assert.ok(row.reduce((s, i) => s + ls[i], 0) <= seqLen);
    }
    const rowCount = micro.flat().filter((r) => r.length > 0).length;
    assert.ok(micro.length * rows - rowCount < micro.length, 'less than one empty row per micro-batch');
  }
});

test('a packed step scores each example as it would alone: the same loss sum, loss weights and accuracy', async () => {
  const dir = resolve(import.meta.dirname, '../../../models/tiny-llama');
  const model = loadHfModel(dir);
  const setup = modelSetup(model.config, null);
  const { frozen, params } = initialTensors(setup, new Map([...model.weights].map(([n, t]) => [n, t.data])), 1);
  const runner = new StepRunner(setup, { rows: 1, seqLen: 32 }, frozen, freshOptimizerState(params), undefined, { intraOpNumThreads: 1 });
  try {
    // Prompt tokens carry no weight, completions do, as the chat formatter makes them.
    const rng = new SeededRandom(11);
    const examples: TokenizedExample[] = [90, 20, 35, 60, 9, 41, 7, 52].map((length) => {
      const ids = Int32Array.from({ length }, () => 1 + rng.nextInt(model.config.vocabSize - 1));
      const weights = Float32Array.from({ length }, (_, t) => (t >= length / 3 ? 1 : 0));
      return { ids, weights, fullLength: length, truncated: false };
    });
    const packed = microBatches(examples, 512, 0);
    const rows = packed.reduce((n, b) => n + b.shape!.rows, 0);
    assert.ok(rows < examples.length, `${examples.length} examples packed into ${rows} rows`);
    const together = await runner.evaluate(packed);

    const alone: LossSums = { lossSum: 0, weightSum: 0, correct: 0, counted: 0 };
    for (const e of examples) {
      const s = await runner.evaluate(microBatches([e], 512, 0));
      for (const k of Object.keys(alone) as (keyof LossSums)[]) alone[k] += s[k];
    }
    assert.equal(together.weightSum, alone.weightSum);
    assert.equal(together.weightSum, examples.reduce((n, e) => n + e.weights.subarray(1).reduce((a, w) => a + w, 0), 0));
    assert.equal(together.counted, alone.counted);
    assert.equal(together.correct, alone.correct);
    assert.ok(Math.abs(together.lossSum - alone.lossSum) <= 1e-5 * Math.abs(alone.lossSum), `${together.lossSum} vs ${alone.lossSum}`);
  } finally {
    await runner.release();
  }
});
