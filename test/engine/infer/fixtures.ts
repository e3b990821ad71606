// Reference computations for the inference tests: the training graph's logits over a whole sequence.
import assert from 'node:assert/strict';
import { Graph, type Tensor } from '../../../src/engine/graph/ir.ts';
import { CompiledGraph } from '../../../src/engine/runtime/session.ts';
import { llamaLogits } from '../../../src/engine/models/llama.ts';
import type { ModelConfig } from '../../../src/engine/models/config.ts';

/** Logits [T, vocab] of one sequence through the training graph (the reference). */
export async function fullForward(cfg: ModelConfig, weights: Map<string, Float32Array>, ids: number[]): Promise<Float32Array> {
  const T = ids.length;
  const g = new Graph('float32');
  const inputs = {
    inputIds: g.input('input_ids', [1, T], 'int64'),
    positionIds: g.input('position_ids', [1, T], 'int64'),
    segmentIds: g.input('segment_ids', [1, T], 'int64'),
  };
  const seen = new Map<string, Tensor>();
  g.output('logits', llamaLogits(g, cfg, inputs, { weight: (name, shape) => seen.get(name) ?? seen.set(name, g.input(name, shape)).get(name)! }));
  const session = await CompiledGraph.compile(g, { intraOpNumThreads: 1 });
  const out = await session.run({
    input_ids: BigInt64Array.from(ids.map(BigInt)),
    position_ids: BigInt64Array.from(ids.map((_, i) => BigInt(i))),
    segment_ids: new BigInt64Array(T).fill(1n),
    ...Object.fromEntries(weights),
  });
  await session.release();
  return out.logits as Float32Array;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

