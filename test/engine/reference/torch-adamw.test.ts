// The host AdamW against PyTorch (issue 16, item 4): torch.nn.utils.clip_grad_norm_ then
// torch.optim.AdamW, five steps from fixed parameters with a fixed sequence of gradients (see
// scripts/torch-reference.py): clipping binds on four steps with a different coefficient each time,
// so neither it nor the bias corrections cancel once the moments carry history; weight decay
// applies to the matrices only (two param groups, as the runner sets `decay`); the learning rate
// changes every step; a seventh of the gradients are tiny, where ε dominates the denominator.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { readSafetensors } from '../../../src/engine/io/safetensors.ts';
import { adamwStep, type AdamWTensor } from '../../../src/engine/train/adamw.ts';
import { assertClose, FIXTURES, manifest, prefixed } from './torch-fixtures.ts';

// torch computed in float64, the kernel computes in float32: its parameters, moments and update
// each round at 2⁻²⁴ ≈ 6e-8 relative, over five steps (measured: worst 1.6e-7 of a tensor's largest
// value). 1e-6 is far below what a wrong bias correction, ε placement, clip coefficient or decay
// would move: each shifts the parameters by a sizeable part of a step, 1e-4 of their scale or more.
const TOL = 1e-6;

test('five AdamW steps with clipping binding match torch.optim.AdamW after clip_grad_norm_', async () => {
  const { settings, shapes, lrs, gradNorms } = manifest.adamw;
  const { tensors } = readSafetensors(join(FIXTURES, 'adamw.safetensors'));
  const params = prefixed(tensors, 'param0');
  const state = new Map<string, AdamWTensor>(
    Object.entries(shapes).map(([n, shape]) => {
      const size = params.get(n)!.length;
      return [n, { param: Float32Array.from(params.get(n)!), m: new Float32Array(size), v: new Float32Array(size), grad: new Float32Array(size), decay: shape.length >= 2 }];
    }),
  );
  assert.equal(gradNorms.filter((n) => n > settings.maxGradNorm).length, 4, 'clipping binds on four of the five steps');

  for (const [i, lr] of lrs.entries()) {
    const t = i + 1;
    let normSq = 0;
    for (const [n, g] of prefixed(tensors, `grad${t}`)) {
      state.get(n)!.grad.set(g);
      for (const x of g) normSq += x * x;
    }
    const norm = await adamwStep([...state.values()], normSq, t, lr, settings);
    assert.ok(Math.abs(norm - gradNorms[i]) <= 1e-9 * gradNorms[i], `step ${t}: norm ${norm} vs torch ${gradNorms[i]}`);
    for (const [n, expected] of prefixed(tensors, `param${t}`)) assertClose(`step ${t}: ${n}`, state.get(n)!.param, expected, TOL);
  }
  for (const [n, expected] of prefixed(tensors, 'm')) assertClose(`exp_avg ${n}`, state.get(n)!.m, expected, TOL);
  for (const [n, expected] of prefixed(tensors, 'v')) assertClose(`exp_avg_sq ${n}`, state.get(n)!.v, expected, TOL);
});
