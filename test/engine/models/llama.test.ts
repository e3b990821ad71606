// The Llama graph: whole-model gradient against finite differences (f64), GQA/Qwen2 bias/packing
// behaviour, the unpacked graph's exactness, and LoRA with B = 0 reproducing the base logits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as op from '../../../src/engine/graph/ops.ts';
import { CompiledGraph } from '../../../src/engine/runtime/session.ts';
import { llamaWeightShapes } from '../../../src/engine/models/llama.ts';
import { randomWeights, tinyConfig } from './llama-fixtures.ts';
import type { AttentionTiling } from '../../../src/engine/models/attention.ts';
import type { ModelConfig } from '../../../src/engine/models/config.ts';
import { B, T, batchFeeds, build, checkModelGradient, ids, unpackedFeeds } from './model-gradcheck.ts';

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

// Rows of one example each, padding at the end: the graph without segment masks gives the same
// loss and gradients as the one with them, whatever the tiles (several query blocks, several key
// chunks each, probabilities kept or recomputed), with a sliding window and with a soft cap.
const tilings: (AttentionTiling | undefined)[] = [
  undefined,
  { queryBlock: 2, keyBlock: 2, keepProbabilities: false },
  { queryBlock: 4, keyBlock: 3, keepProbabilities: false },
  { queryBlock: 3, keyBlock: 8, keepProbabilities: true },
];
const exactnessConfigs: [string, ModelConfig][] = [
  ['Llama', tinyConfig()],
  ['Mistral, sliding window 3', tinyConfig({ architecture: 'mistral', slidingWindow: 3 })],
  ['attention soft cap 5', tinyConfig({ attentionSoftcap: 5 })],
];
for (const [name, cfg] of exactnessConfigs) {
  test(`unpacked rows (${name}): loss and gradients without segment masks = with them, over ${tilings.length} tilings`, async () => {
    const w = Object.fromEntries(randomWeights(cfg));
    for (const attentionTiling of tilings) {
      const [packed, unpacked] = await Promise.all(
        [true, false].map(async (pack) => {
          const s = await CompiledGraph.compile(build(cfg, true, { pack, attentionTiling }).g, { intraOpNumThreads: 1 });
          const out = await s.run({ ...unpackedFeeds, ...w });
          await s.release();
          return out;
        }),
      );
      const outputs = Object.keys(packed);
      assert.ok(outputs.length > 2 && outputs.includes('loss'));
      for (const o of outputs) {
        const [a, b] = [packed[o] as Float64Array, unpacked[o] as Float64Array];
        a.forEach((x, i) => assert.ok(Math.abs(x - b[i]) <= 1e-12 * Math.max(1, Math.abs(x)), `${JSON.stringify(attentionTiling)} ${o}[${i}]: ${x} vs ${b[i]}`));
      }
    }
  });
}
