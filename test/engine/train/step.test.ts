// Training steps on the tiny model: several AdamW/clipping steps against a float64 reference, accumulation
// equivalence, unpacked rows' graph against the packed one, loss going down on a memorisation set
// (LoRA and full), determinism.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StepRunner, freshOptimizerState, type MicroBatch } from '../../../src/engine/train/runner.ts';
import { modelSetup, initialTensors } from '../../../src/engine/train/setup.ts';
import { names } from '../../../src/engine/train/step.ts';
import { DEFAULT_ADAMW } from '../../../src/engine/train/adamw.ts';
import { CompiledGraph } from '../../../src/engine/runtime/session.ts';
import { buildStepGraph } from '../../../src/engine/train/step.ts';
import { SeededRandom } from '../../../src/engine/data/random.ts';
import type { LoraSpec } from '../../../src/engine/models/lora.ts';
import { randomWeights, tinyConfig } from '../models/llama-fixtures.ts';
import { memorisationBatch, SEQS } from './fixtures.ts';
import { microBatches } from '../../../src/engine/train/plan.ts';

const cfg = tinyConfig();
const SEQ = 8;
const lora: LoraSpec = { rank: 4, alpha: 8, dropout: 0, targetModules: ['q_proj', 'v_proj', 'gate_proj', 'down_proj'] };
const base = () => randomWeights(cfg, 7, false) as Map<string, Float32Array>;

function runner(spec: LoraSpec | null, rows: number, adamw = DEFAULT_ADAMW, seed = 3) {
  const setup = modelSetup(cfg, spec);
  const { frozen, params } = initialTensors(setup, base(), seed);
  return new StepRunner(setup, { rows, seqLen: SEQ }, frozen, freshOptimizerState(params), adamw, { intraOpNumThreads: 1 });
}

/**
 * Several runner steps against AdamW written out in float64 (torch.optim.AdamW after
 * clip_grad_norm_; torch-adamw.test.ts checks the kernel against torch itself), on gradients from
 * an unpacked accumulate graph at the runner's current weights. From the second step the moments
 * carry history, so the clip coefficient and the bias corrections no longer cancel as they do in a
 * first step (where the update is ±lr·sign(g)): this checks what the runner feeds the kernel, the
 * step counter, the norm and which tensors decay.
 */
async function checkAdamWSteps(spec: LoraSpec | null) {
  const adamw = { ...DEFAULT_ADAMW, weightDecay: 0.1, maxGradNorm: 0.05 };
  const r = runner(spec, 4, adamw);
  // LoRA: perturb B so every gradient is non-zero.
  for (const [n, p] of r.state.params) if (n.includes('lora_B')) p.forEach((_, i) => (p[i] = Math.sin(i) * 0.1));
  const batch = memorisationBatch(SEQS, SEQ);
  // The reference gradients come from an unpacked graph (one input per tensor), which also checks
  // that the runner's packed flat vector routes every tensor's gradient to the right place.
  assert.equal(!!r.setup.packed, spec !== null);
  const acc = await CompiledGraph.compile(buildStepGraph({ ...r.setup, packed: false }, r.shape, 'accumulate'), { intraOpNumThreads: 1 });
  if (spec) for (const [n, w] of base()) acc.setResident(n, w);
  const W = batch.lossWeights.reduce((a, b) => a + b, 0);
  const feeds: Record<string, Float32Array | BigInt64Array> = {
    input_ids: batch.inputIds, position_ids: batch.positionIds, segment_ids: batch.segmentIds,
    labels: batch.labels, loss_weights: batch.lossWeights, inv_total_weight: Float32Array.of(1 / W),
  };
  const zeros = () => new Map(r.setup.trainable.map((n) => [n, new Float64Array(r.state.params.get(n)!.length)]));
  const [m, v] = [zeros(), zeros()];
  const { beta1, beta2, eps } = adamw;
  const decayed = new Set<string>();
  for (const [i, lr] of [0.01, 0.004, 0.02].entries()) {
    const t = i + 1;
    for (const [n, p] of r.state.params) {
      feeds[n] = Float32Array.from(p);
      feeds[names.gradIn(n)] = new Float32Array(p.length);
    }
    const grads = await acc.run(feeds);
    const res = await r.step([batch], lr);

    let normSq = 0;
    for (const n of r.setup.trainable) for (const x of grads[names.grad(n)] as Float32Array) normSq += x * x;
    const norm = Math.sqrt(normSq);
    assert.ok(Math.abs(res.gradNorm - norm) / norm < 1e-4, `step ${t}: grad norm ${res.gradNorm} vs ${norm}`);
    assert.ok(norm > adamw.maxGradNorm, 'the test should exercise clipping');
    const coef = Math.min(1, adamw.maxGradNorm / (norm + 1e-6));
    for (const n of r.setup.trainable) {
      const g = grads[names.grad(n)] as Float32Array;
      const p0 = feeds[n] as Float32Array;
      const p1 = r.state.params.get(n)!;
      // Decoupled decay on matrices only (HF's Trainer: no biases or norms).
      const wd = r.setup.shapes.get(n)!.length >= 2 ? adamw.weightDecay : 0;
      if (wd) decayed.add(n);
      const [mn, vn] = [m.get(n)!, v.get(n)!];
      for (let k = 0; k < p0.length; k++) {
        const gk = g[k] * coef;
        mn[k] = beta1 * mn[k] + (1 - beta1) * gk;
        vn[k] = beta2 * vn[k] + (1 - beta2) * gk * gk;
        const expected = p0[k] * (1 - lr * wd) - ((lr / (1 - beta1 ** t)) * mn[k]) / (Math.sqrt(vn[k] / (1 - beta2 ** t)) + eps);
        assert.ok(Math.abs(p1[k] - expected) < 1e-5, `step ${t}: ${n}[${k}]: ${p1[k]} vs ${expected}`);
      }
    }
  }
  if (!spec) assert.ok(decayed.size < r.setup.trainable.length, 'full fine-tuning has tensors without decay (norms)');
  await acc.release();
  await r.release();
}

