// The memory and time estimate: the paper run of a graph frees tensors after their last use, the
// estimate grows with every dimension that costs memory, and a step that does not fit fails with
// insufficient_memory naming the estimate, the limit and a micro-batch that would fit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Graph } from '../../../src/engine/graph/ir.ts';
import * as op from '../../../src/engine/graph/ops.ts';
import { EngineError, deserializeError, serializeError } from '../../../src/engine/errors.ts';
import { modelSetup } from '../../../src/engine/train/setup.ts';
import { ALL_LINEAR } from '../../../src/engine/models/lora.ts';
import type { ModelConfig } from '../../../src/engine/models/config.ts';
import {
  AUTO_RECOMPUTE_MARGIN, SPARE_MEMORY_SHARE, autoRecompute, checkStepMemory, ensureStepFits, estimateStep, graphCost, hasMemoryToSpare, largestFitting, ortOrder,
  recomputeLevel, type StepEstimate,
} from '../../../src/engine/train/memory-estimate.ts';
import type { RecomputePolicy, TrainSpec } from '../../../src/engine/contract.ts';
import { tinyConfig } from '../models/llama-fixtures.ts';

test('graphCost: tensors live from their node to their last use; reshapes share their source', () => {
  const g = new Graph();
  const x = g.input('x', [1000]); // the host's: not counted
  const a = op.exp(x); // 4 kB
  const b = op.reshape(op.exp(a), [10, 100]); // +4 kB (the reshape shares it); a is freed after
  const c = op.sumAll(op.mul(b, b)); // +4 kB for b⊙b while b lives, then b goes
  g.output('c', c);
  const cost = graphCost(g);
  // Peak: b (4 kB) and b⊙b (4 kB) at once, or a and exp(a): 8 kB (plus the 4-byte scalar constants' share).
  assert.ok(cost.peakBytes >= 8000 && cost.peakBytes < 8100, `${cost.peakBytes}`);
  const mm = new Graph();
  mm.output('y', op.matmul(mm.input('p', [8, 16]), op.T(mm.input('w', [32, 16]))));
  assert.equal(graphCost(mm).matmulFlops, 2 * 8 * 16 * 32);
});

test("ortOrder: ONNX Runtime's default order — the last unread output's work first, each producer before its node", () => {
  const g = new Graph();
  const x = g.input('x', [4]);
  const a = op.exp(x);
  const b = op.neg(x);
  g.output('first', op.add(a, 1));
  g.output('second', op.add(b, 1));
  const order = ortOrder(g.nodes).map((n) => g.nodes.indexOf(n));
  assert.deepEqual(order, [1, 3, 0, 2]); // neg, its +1, then exp, its +1 (a scalar constant is an initializer, not a node)
});

const lora = { rank: 4, alpha: 8, dropout: 0, targetModules: ALL_LINEAR };
const peak = (cfg: ModelConfig, rows: number, seqLen: number, withLora = true) =>
  estimateStep(modelSetup(cfg, withLora ? lora : null), { rows, seqLen }, 100).peakBytes;

test('the estimate grows with rows, row length, layers, width and vocabulary; full fine-tuning needs more than LoRA', () => {
  const cfg = tinyConfig({ maxPositionEmbeddings: 512 });
  assert.ok(peak(cfg, 2, 64) > peak(cfg, 1, 64));
  assert.ok(peak(cfg, 1, 128) > peak(cfg, 1, 64));
  assert.ok(peak(tinyConfig({ numLayers: 4 }), 1, 64) > peak(cfg, 1, 64));
  assert.ok(peak(tinyConfig({ hiddenSize: 32, headDim: 8 }), 1, 64) > peak(cfg, 1, 64));
  assert.ok(peak(tinyConfig({ vocabSize: 4096 }), 1, 64) > peak(cfg, 1, 64));
  assert.ok(peak(cfg, 1, 64, false) > peak(cfg, 1, 64, true));
  const e = estimateStep(modelSetup(cfg, lora), { rows: 2, seqLen: 64 }, 100);
  const faster = estimateStep(modelSetup(cfg, lora), { rows: 2, seqLen: 64 }, 200);
  assert.ok(e.stepSeconds > 0 && Math.abs(faster.stepSeconds * 2 - e.stepSeconds) < 1e-12);
});

test('largestFitting: fewer rows first, then shorter rows, else nothing', () => {
  const tokensUnder = (n: number) => (s: { rows: number; seqLen: number }) => s.rows * s.seqLen <= n;
  assert.deepEqual(largestFitting(tokensUnder(1024), { rows: 4, seqLen: 512 }), { rows: 2, seqLen: 512 });
  assert.deepEqual(largestFitting(tokensUnder(600), { rows: 1, seqLen: 2048 }), { rows: 1, seqLen: 512 });
  assert.equal(largestFitting(() => false, { rows: 4, seqLen: 512 }), null);
});

