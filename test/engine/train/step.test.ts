// Training steps on the tiny model: AdamW/clipping against a JS reference, accumulation
// equivalence, loss going down on a memorisation set (LoRA and full), determinism.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StepRunner, freshOptimizerState, type MicroBatch } from '../../../src/engine/train/runner.ts';
import { modelSetup, initialTensors } from '../../../src/engine/train/setup.ts';
import { names } from '../../../src/engine/train/step.ts';
import { DEFAULT_ADAMW } from '../../../src/engine/train/adamw.ts';
import { CompiledGraph } from '../../../src/engine/runtime/session.ts';
import { buildStepGraph } from '../../../src/engine/train/step.ts';
import { Rng } from '../../../src/engine/train/rng.ts';
import type { LoraSpec } from '../../../src/engine/models/lora.ts';
import { randomWeights, tinyConfig } from '../models/llama-fixtures.ts';
import { memorisationBatch, SEQS } from './fixtures.ts';

const cfg = tinyConfig();
const SEQ = 8;
const lora: LoraSpec = { rank: 4, alpha: 8, dropout: 0, targetModules: ['q_proj', 'v_proj', 'gate_proj', 'down_proj'] };
const base = () => randomWeights(cfg, 7, false) as Map<string, Float32Array>;

function runner(spec: LoraSpec | null, rows: number, adamw = DEFAULT_ADAMW, seed = 3) {
  const setup = modelSetup(cfg, spec);
  const { frozen, params } = initialTensors(setup, base(), seed);
  return new StepRunner(setup, { rows, seqLen: SEQ }, frozen, freshOptimizerState(params), adamw, { intraOpNumThreads: 1 });
}

test('AdamW with weight decay and clipping matches a JS reference on the graph gradients', async () => {
  const adamw = { ...DEFAULT_ADAMW, weightDecay: 0.1, maxGradNorm: 0.05 };
  const r = runner(lora, 4, adamw);
  // Perturb B so every gradient is non-zero, then take the gradient from an accumulate graph.
  for (const [n, p] of r.state.params) if (n.includes('lora_B')) p.forEach((_, i) => (p[i] = Math.sin(i) * 0.1));
  const batch = memorisationBatch(SEQS, SEQ);
  // The reference gradients come from an unpacked graph (one input per tensor), which also checks
  // that the runner's packed flat vector routes every tensor's gradient to the right place.
  assert.equal(r.setup.packed, true);
  const acc = await CompiledGraph.compile(buildStepGraph({ ...r.setup, packed: false }, r.shape, 'accumulate'), { intraOpNumThreads: 1 });
  for (const [n, w] of base()) acc.setResident(n, w);
  const W = batch.lossWeights.reduce((a, b) => a + b, 0);
  const feeds: Record<string, Float32Array | BigInt64Array> = {
    input_ids: batch.inputIds, position_ids: batch.positionIds, segment_ids: batch.segmentIds,
    labels: batch.labels, loss_weights: batch.lossWeights, inv_total_weight: Float32Array.of(1 / W),
  };
  for (const [n, p] of r.state.params) {
    feeds[n] = p;
    feeds[names.gradIn(n)] = new Float32Array(p.length);
  }
  const grads = await acc.run(feeds);
  const before = new Map([...r.state.params].map(([n, p]) => [n, Float32Array.from(p)]));
  const lr = 0.01;
  const res = await r.step([batch], lr);

  let normSq = 0;
  for (const n of r.setup.trainable) for (const x of grads[names.grad(n)] as Float32Array) normSq += x * x;
  const norm = Math.sqrt(normSq);
  assert.ok(Math.abs(res.gradNorm - norm) / norm < 1e-4, `grad norm ${res.gradNorm} vs ${norm}`);
  assert.ok(norm > adamw.maxGradNorm, 'the test should exercise clipping');
  const coef = Math.min(1, adamw.maxGradNorm / (norm + 1e-6));
  for (const n of r.setup.trainable) {
    const g = grads[names.grad(n)] as Float32Array;
    const p0 = before.get(n)!;
    const p1 = r.state.params.get(n)!;
    for (let i = 0; i < p0.length; i++) {
      const gi = g[i] * coef;
      const m = (1 - adamw.beta1) * gi;
      const v = (1 - adamw.beta2) * gi * gi;
      const expected = p0[i] * (1 - lr * adamw.weightDecay) - (lr * (m / (1 - adamw.beta1))) / (Math.sqrt(v / (1 - adamw.beta2)) + adamw.eps);
      assert.ok(Math.abs(p1[i] - expected) < 1e-5, `${n}[${i}]: ${p1[i]} vs ${expected}`);
    }
  }
  await acc.release();
  await r.release();
});

test('gradient accumulation over micro-batches equals one big batch', async () => {
  const big = runner(lora, 4);
  const small = runner(lora, 2);
  const all = memorisationBatch(SEQS, SEQ);
  const halves: MicroBatch[] = [memorisationBatch(SEQS.slice(0, 2), SEQ), memorisationBatch(SEQS.slice(2), SEQ)];
  for (let s = 0; s < 3; s++) {
    const a = await big.step([all], 0.01);
    const b = await small.step(halves, 0.01);
    assert.ok(Math.abs(a.lossSum / a.weightSum - b.lossSum / b.weightSum) < 1e-5);
    assert.ok(Math.abs(a.gradNorm - b.gradNorm) < 1e-5 * a.gradNorm);
  }
  for (const [n, p] of big.state.params) {
    const q = small.state.params.get(n)!;
    for (let i = 0; i < p.length; i++) assert.ok(Math.abs(p[i] - q[i]) < 1e-5, n);
  }
  await big.release();
  await small.release();
});

async function losses(spec: LoraSpec | null, steps: number, lr: number, seed = 3): Promise<number[]> {
  const r = runner(spec, 4, DEFAULT_ADAMW, seed);
  const batch = memorisationBatch(SEQS, SEQ);
  const rng = new Rng(seed);
  const out: number[] = [];
  for (let s = 0; s < steps; s++) {
    const res = await r.step([batch], lr, rng);
    out.push(res.lossSum / res.weightSum);
  }
  await r.release();
  return out;
}

test('LoRA training drives the loss down on a memorisation set; same seed, same losses', async () => {
  const spec = { ...lora, dropout: 0.1 };
  const a = await losses(spec, 60, 0.02);
  assert.ok(a[a.length - 1] < 0.5 * a[0], `loss ${a[0]} → ${a[a.length - 1]}`);
  assert.deepEqual(await losses(spec, 60, 0.02), a);
  assert.notDeepEqual(await losses(spec, 60, 0.02, 4), a);
});

test('full fine-tuning drives the loss down', async () => {
  const a = await losses(null, 30, 0.01);
  assert.ok(a[a.length - 1] < 0.3 * a[0], `loss ${a[0]} → ${a[a.length - 1]}`);
});
