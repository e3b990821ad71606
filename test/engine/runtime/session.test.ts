// CompiledGraph: resident inputs are fed by reference every run; per-run feeds; pruned inputs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Graph } from '../../../src/engine/graph/ir.ts';
import * as op from '../../../src/engine/graph/ops.ts';
import { CompiledGraph } from '../../../src/engine/runtime/session.ts';

test('resident inputs stay by reference; unused inputs are pruned; missing feeds are named', async () => {
  const g = new Graph();
  const w = g.input('w', [2, 2]);
  const x = g.input('x', [1, 2]);
  g.input('unused', [3]);
  g.output('y', op.matmul(x, w));
  const s = await CompiledGraph.compile(g, { intraOpNumThreads: 1 });
  assert.equal(s.wants('unused'), false);
  const weights = Float32Array.from([1, 2, 3, 4]);
  s.setResident('w', weights);
  assert.deepEqual([...(await s.run({ x: Float32Array.from([1, 1]) })).y], [4, 6]);
  weights[0] = 10; // ORT reads the same memory: no copy was taken
  assert.deepEqual([...(await s.run({ x: Float32Array.from([1, 1]) })).y], [13, 6]);
  // A view into a larger buffer is read from its own offset.
  const big = Float32Array.from([9, 9, 9, 2, 0, 9]);
  assert.deepEqual([...(await s.run({ x: big.subarray(3, 5) })).y], [20, 4]);
  await assert.rejects(s.run({}), /missing feed x/);
  await s.release();
});
