// The step graph for rows of any length: one session, fed rows of several lengths, gives the loss
// terms and gradients of the fixed-length graph built for each length, on the plain tiny model and
// on one with a sliding window, soft caps and q/k norms; and it refuses what it cannot take.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CompiledGraph } from '../../../src/engine/runtime/session.ts';
import { anyLengthLimit, buildStepGraph, names, type StepKind, type StepShape } from '../../../src/engine/train/step.ts';
import { modelSetup, initialTensors } from '../../../src/engine/train/setup.ts';
import { toOnnx } from '../../../src/engine/graph/onnx.ts';
import type { ModelConfig } from '../../../src/engine/models/config.ts';
import { randomWeights, tinyConfig } from '../models/llama-fixtures.ts';
import { memorisationBatch } from './fixtures.ts';

const lora = { rank: 4, alpha: 8, dropout: 0, targetModules: ['q_proj', 'v_proj', 'gate_proj', 'down_proj'] };

/** One example of `length` tokens, deterministic, as the step graphs' feeds; its first third a prompt (no loss). */
function example(length: number, vocab: number) {
  const ids = Array.from({ length }, (_, t) => (t * 7 + 3) % vocab);
  const b = memorisationBatch([ids], length);
  b.lossWeights.fill(0, 0, Math.floor(length / 3));
  return { input_ids: b.inputIds, position_ids: b.positionIds, labels: b.labels, loss_weights: b.lossWeights };
}

async function compareWithFixedLength(cfg: ModelConfig, kind: StepKind, lengths: number[]) {
  const setup = { ...modelSetup(cfg, lora), packed: false };
  const { frozen, params } = initialTensors(setup, randomWeights(cfg, 7, false) as Map<string, Float32Array>, 3);
  // Non-zero B, so every LoRA tensor has a gradient.
  for (const [n, p] of params) if (n.includes('lora_B')) p.forEach((_, i) => (p[i] = Math.sin(i) * 0.1));
  const compile = async (shape: StepShape) => {
    const c = await CompiledGraph.compile(buildStepGraph(setup, shape, kind), { intraOpNumThreads: 1 });
    for (const [n, w] of frozen) c.setResident(n, w);
    return c;
  };
  const any = await compile({ rows: 1, seqLen: anyLengthLimit(cfg), packs: false, anyLength: true });
  for (const T of lengths) {
    const fixed = await compile({ rows: 1, seqLen: T, packs: false });
    const feeds = { ...example(T, cfg.vocabSize), ...Object.fromEntries(params), inv_total_weight: Float32Array.of(1 / (T - 1)) };
    const [a, f] = [await any.run(feeds), await fixed.run(feeds)];
    assert.deepEqual(Object.keys(a).sort(), Object.keys(f).sort());
    for (const name of Object.keys(f)) {
      const [x, y] = [a[name] as Float32Array, f[name] as Float32Array];
      assert.equal(x.length, y.length, name);
      const scale = Math.max(1e-6, ...y.map(Math.abs));
      const worst = x.reduce((m, v, i) => Math.max(m, Math.abs(v - y[i])), 0);
      assert.ok(worst <= 2e-5 * scale + 1e-7, `T ${T}, ${name}: off by ${worst} (largest ${scale})`);
    }
    if (kind !== 'eval') assert.ok(setup.trainable.every((n) => (a[names.grad(n)] as Float32Array).some((v) => v !== 0)), `T ${T}: a zero gradient`);
    await fixed.release();
  }
  await any.release();
}

test('one graph for any length gives each length the fixed-length graph\'s loss and gradients', () => compareWithFixedLength(tinyConfig(), 'gradient', [2, 5, 13, 32]));

test('… with a sliding window, soft-capped scores and logits and q/k norms; and for evaluation', async () => {
  const cfg = tinyConfig({ slidingWindow: 4, attentionSoftcap: 5, finalSoftcap: 3, qkNorm: true });
  await compareWithFixedLength(cfg, 'gradient', [3, 9, 17]);
  await compareWithFixedLength(cfg, 'eval', [4, 11]);
});

test('a graph for any length names its length dimension in ONNX and refuses what it cannot take', () => {
  const cfg = tinyConfig();
  const setup = modelSetup(cfg, lora);
  const graph = buildStepGraph(setup, { rows: 1, seqLen: 64, packs: false, anyLength: true }, 'gradient');
  assert.ok(graph.anyLength);
  assert.ok(Buffer.from(toOnnx(graph)).includes('T'), 'the ONNX declares a symbolic length');
  assert.throws(() => buildStepGraph(setup, { rows: 2, seqLen: 64, packs: false, anyLength: true }, 'gradient'), /one unpacked row/);
  assert.throws(() => buildStepGraph(setup, { rows: 1, seqLen: anyLengthLimit(cfg) + 1, anyLength: true }, 'gradient'), /at most/);
});
