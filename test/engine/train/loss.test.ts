// The chunked LM head with its loss: masked weighted cross-entropy and mean token accuracy against
// a plain JS computation, and its custom backward against finite differences (f64) at several
// chunk sizes, including a token count that the chunk does not divide.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Graph } from '../../../src/engine/graph/ir.ts';
import * as op from '../../../src/engine/graph/ops.ts';
import { CompiledGraph } from '../../../src/engine/runtime/session.ts';
import { crossEntropyTerms, headChunkRows, tokenScores } from '../../../src/engine/train/loss.ts';
import { gradCheck, randn, rng } from '../graph/gradcheck.ts';
import { gradients } from '../../../src/engine/graph/autodiff.ts';
import { graphCost } from '../../../src/engine/train/memory-estimate.ts';

const N = 7, D = 3, V = 5;
const labels = BigInt64Array.from([0n, 1n, 2n, 3n, 4n, 0n, 2n]);

for (const chunkRows of [2, 3, 7, 64]) {
  test(`crossEntropyTerms in chunks of ${chunkRows}: Σ w·nll, argmax hits and counted tokens under the mask`, async () => {
    const r = rng(2);
    const hidden = Float32Array.from(randn(N * D, r, 2));
    const weight = Float32Array.from(randn(V * D, r, 2));
    const logitsAt = (i: number) => Array.from({ length: V }, (_, v) => [0, 1, 2].reduce((a, d) => a + hidden[i * D + d] * weight[v * D + d], 0));
    const weights = Float32Array.from([1, 0.5, 0, 0, -2, 0, 1]); // in chunks of 2, rows 2–3 hold no loss; RFT's can be negative
    const g = new Graph();
    const head = { hidden: g.input('h', [N, D]), weight: g.input('w', [V, D]) };
    const t = crossEntropyTerms(head, g.input('y', [N], 'int64'), g.input('lw', [N]), chunkRows);
    g.output('nll', t.weightedNll);
    g.output('correct', t.correct);
    g.output('counted', t.counted);
    const s = await CompiledGraph.compile(g, { intraOpNumThreads: 1 });
    const out = await s.run({ h: hidden, w: weight, y: labels, lw: weights });
    let nll = 0, correct = 0, counted = 0;
    for (let i = 0; i < N; i++) {
      const row = logitsAt(i);
      const max = Math.max(...row);
      const lse = max + Math.log(row.reduce((a, x) => a + Math.exp(x - max), 0));
      const label = Number(labels[i]);
      nll += weights[i] * (lse - row[label]);
      if (weights[i] > 0) {
        counted++;
        if (row.indexOf(max) === label) correct++;
      }
    }
    assert.ok(Math.abs((out.nll as Float32Array)[0] - nll) < 1e-4, `${(out.nll as Float32Array)[0]} vs ${nll}`);
    assert.equal((out.correct as Float32Array)[0], correct);
    assert.equal((out.counted as Float32Array)[0], counted);
    await s.release();
  });

  test(`tokenScores in chunks of ${chunkRows}: ∂nll/∂hidden and ∂nll/∂W = finite differences (f64)`, async () => {
    const specs = (checkWeight: boolean) => [
      { name: 'h', shape: [N, D] },
      { name: 'w', shape: [V, D], check: checkWeight },
      { name: 'y', shape: [N], dtype: 'int64' as const, data: labels },
    ];
    await gradCheck(specs(true), (h, w, y) => tokenScores({ hidden: h, weight: w }, y, undefined, chunkRows).nll);
    // A frozen head (LoRA): only the hidden states' gradient is built.
    await gradCheck(specs(false), (h, w, y) => tokenScores({ hidden: h, weight: w }, y, undefined, chunkRows).nll);
    // The head tied to an embedding that also feeds the hidden states: both gradients add up.
    await gradCheck(specs(true), (h, w, y) => tokenScores({ hidden: op.add(h, op.slice(w, 0, 0, 1)), weight: w }, y, undefined, chunkRows).nll);
    // Loss weights: the head runs on the weighted tokens only, the others score 0 with no gradient.
    const lw = { name: 'lw', shape: [N], data: Float64Array.from([1, 0.5, 0, 0, -2, 0, 1]), check: false };
    await gradCheck([...specs(true), lw], (h, w, y, weights) => tokenScores({ hidden: op.add(h, op.slice(w, 0, 0, 1)), weight: w }, y, weights, chunkRows).nll);
  });
}

test('head chunks: 512 rows at a 49,152 vocabulary, 128 at 151,936, never under 64', () => {
  assert.equal(headChunkRows(49152), 512);
  assert.equal(headChunkRows(151936), 128);
  assert.equal(headChunkRows(10_000_000), 64);
});

test("a training step's head holds one chunk's logits at a time, in ONNX Runtime's order (the paper run)", () => {
  const [rows, vocab, width, chunkRows] = [1024, 4096, 16, 64];
  const g = new Graph();
  const head = { hidden: g.input('h', [rows, width]), weight: g.input('w', [vocab, width]) };
  const t = crossEntropyTerms(head, g.input('y', [rows], 'int64'), g.input('lw', [rows]), chunkRows);
  // The loss terms are outputs as in a step, and so is the hidden states' gradient.
  g.output('nll', t.weightedNll);
  g.output('correct', t.correct);
  g.output('counted', t.counted);
  g.output('dh', gradients(t.weightedNll, [head.hidden])[0]!);
  const chunkLogits = chunkRows * vocab * 4;
  const { peakBytes } = graphCost(g);
  // A chunk's logits, log-softmax, softmax − onehot: a few [64, 4096] at once, never all 16 chunks' (16.8 MB each kind).
  assert.ok(peakBytes < 5 * chunkLogits, `peak ${peakBytes} bytes, one chunk's logits ${chunkLogits}`);
});
