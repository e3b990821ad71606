// Gradient checking through real ONNX Runtime, in float64: the graph's analytic gradients
// (our backward rules) against central finite differences of the same graph's loss.

import assert from 'node:assert/strict';
import { Graph, type Tensor, type Shape } from '../../../src/engine/graph/ir.ts';
import * as op from '../../../src/engine/graph/ops.ts';
import { gradients } from '../../../src/engine/graph/autodiff.ts';
import { CompiledGraph, type HostArray } from '../../../src/engine/runtime/session.ts';

/** Small deterministic PRNG for test data. */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function randn(n: number, r: () => number, scale = 1): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = (r() * 2 - 1) * scale;
  return out;
}

export interface CheckInput {
  name: string;
  shape: Shape;
  /** float64 unless given; non-float inputs are fed as-is and not checked. */
  dtype?: 'float64' | 'int64' | 'bool';
  data?: HostArray;
  /** Check the gradient of this input (default: float inputs). */
  check?: boolean;
}

/**
 * Builds `f(inputs)` in float64, reduces it to a scalar as Σ f·R for a fixed random R, and compares
 * the autodiff gradient of every checked input with central differences (relative error ≤ tol).
 */
export async function gradCheck(
  specs: CheckInput[],
  f: (...xs: Tensor[]) => Tensor,
  { seed = 1, eps = 1e-6, tol = 1e-6, maxProbes = 40 }: { seed?: number; eps?: number; tol?: number; maxProbes?: number } = {},
): Promise<void> {
  const r = rng(seed);
  const g = new Graph('float64');
  const xs = specs.map((s) => g.input(s.name, s.shape, s.dtype ?? 'float64'));
  const y = f(...xs);
  const R = g.constant('float64', y.shape, randn(y.size, r));
  const loss = op.sumAll(op.mul(y, R));
  const checked = specs.map((s, i) => ({ s, x: xs[i] })).filter(({ s }) => (s.check ?? (s.dtype ?? 'float64') === 'float64'));
  const grads = gradients(loss, checked.map((c) => c.x));
  g.output('loss', loss);
  checked.forEach((c, i) => {
    assert.ok(grads[i], `no gradient reached ${c.s.name}`);
    g.output(`grad_${c.s.name}`, grads[i]!);
  });
  const session = await CompiledGraph.compile(g, { intraOpNumThreads: 1 });
  const feeds: Record<string, HostArray> = {};
  specs.forEach((s, i) => (feeds[s.name] = s.data ?? randn(xs[i].size, r)));
  const base = await session.run(feeds);
  const lossAt = async () => ((await session.run(feeds, ['loss'])).loss as Float64Array)[0];

  for (const { s } of checked) {
    const x = feeds[s.name] as Float64Array;
    const analytic = base[`grad_${s.name}`] as Float64Array;
    const probes = x.length <= maxProbes ? [...x.keys()] : Array.from({ length: maxProbes }, () => Math.floor(r() * x.length));
    for (const i of probes) {
      const keep = x[i];
      x[i] = keep + eps;
      const up = await lossAt();
      x[i] = keep - eps;
      const down = await lossAt();
      x[i] = keep;
      const numeric = (up - down) / (2 * eps);
      const err = Math.abs(numeric - analytic[i]) / Math.max(1, Math.abs(numeric), Math.abs(analytic[i]));
      assert.ok(err <= tol, `${s.name}[${i}]: analytic ${analytic[i]} vs numeric ${numeric} (rel err ${err.toExponential(2)})`);
    }
  }
  await session.release();
}