test('AdamW steps with clipping and weight decay on LoRA match float64 AdamW on the graph gradients', () => checkAdamWSteps(lora));

test('AdamW steps with clipping and weight decay on full fine-tuning match float64 AdamW on the graph gradients', () => checkAdamWSteps(null));

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

test('rows that do not pack: the unpacked step graph (no segment masks) takes the same steps as the packed one, and reads no segment ids', async () => {
  const [packed, unpacked] = [runner(lora, 4), runner(lora, 4)];
  const batch = memorisationBatch(SEQS, SEQ); // one example a row, padding at its end
  const scrambled = { ...batch, segmentIds: BigInt64Array.from(batch.segmentIds, (_, i) => BigInt(i)) };
  for (let s = 0; s < 3; s++) {
    const a = await packed.step([{ ...batch, shape: { rows: 4, seqLen: SEQ, packs: true } }], 0.01);
    const b = await unpacked.step([{ ...scrambled, shape: { rows: 4, seqLen: SEQ, packs: false } }], 0.01);
    assert.ok(Math.abs(a.lossSum - b.lossSum) < 1e-5 * a.lossSum && Math.abs(a.gradNorm - b.gradNorm) < 1e-5 * a.gradNorm, `step ${s}: ${JSON.stringify([a, b])}`);
  }
  for (const [n, p] of packed.state.params) {
    const q = unpacked.state.params.get(n)!;
    for (let i = 0; i < p.length; i++) assert.ok(Math.abs(p[i] - q[i]) < 1e-6, n);
  }
  await packed.release();
  await unpacked.release();
});

test('a micro-batch packs when one of its rows holds several examples', () => {
  const example = (n: number) => ({ ids: new Int32Array(n).fill(3), weights: new Float32Array(n).fill(1), fullLength: n, truncated: false });
  const packs = (lengths: number[]) => microBatches(lengths.map(example), 32, 0).map((b) => b.shape!.packs);
  assert.deepEqual(packs([30, 20]), [false]);
  assert.deepEqual(packs([30, 2, 20]), [true]);
  assert.deepEqual(packs([32]), [false]);
});

async function losses(spec: LoraSpec | null, steps: number, lr: number, seed = 3): Promise<number[]> {
  const r = runner(spec, 4, DEFAULT_ADAMW, seed);
  const batch = memorisationBatch(SEQS, SEQ);
  const rng = new SeededRandom(seed);
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