test('a step over the limit fails with insufficient_memory, naming the estimate, the limit and what would fit', () => {
  // A vocabulary large enough that rows dominate the graph's memory.
  const cfg = tinyConfig({ vocabSize: 20_000, maxPositionEmbeddings: 512 });
  const setup = modelSetup(cfg, lora);
  const one = estimateStep(setup, { rows: 1, seqLen: 256 }, 1).peakBytes;
  const four = estimateStep(setup, { rows: 4, seqLen: 256 }, 1).peakBytes;
  assert.ok(four > one);
  assert.equal(checkStepMemory(setup, { rows: 4, seqLen: 256 }, four).peakBytes, four); // fits exactly
  const limit = (one + four) / 2;
  assert.throws(
    () => checkStepMemory(setup, { rows: 4, seqLen: 256 }, limit),
    (e: unknown) =>
      e instanceof EngineError &&
      e.code === 'insufficient_memory' &&
      e.neededBytes === four &&
      e.message.includes(`estimated ${(four / 1e9).toFixed(2)} GB`) &&
      e.message.includes(`limit of ${(limit / 1e9).toFixed(2)} GB`) &&
      /\d rows? of 256 tokens per micro-batch would fit: use a smaller batch_size/.test(e.message),
  );
  assert.throws(() => checkStepMemory(setup, { rows: 1, seqLen: 32 }, 1e6), /Even one row of 32 tokens would not fit/);
  // The estimate crosses the training child's IPC with the error: the worker hands the job to a bigger worker by it.
  assert.throws(
    () => checkStepMemory(setup, { rows: 4, seqLen: 256 }, limit),
    (e: unknown) => {
      const crossed = deserializeError(structuredClone(serializeError(e)));
      return crossed instanceof EngineError && crossed.code === 'insufficient_memory' && crossed.neededBytes === four;
    },
  );
});

test('recompute auto: the lowest level that fits, in 1 + ⌈log₂ levels⌉ estimates; none when the step fits, the highest when nothing does', () => {
  // 10 GB with no layer recomputed, a third of a GB less with each of 30.
  const asked: number[] = [];
  const estimate = (layers: number) => {
    asked.push(layers);
    return { peakBytes: (10 - layers / 3) * 1e9 } as StepEstimate;
  };
  for (const [target, want] of [[10e9, 0], [9.5e9, 2], [5e9, 15], [4.3e9, 18], [0.01e9, 30], [1e9, 27]]) {
    asked.length = 0;
    const limit = target * AUTO_RECOMPUTE_MARGIN; // the estimate must fit with the margin left over
    assert.equal(autoRecompute(estimate, 30, limit), want, `estimate target ${target / 1e9} GB`);
    assert.ok(asked.length <= 6, `${asked.length} estimates`);
  }
});

test('the estimate falls level by level (MLPs first, then whole layers), and auto recomputes exactly as much as the limit needs', () => {
  const cfg = tinyConfig({ numLayers: 6, maxPositionEmbeddings: 512 });
  const setup = modelSetup(cfg, lora);
  const shape = { rows: 2, seqLen: 256 };
  const levels = Array.from({ length: 13 }, (_, level) => recomputeLevel(level, 6));
  assert.deepEqual([levels[0], levels[3], levels[6], levels[8], levels[12]], [
    { recompute: 0, recomputeMlp: 0 }, { recompute: 0, recomputeMlp: 3 }, { recompute: 0, recomputeMlp: 6 },
    { recompute: 2, recomputeMlp: 4 }, { recompute: 6, recomputeMlp: 0 },
  ]);
  const peaks = levels.map((plan) => estimateStep({ ...setup, ...plan }, shape, 1).peakBytes);
  // Never more than a rounding above the level before (where a level saves nothing at this size, ORT's order may move a few hundred bytes).
  peaks.slice(1).forEach((p, i) => assert.ok(p <= peaks[i] * 1.001, `level ${i + 1}: ${p} bytes, above ${peaks[i]} at level ${i}`));
  assert.ok(peaks[1] < peaks[0] && peaks[7] < peaks[6] && peaks[12] < peaks[6], 'an MLP and a whole layer each save memory');
  const spec = (memoryLimitBytes: number | undefined, recompute: RecomputePolicy) => ({ memoryLimitBytes, recompute }) as TrainSpec;
  const decided = (limit: number | undefined, policy: RecomputePolicy) => {
    const d = ensureStepFits(spec(limit, policy), setup, shape);
    return { recompute: d.recompute, recomputeMlp: d.recomputeMlp };
  };
  for (const level of [1, 3, 8, 12]) {
    assert.ok(peaks[level] < peaks[level - 1], `level ${level} saves memory`);
    const limit = ((peaks[level - 1] + peaks[level]) / 2) * AUTO_RECOMPUTE_MARGIN;
    assert.deepEqual(decided(limit, 'auto'), levels[level], `limit between levels ${level - 1} and ${level}, with the margin`);
  }
  assert.deepEqual(decided(peaks[0] * AUTO_RECOMPUTE_MARGIN, 'auto'), levels[0]);
  assert.notDeepEqual(decided(peaks[0], 'auto'), levels[0], 'a step estimated right at the limit leaves no margin: something is recomputed');
  assert.deepEqual(decided(undefined, 'auto'), levels[0]);
  assert.deepEqual(decided(undefined, 'on'), levels[12]);
  assert.deepEqual(decided(peaks[0], 'off'), levels[0]);
  assert.throws(() => ensureStepFits(spec(peaks[0] - 1, 'off'), setup, shape), (e: unknown) => e instanceof EngineError && e.code === 'insufficient_memory');
});

