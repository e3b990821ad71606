// Masked weighted cross-entropy and mean token accuracy against a plain JS computation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Graph } from '../../../src/engine/graph/ir.ts';
import { CompiledGraph } from '../../../src/engine/runtime/session.ts';
import { crossEntropyTerms } from '../../../src/engine/train/loss.ts';
import { rng } from '../graph/gradcheck.ts';

test('crossEntropyTerms: Σ w·nll, argmax hits and counted tokens under the mask', async () => {
  const N = 6, V = 5;
  const r = rng(2);
  const logits = Float32Array.from({ length: N * V }, () => r() * 4 - 2);
  const labels = BigInt64Array.from([0n, 1n, 2n, 3n, 4n, 0n]);
  // Make rows 0 and 3 hits.
  logits[0 * V + 0] = 5;
  logits[3 * V + 3] = 5;
  const weights = Float32Array.from([1, 0.5, 0, 1, 2, 0]);
  const g = new Graph();
  const t = crossEntropyTerms(g.input('z', [N, V]), g.input('y', [N], 'int64'), g.input('w', [N]));
  g.output('nll', t.weightedNll);
  g.output('correct', t.correct);
  g.output('counted', t.counted);
  const s = await CompiledGraph.compile(g, { intraOpNumThreads: 1 });
  const out = await s.run({ z: logits, y: labels, w: weights });
  let nll = 0, correct = 0, counted = 0;
  for (let i = 0; i < N; i++) {
    const row = [...logits.slice(i * V, (i + 1) * V)];
    const max = Math.max(...row);
    const lse = max + Math.log(row.reduce((a, x) => a + Math.exp(x - max), 0));
    const label = Number(labels[i]);
    nll += weights[i] * (lse - row[label]);
    if (weights[i] > 0) {
      counted++;
      if (row.indexOf(max) === label) correct++;
    }
  }
  assert.ok(Math.abs((out.nll as Float32Array)[0] - nll) < 1e-4);
  assert.equal((out.correct as Float32Array)[0], correct);
  assert.equal((out.counted as Float32Array)[0], counted);
  assert.equal(correct, 2);
  await s.release();
});
