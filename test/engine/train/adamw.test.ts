// The host AdamW kernel against torch.optim.AdamW's formulas in float64, on tensors that span
// several kernel chunks and end mid-vector (lengths not multiples of 4).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { adamwStep, DEFAULT_ADAMW, type AdamWTensor } from '../../../src/engine/train/adamw.ts';
import { SeededRandom } from '../../../src/engine/data/random.ts';

function reference(p: Float64Array, m: Float64Array, v: Float64Array, g: Float32Array, coef: number, t: number, lr: number, wd: number) {
  const { beta1, beta2, eps } = DEFAULT_ADAMW;
  for (let i = 0; i < p.length; i++) {
    const d = g[i] * coef;
    p[i] *= 1 - lr * wd;
    m[i] = beta1 * m[i] + (1 - beta1) * d;
    v[i] = beta2 * v[i] + (1 - beta2) * d * d;
    p[i] -= ((lr / (1 - beta1 ** t)) * m[i]) / (Math.sqrt(v[i] / (1 - beta2 ** t)) + eps);
  }
}

test('AdamW steps with clipping and decoupled weight decay match the float64 formulas', async () => {
  const rng = new SeededRandom(1);
  const settings = { ...DEFAULT_ADAMW, weightDecay: 0.1, maxGradNorm: 0.5 };
  const lengths = [40_003, 7, 16_384];
  const tensors: AdamWTensor[] = lengths.map((n, k) => ({
    param: Float32Array.from({ length: n }, () => rng.next() - 0.5),
    m: new Float32Array(n),
    v: new Float32Array(n),
    grad: new Float32Array(n),
    decay: k !== 1,
  }));
  const refs = tensors.map((x) => ({ p: Float64Array.from(x.param), m: new Float64Array(x.param.length), v: new Float64Array(x.param.length) }));
  const lr = 1e-3;
  for (let t = 1; t <= 3; t++) {
    let normSq = 0;
    for (const x of tensors) for (let i = 0; i < x.grad.length; i++) normSq += (x.grad[i] = (rng.next() - 0.5) * 0.01) ** 2;
    const norm = await adamwStep(tensors, normSq, t, lr, settings);
    assert.ok(Math.abs(norm - Math.sqrt(normSq)) < 1e-12);
    const coef = Math.min(1, settings.maxGradNorm / (norm + 1e-6));
    assert.ok(t > 1 || coef < 1, 'the first step should exercise clipping');
    tensors.forEach((x, k) => reference(refs[k].p, refs[k].m, refs[k].v, x.grad, coef, t, lr, x.decay ? settings.weightDecay : 0));
  }
  tensors.forEach((x, k) => {
    for (let i = 0; i < x.param.length; i++) {
      assert.ok(Math.abs(x.param[i] - refs[k].p[i]) < 1e-6, `tensor ${k}[${i}]: ${x.param[i]} vs ${refs[k].p[i]}`);
      assert.ok(Math.abs(x.v[i] - refs[k].v[i]) <= 1e-5 * refs[k].v[i] + 1e-20, `v ${k}[${i}]`);
    }
  });
});
