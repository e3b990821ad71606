// Every op's backward rule against central finite differences in float64, through ONNX Runtime.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as op from '../../../src/engine/graph/ops.ts';
import { gradCheck } from './gradcheck.ts';

const pos = (n: number, seed = 3) => Float64Array.from({ length: n }, (_, i) => 0.5 + ((i * 7 + seed) % 11) / 10);

test('add/sub/mul/div with broadcasting', async () => {
  const s = [{ name: 'a', shape: [2, 3, 4] }, { name: 'b', shape: [3, 1] }];
  await gradCheck(s, (a, b) => op.add(a, b));
  await gradCheck(s, (a, b) => op.sub(a, b));
  await gradCheck(s, (a, b) => op.mul(a, b));
  await gradCheck([{ name: 'a', shape: [2, 3] }, { name: 'b', shape: [1, 3], data: pos(3) }], (a, b) => op.div(a, b));
  await gradCheck([{ name: 'a', shape: [4] }], (a) => op.mul(op.add(a, 2), 3));
});

test('unary: neg, exp, log, sqrt, reciprocal, sigmoid, silu', async () => {
  const s = [{ name: 'x', shape: [3, 4] }];
  const p = [{ name: 'x', shape: [3, 4], data: pos(12) }];
  await gradCheck(s, op.neg);
  await gradCheck(s, op.exp);
  await gradCheck(p, op.log);
  await gradCheck(p, op.sqrt);
  await gradCheck(p, op.reciprocal);
  await gradCheck(s, op.sigmoid);
  await gradCheck(s, op.silu);
});

test('matmul: 2-D, batched, broadcast batch axes (GQA shape), with transposes', async () => {
  await gradCheck([{ name: 'a', shape: [3, 4] }, { name: 'b', shape: [4, 5] }], op.matmul);
  await gradCheck([{ name: 'a', shape: [2, 3, 2, 4] }, { name: 'b', shape: [2, 1, 4, 3] }], op.matmul);
  await gradCheck([{ name: 'a', shape: [5, 4] }, { name: 'w', shape: [3, 4] }], (a, w) => op.matmul(a, op.T(w)));
});

test('reshape, transpose, slice, concat, expand', async () => {
  const s = [{ name: 'x', shape: [2, 3, 4] }];
  await gradCheck(s, (x) => op.reshape(x, [6, 4]));
  await gradCheck(s, (x) => op.transpose(x, [2, 0, 1]));
  await gradCheck(s, (x) => op.slice(x, -1, 1, 3));
  await gradCheck([{ name: 'a', shape: [2, 2] }, { name: 'b', shape: [2, 3] }], (a, b) => op.concat([a, b], 1));
  await gradCheck([{ name: 'x', shape: [3, 1] }], (x) => op.expand(x, [2, 3, 4]));
});

test('reductions: reduceSum, reduceMean (keepdims or not)', async () => {
  const s = [{ name: 'x', shape: [2, 3, 4] }];
  await gradCheck(s, (x) => op.reduceSum(x, [1], false));
  await gradCheck(s, (x) => op.reduceSum(x, [0, 2], true));
  await gradCheck(s, (x) => op.reduceMean(x, [-1], true));
});

test('softmax and logSoftmax', async () => {
  const s = [{ name: 'x', shape: [2, 3, 5] }];
  await gradCheck(s, op.softmax);
  await gradCheck(s, op.logSoftmax);
});

test('gather (embedding, repeated ids) and gatherElements', async () => {
  const ids = BigInt64Array.from([1n, 3n, 1n, 0n, 3n, 3n]);
  await gradCheck([{ name: 'w', shape: [4, 3] }, { name: 'ids', shape: [2, 3], dtype: 'int64', data: ids }], op.gather);
  const idx = BigInt64Array.from([2n, 0n, 4n]);
  await gradCheck([{ name: 'x', shape: [3, 5] }, { name: 'i', shape: [3, 1], dtype: 'int64', data: idx }], (x, i) => op.gatherElements(x, i, 1));
});

test('where and cast', async () => {
  const cond = Uint8Array.from([1, 0, 1, 1, 0, 0]);
  await gradCheck(
    [{ name: 'c', shape: [2, 3], dtype: 'bool', data: cond }, { name: 'a', shape: [2, 3] }, { name: 'b', shape: [1, 3] }],
    (c, a, b) => op.where(c, a, b),
  );
  // f64 → f32 → f64 loses precision, so only check that gradient flows with a loose tolerance.
  await gradCheck([{ name: 'x', shape: [3] }], (x) => op.cast(op.cast(x, 'float32'), 'float64'), { eps: 1e-3, tol: 1e-4 });
});

test('the checker itself catches a wrong gradient', async (t) => {
  // x·stopGradient(x) has true derivative 2x but autodiff sees only x: the check must fail.
  await t.test('fails', () =>
    assert.rejects(gradCheck([{ name: 'x', shape: [3] }], (x) => op.mul(x, op.stopGradient(x))), /rel err/),
  );
});

test('split (and its backward when only some parts are used)', async () => {
  await gradCheck([{ name: 'x', shape: [7, 2] }], (x) => {
    const [a, , c] = op.split(x, [2, 4, 1]);
    return op.concat([op.mul(a, 2), c], 0);
  });
});

test('split along a column axis', async () => {
  await gradCheck([{ name: 'x', shape: [2, 7] }], (x) => {
    const [a, b] = op.split(x, [3, 4], 1);
    return op.concat([op.mul(b, a.graph.scalar(3)), op.exp(a)], 1);
  });
});
