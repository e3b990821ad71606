// LoRA on the Llama graph: B = 0 reproduces the base logits exactly; LoRA gradients (with a
// dropout mask) match finite differences in f64; PEFT initialisation and naming.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Graph, type Tensor } from '../../../src/engine/graph/ir.ts';
import * as op from '../../../src/engine/graph/ops.ts';
import { CompiledGraph } from '../../../src/engine/runtime/session.ts';
import { llamaLogits } from '../../../src/engine/models/llama.ts';
import { ALL_LINEAR, initLora, loraTargets } from '../../../src/engine/models/lora.ts';
import type { ModelConfig } from '../../../src/engine/models/config.ts';
import { SeededRandom } from '../../../src/engine/data/random.ts';
import { gradCheck, rng, randn } from '../graph/gradcheck.ts';
import { randomWeights, tinyConfig } from './llama-fixtures.ts';

const cfg = tinyConfig();
const spec = { rank: 2, alpha: 4, dropout: 0, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] };
const B = 1, T = 5;
const ids = BigInt64Array.from([1, 4, 9, 16, 25].map(BigInt));
const pos = BigInt64Array.from([0, 1, 2, 3, 4].map(BigInt));
const seg = BigInt64Array.from([1, 1, 1, 1, 1].map(BigInt));

function logitsGraph(withLora: boolean) {
  const g = new Graph('float64');
  const inputs = { inputIds: g.input('ids', [B, T], 'int64'), positionIds: g.input('pos', [B, T], 'int64'), segmentIds: g.input('seg', [B, T], 'int64') };
  const ws = new Map<string, Tensor>();
  const weight = (n: string, s: number[]) => ws.get(n) ?? ws.set(n, g.input(n, s)).get(n)!;
  const targets = new Set(loraTargets(cfg, spec).map((t) => t.path));
  g.output('logits', llamaLogits(g, cfg, inputs, { weight, lora: withLora ? { ...spec, targets } : undefined }));
  return g;
}

test('LoRA with B = 0 reproduces the base model logits exactly', async () => {
  const w = Object.fromEntries(randomWeights(cfg));
  const lora = initLora(loraTargets(cfg, spec), spec, new SeededRandom(5));
  const loraFeeds = Object.fromEntries([...lora].map(([n, t]) => [n, Float64Array.from(t.data)]));
  const baseS = await CompiledGraph.compile(logitsGraph(false), { intraOpNumThreads: 1 });
  const loraS = await CompiledGraph.compile(logitsGraph(true), { intraOpNumThreads: 1 });
  const a = (await baseS.run({ ids, pos, seg, ...w })).logits as Float64Array;
  const b = (await loraS.run({ ids, pos, seg, ...w, ...loraFeeds })).logits as Float64Array;
  assert.deepEqual(b, a);
  // …and a non-zero B changes them.
  for (const [n, t] of Object.entries(loraFeeds)) if (n.includes('lora_B')) t.fill(0.05);
  const c = (await loraS.run({ ids, pos, seg, ...w, ...loraFeeds })).logits as Float64Array;
  assert.ok(c.some((x, i) => Math.abs(x - a[i]) > 1e-6));
  await baseS.release();
  await loraS.release();
});

test('PEFT init: A ~ U(±1/√in), B = 0; names are HF module paths', () => {
  const targets = loraTargets(cfg, { ...spec, targetModules: ['q_proj', 'down_proj'] });
  assert.deepEqual(targets.map((t) => t.path), [
    'model.layers.0.self_attn.q_proj', 'model.layers.0.mlp.down_proj', 'model.layers.1.self_attn.q_proj', 'model.layers.1.mlp.down_proj',
  ]);
  const t = initLora(targets, spec, new SeededRandom(1));
  const A = t.get('model.layers.0.mlp.down_proj.lora_A.weight')!;
  assert.deepEqual(A.shape, [2, 24]);
  assert.ok(A.data.every((x) => Math.abs(x) <= 1 / Math.sqrt(24)));
  assert.ok(t.get('model.layers.0.mlp.down_proj.lora_B.weight')!.data.every((x) => x === 0));
  assert.throws(() => loraTargets(cfg, { ...spec, targetModules: ['c_attn'] }), /not in this model/);
});

async function checkLoraGradients(modules: string[], dropoutOn: (path: string) => boolean, features: Partial<ModelConfig> = {}) {
  const one = tinyConfig({ numLayers: 1, ...features });
  const targets = loraTargets(one, { ...spec, targetModules: modules });
  const w = randomWeights(one, 3);
  const r = rng(9);
  const mask = Float64Array.from({ length: T * 16 }, () => (r() < 0.2 ? 0 : 1.25));
  const loraSpecs = targets.flatMap((t) => [
    { name: `${t.path}.lora_A.weight`, shape: [2, t.inFeatures] },
    { name: `${t.path}.lora_B.weight`, shape: [t.outFeatures, 2] },
  ]);
  const frozen = [...w].map(([name, data]) => ({ name, shape: [data.length], data, check: false }));
  await gradCheck(
    [
      { name: 'ids', shape: [B, T], dtype: 'int64', data: ids },
      { name: 'pos', shape: [B, T], dtype: 'int64', data: pos },
      { name: 'seg', shape: [B, T], dtype: 'int64', data: seg },
      { name: 'mask', shape: [T, 16], data: mask, check: false },
      ...frozen,
      ...loraSpecs.map((s) => ({ ...s, data: randn(s.shape[0] * s.shape[1], r, 0.3) })),
    ],
    (idsT, posT, segT, maskT, ...rest) => {
      const byName = new Map([...frozen, ...loraSpecs].map((s, i) => [s.name, rest[i]]));
      const weight = (n: string, s: number[]) => op.reshape(byName.get(n)!, s);
      return llamaLogits(idsT.graph, one, { inputIds: idsT, positionIds: posT, segmentIds: segT }, {
        weight,
        lora: { ...spec, dropout: 0.2, targets: new Set(targets.map((t) => t.path)), dropoutMask: (p) => (dropoutOn(p) ? maskT : null) },
      });
    },
    { maxProbes: 12 },
  );
}

test('LoRA A/B gradients with a dropout mask match finite differences (f64, one layer)', () =>
  checkLoraGradients(['q_proj', 'up_proj'], (p) => p.endsWith('q_proj')));

test('LoRA gradients on stacked projections (q/k/v, gate/up, no dropout) match finite differences', () =>
  checkLoraGradients(['q_proj', 'k_proj', 'v_proj', 'gate_proj', 'up_proj', 'down_proj'], () => false));

// The adapters' inputs are recomputed in the backward (loraDown): GELU-tanh's product, the norms of
// sandwich-normed layers and the fused projections' shared inputs go through it too.
test('LoRA gradients with GELU-tanh, sandwich norms (Gemma) and fused q|k|v, gate|up (Phi-3) match finite differences', async () => {
  await checkLoraGradients(ALL_LINEAR, () => false, { hiddenActivation: 'gelu_tanh', sandwichNorms: true, normAddsOne: true });
  await checkLoraGradients(['qkv_proj', 'o_proj', 'gate_up_proj', 'down_proj'], (p) => p.endsWith('qkv_proj'), { fusedProjections: true });
});
