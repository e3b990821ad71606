// Per-layer recomputation (graph/checkpoint.ts) changes what the step keeps, not what it computes:
// the same loss and gradients (f64) with none, some (the first layers, a kept one after them) and
// all of the layers recomputed — full fine-tuning and LoRA with dropout masks, GQA, packed rows, a
// sliding window — and each recomputed layer really adds its copy to the graph; the same for layers
// that recompute their MLP only.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildStepGraph, names, type ModelSetup } from '../../../src/engine/train/step.ts';
import { modelSetup } from '../../../src/engine/train/setup.ts';
import { CompiledGraph, type HostArray } from '../../../src/engine/runtime/session.ts';
import type { ModelConfig } from '../../../src/engine/models/config.ts';
import type { LoraSpec } from '../../../src/engine/models/lora.ts';
import * as op from '../../../src/engine/graph/ops.ts';
import { checkpoint } from '../../../src/engine/graph/checkpoint.ts';
import { gradCheck, randn, rng } from '../graph/gradcheck.ts';
import { randomWeights, tinyConfig } from './llama-fixtures.ts';

const rows = 2, seqLen = 6, N = rows * seqLen;
const batch: Record<string, HostArray> = {
  input_ids: BigInt64Array.from([3, 5, 7, 9, 11, 13, 4, 6, 8, 10, 12, 14].map(BigInt)),
  position_ids: BigInt64Array.from([0, 1, 2, 3, 4, 5, 0, 1, 2, 0, 1, 2].map(BigInt)),
  segment_ids: BigInt64Array.from([1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2].map(BigInt)),
  labels: BigInt64Array.from([5, 7, 9, 11, 13, 0, 6, 8, 10, 12, 14, 0].map(BigInt)),
  loss_weights: Float64Array.from([1, 1, 1, 1, 1, 0, 1, 0.5, 1, 1, 1, 0]),
  inv_total_weight: Float64Array.of(1 / 9.5),
};

async function stepOutputs(setup: ModelSetup, feeds: Record<string, HostArray>) {
  const graph = buildStepGraph(setup, { rows, seqLen }, 'gradient');
  const s = await CompiledGraph.compile(graph, { intraOpNumThreads: 1 });
  const out = await s.run(feeds);
  await s.release();
  return { out, nodes: graph.nodes.length };
}

async function sameWithAndWithout(cfg: ModelConfig, lora: LoraSpec | null) {
  const setup: ModelSetup = { ...modelSetup(cfg, lora), packed: false, float: 'float64' };
  const r = rng(3);
  const feeds: Record<string, HostArray> = { ...batch, ...Object.fromEntries(randomWeights(cfg)) };
  for (const name of setup.trainable) if (name.includes('.lora_')) feeds[name] = randn(setup.shapes.get(name)!.reduce((a, b) => a * b, 1), r, 0.3);
  for (const t of setup.lora?.targets ?? []) {
    feeds[names.dropout(t.path)] = Float64Array.from({ length: N * t.inFeatures }, () => (r() < 0.2 ? 0 : 1.25));
  }
  const off = await stepOutputs({ ...setup, recompute: 0 }, feeds);
  const same = (on: Awaited<ReturnType<typeof stepOutputs>>, what: string) => {
    for (const key of ['loss_sum', ...setup.trainable.map(names.grad)]) {
      const [a, b] = [off.out[key] as Float64Array, on.out[key] as Float64Array];
      assert.ok(a.some((x) => x !== 0), `${key} is not all zeros`);
      a.forEach((x, i) => assert.ok(Math.abs(x - b[i]) <= 1e-12 * Math.max(1, Math.abs(x)), `${key}[${i}]: ${x} without, ${b[i]} with ${what}`));
    }
  };
  let nodes = off.nodes;
  for (let layers = 1; layers <= cfg.numLayers; layers++) {
    const on = await stepOutputs({ ...setup, recompute: layers }, feeds);
    assert.ok(on.nodes > nodes, `recomputing ${layers} layers adds a copy to ${layers - 1} (${on.nodes} nodes vs ${nodes})`);
    nodes = on.nodes;
    same(on, `${layers} of ${cfg.numLayers} layers recomputed`);
  }
  // Only the MLP of the first layers, or of those after fully recomputed ones.
  let mlpNodes = off.nodes;
  for (const [layers, mlps] of [[0, 1], [0, cfg.numLayers], [1, cfg.numLayers - 1]]) {
    const on = await stepOutputs({ ...setup, recompute: layers, recomputeMlp: mlps }, feeds);
    if (layers === 0) assert.ok(on.nodes > mlpNodes, `recomputing ${mlps} MLPs adds their copies (${on.nodes} nodes vs ${mlpNodes})`);
    mlpNodes = on.nodes;
    same(on, `${layers} layers and ${mlps} more MLPs recomputed`);
  }
}

test('1, 2 or 3 of 3 layers recomputed = none (f64): full fine-tuning, GQA, packed rows, sliding window', async () => {
  await sameWithAndWithout(tinyConfig({ architecture: 'mistral', slidingWindow: 4, numLayers: 3 }), null);
});

test('1, 2 or 3 of 3 layers recomputed = none (f64): LoRA on every linear with dropout masks, Qwen2 biases, untied head', async () => {
  const lora: LoraSpec = { rank: 2, alpha: 4, dropout: 0.2, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] };
  await sameWithAndWithout(tinyConfig({ architecture: 'qwen2', attentionBias: true, tieWordEmbeddings: false, numLayers: 3 }), lora);
});

test('checkpoint: gradients of the block input and of tensors it reads = finite differences (f64)', async () => {
  // The block x ↦ (x W₁)² W₂ reads W₁ and W₂ from outside it; two checkpoints in a row.
  await gradCheck([{ name: 'x', shape: [3, 4] }, { name: 'w1', shape: [4, 5] }, { name: 'w2', shape: [5, 4] }], (x, w1, w2) => {
    const block = (h: typeof x) => op.matmul(op.mul(op.matmul(h, w1), op.matmul(h, w1)), w2);
    return checkpoint(checkpoint(x, block), block);
  });
});