test('hasMemoryToSpare: the estimate within its share of the limit, and nothing recomputed', () => {
  const limit = 10e9;
  const none = { recompute: 0, recomputeMlp: 0 };
  assert.equal(hasMemoryToSpare(none, SPARE_MEMORY_SHARE * limit, limit), true);
  assert.equal(hasMemoryToSpare(none, SPARE_MEMORY_SHARE * limit + 1, limit), false);
  assert.equal(hasMemoryToSpare({ recompute: 1, recomputeMlp: 0 }, 0.1 * limit, limit), false);
  assert.equal(hasMemoryToSpare({ recompute: 0, recomputeMlp: 1 }, 0.1 * limit, limit), false);
});

test("2-byte frozen weights are widened once, at load, for a step with memory to spare in f32; kept at 2 bytes when it has not, or recomputes", () => {
  const setup = { ...modelSetup(tinyConfig({ numLayers: 4 }), lora), frozenDtype: 'BF16' as const };
  const shape = { rows: 1, seqLen: 128 };
  const [narrow, wide] = [setup, { ...setup, frozenDtype: undefined }].map((s) => estimateStep(s, shape, 1));
  assert.ok(wide.frozenBytes > narrow.frozenBytes, 'f32 frozen weights take more memory');
  const chosen = (limit: number, recompute: RecomputePolicy = 'auto') => ensureStepFits({ memoryLimitBytes: limit, recompute } as TrainSpec, setup, shape);
  assert.equal(chosen(wide.peakBytes / SPARE_MEMORY_SHARE).frozenDtype, undefined, 'the f32 estimate within the share: widened at load');
  const tight = chosen((wide.peakBytes * 0.99) / SPARE_MEMORY_SHARE);
  assert.equal(tight.frozenDtype, 'BF16', 'past the share in f32: kept at 2 bytes');
  assert.deepEqual([tight.recompute, tight.recomputeMlp], [0, 0], 'and nothing recomputed for it');
  assert.equal(chosen(wide.peakBytes * 10, 'on').frozenDtype, 'BF16', 'a step that recomputes keeps them at 2 bytes');
  assert.equal(ensureStepFits({ recompute: 'auto' } as TrainSpec, setup, shape).frozenDtype, 'BF16', 'no limit known: as stored');
});

test("under LoRA a layer keeps its inputs, q, k, v, the attention output, gate and up, not the adapters' inputs (loraDown)", () => {
  const [T, D, I, H, KV, hd] = [64, 64, 512, 4, 2, 16];
  for (const dropout of [0, 0.1]) {
    const graphBytes = (layers: number) => {
      const cfg = tinyConfig({ numLayers: layers, hiddenSize: D, intermediateSize: I, numHeads: H, numKvHeads: KV, headDim: hd });
      return estimateStep(modelSetup(cfg, { ...lora, dropout }), { rows: 1, seqLen: T, packs: false }, 1).graphBytes;
    };
    const perLayer = (graphBytes(6) - graphBytes(4)) / 2 / 1.15; // the estimate's allowance for ORT over the paper run
    // Probabilities are kept at this length: 4 query blocks of 16, block i seeing 16·(i + 1) keys.
    const probabilities = [1, 2, 3, 4].reduce((s, i) => s + H * 16 * 16 * i, 0);
    const kept = 4 * (2 * T * D + T * (2 * H * hd + 2 * KV * hd) + 2 * T * I + probabilities);
    // Measured 1.20× (small [T, 1] and [T, r] tensors besides); SwiGLU's output kept as well would
    // be 1.54×, and before loraDown a layer took 1.66× (1.79× with dropout's masked copies).
    assert.ok(perLayer > kept && perLayer < 1.3 * kept, `dropout ${dropout}: ${perLayer} bytes a layer against ${kept} kept`);
  }
});
