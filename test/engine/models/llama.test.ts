// The Llama graph: whole-model gradient against finite differences (f64), GQA/Qwen2 bias/packing
// behaviour, and LoRA with B = 0 reproducing the base logits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Graph, type Tensor } from '../../../src/engine/graph/ir.ts';
import * as op from '../../../src/engine/graph/ops.ts';
import { gradients } from '../../../src/engine/graph/autodiff.ts';
import { CompiledGraph, type HostArray } from '../../../src/engine/runtime/session.ts';
import { llamaHidden, llamaLogits, llamaWeightShapes, llamaInputs } from '../../../src/engine/models/llama.ts';
import { crossEntropyTerms } from '../../../src/engine/train/loss.ts';
import type { ModelConfig } from '../../../src/engine/models/config.ts';
import { rng } from '../graph/gradcheck.ts';
import { randomWeights, tinyConfig } from './llama-fixtures.ts';

const B = 2, T = 6;
const ids = BigInt64Array.from([3, 5, 7, 9, 11, 13, 4, 6, 8, 10, 12, 14].map(BigInt));
const labels = BigInt64Array.from([5, 7, 9, 11, 13, 0, 6, 8, 10, 12, 14, 0].map(BigInt));
const lossWeights = Float64Array.from([1, 1, 1, 1, 1, 0, 1, 0.5, 1, 1, 1, 0]);
// Row 0 holds one example; row 1 packs two (positions restart, segments differ).
const positions = BigInt64Array.from([0, 1, 2, 3, 4, 5, 0, 1, 2, 0, 1, 2].map(BigInt));
const segments = BigInt64Array.from([1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2].map(BigInt));

function build(cfg: ModelConfig, withLoss: boolean) {
  const g = new Graph('float64');
  const inputs = llamaInputs(g, B, T);
  const weights = new Map<string, Tensor>();
  const weight = (name: string, shape: number[]) => weights.get(name) ?? weights.set(name, g.input(name, shape)).get(name)!;
  if (!withLoss) {
    g.output('logits', llamaLogits(g, cfg, inputs, { weight }));
    return { g, weights };
  }
  // The chunked head, in chunks that do not divide B·T.
  const terms = crossEntropyTerms(llamaHidden(g, cfg, inputs, { weight }), g.input('labels', [B * T], 'int64'), g.input('loss_weights', [B * T]), 5);
  g.output('loss', terms.weightedNll);
  const names = [...weights.keys()];
  const grads = gradients(terms.weightedNll, names.map((n) => weights.get(n)!));
  names.forEach((n, i) => g.output(`grad:${n}`, grads[i]!));
  return { g, weights };
}

const batchFeeds = { input_ids: ids, position_ids: positions, segment_ids: segments, labels, loss_weights: lossWeights };

async function checkModelGradient(cfg: ModelConfig) {
  const { g } = build(cfg, true);
  const s = await CompiledGraph.compile(g, { intraOpNumThreads: 1 });
  const w = randomWeights(cfg);
  const feeds: Record<string, HostArray> = { ...batchFeeds, ...Object.fromEntries(w) };
  const base = await s.run(feeds);
  const r = rng(11);
  const eps = 1e-5; // ≈ ∛(f64 machine ε): balances truncation against rounding error
  for (const [name, data] of w) {
    const analytic = base[`grad:${name}`] as Float64Array;
    for (let probe = 0; probe < 3; probe++) {
      const i = Math.floor(r() * data.length);
      const keep = data[i];
      data[i] = keep + eps;
      const up = ((await s.run(feeds, ['loss'])).loss as Float64Array)[0];
      data[i] = keep - eps;
      const down = ((await s.run(feeds, ['loss'])).loss as Float64Array)[0];
      data[i] = keep;
      const numeric = (up - down) / (2 * eps);
      const err = Math.abs(numeric - analytic[i]) / Math.max(1e-3, Math.abs(numeric), Math.abs(analytic[i]));
      assert.ok(err < 1e-6, `${name}[${i}]: analytic ${analytic[i]} numeric ${numeric}`);
    }
  }
  await s.release();
}

test('whole tiny Llama (2 layers, hidden 16, GQA, tied, packed rows): gradient = finite differences (f64)', async () => {
  await checkModelGradient(tinyConfig());
});

test('untied head, Qwen2 qkv bias, Llama-3 rope scaling: gradient = finite differences (f64)', async () => {
  await checkModelGradient(
    tinyConfig({
      architecture: 'qwen2', tieWordEmbeddings: false, attentionBias: true, numKvHeads: 1,
      ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 4 },
    }),
  );
});

test('packing: a packed example gives the same logits as the example alone', async () => {
  const cfg = tinyConfig();
  const { g } = build(cfg, false);
  const s = await CompiledGraph.compile(g, { intraOpNumThreads: 1 });
  const w = Object.fromEntries(randomWeights(cfg));
  const packed = (await s.run({ ...batchFeeds, ...w })).logits as Float64Array;
  // Put row 1's second example (tokens 10,12,14) alone at the start of row 0.
  const alone = BigInt64Array.from([10, 12, 14, 1, 1, 1, 4, 6, 8, 10, 12, 14].map(BigInt));
  const pos2 = BigInt64Array.from([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2].map(BigInt));
  const seg2 = BigInt64Array.from([1, 1, 1, 2, 2, 2, 1, 1, 1, 2, 2, 2].map(BigInt));
  const single = (await s.run({ ...batchFeeds, input_ids: alone, position_ids: pos2, segment_ids: seg2, ...w })).logits as Float64Array;
  const V = cfg.vocabSize;
  for (let t = 0; t < 3; t++) {
    for (let v = 0; v < V; v++) {
      assert.ok(Math.abs(packed[(T + 3 + t) * V + v] - single[t * V + v]) < 1e-9);
    }
  }
  await s.release();
});

test('weight names match HF LlamaForCausalLM', () => {
  const names = [...llamaWeightShapes(tinyConfig({ tieWordEmbeddings: false })).keys()];
  assert.ok(names.includes('model.layers.1.self_attn.k_proj.weight'));
  assert.ok(names.includes('model.layers.0.mlp.down_proj.weight'));
  assert.ok(names.includes('lm_head.weight'));
  assert.deepEqual(llamaWeightShapes(tinyConfig()).get('model.layers.0.self_attn.k_proj.weight'), [8, 16]);
  void op;
});

test('Mistral sliding window: tokens beyond the window (through 2 layers) do not reach a position', async () => {
  const cfg = tinyConfig({ architecture: 'mistral', slidingWindow: 2 });
  const { g } = build(cfg, false);
  const s = await CompiledGraph.compile(g, { intraOpNumThreads: 1 });
  const w = Object.fromEntries(randomWeights(cfg));
  const one = { ...batchFeeds, segment_ids: new BigInt64Array(B * T).fill(1n), position_ids: BigInt64Array.from({ length: B * T }, (_, i) => BigInt(i % T)) };
  const a = (await s.run({ ...one, ...w })).logits as Float64Array;
  const changed = BigInt64Array.from(ids);
  changed[0] = 20n;
  const b = (await s.run({ ...one, input_ids: changed, ...w })).logits as Float64Array;
  const V = cfg.vocabSize;
  const differs = (t: number) => a.slice(t * V, (t + 1) * V).some((x, i) => x !== b[t * V + i]);
  // Receptive field: 2 layers × (window − 1) = 2 positions back.
  assert.deepEqual([0, 1, 2, 3, 4, 5].map(differs), [true, true, true, false, false, false]);
  await s.release();
});
