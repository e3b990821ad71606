// Reference computations for the inference tests: the training graph's logits over a whole sequence.
import assert from 'node:assert/strict';
import { Graph, type Tensor } from '../../../src/engine/graph/ir.ts';
import { CompiledGraph } from '../../../src/engine/runtime/session.ts';
import { llamaLogits, llamaInputs } from '../../../src/engine/models/llama.ts';
import type { ModelConfig } from '../../../src/engine/models/config.ts';
import { loraAName, loraBName, loraTargets } from '../../../src/engine/models/lora.ts';
import { savePeftAdapter } from '../../../src/engine/io/peft.ts';
import { SeededRandom } from '../../../src/engine/data/random.ts';
import { inferenceWeights } from '../../../src/engine/infer/decoder.ts';
import { DecoderSteps } from '../../../src/engine/infer/steps.ts';

/** Logits [T, vocab] of one sequence through the training graph (the reference). */
export async function fullForward(cfg: ModelConfig, weights: Map<string, Float32Array>, ids: number[]): Promise<Float32Array> {
  const T = ids.length;
  const g = new Graph('float32');
  const inputs = llamaInputs(g, 1, T);
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

/** Prefill of `promptLength` tokens, then one-token decode steps: each position's logits equal fullForward's within `tolerance`. */
export async function checkCachedDecoding(cfg: ModelConfig, weights: Map<string, Float32Array>, ids: number[], promptLength: number, tolerance: number) {
  const reference = await fullForward(cfg, weights, ids);
  const steps = new DecoderSteps(cfg, inferenceWeights(cfg, (name) => weights.get(name)!), { intraOpNumThreads: 1 });
  const cache = steps.newCache();
  const V = cfg.vocabSize;
  const expectAt = (position: number, logits: Float32Array) => {
    const diff = maxAbsDiff(logits, reference.subarray(position * V, (position + 1) * V));
    assert.ok(diff < tolerance, `position ${position}: max |Δlogit| ${diff}`);
  };
  expectAt(promptLength - 1, await steps.forward(cache, ids.slice(0, promptLength)));
  for (let p = promptLength; p < ids.length; p++) expectAt(p, await steps.forward(cache, [ids[p]]));
  assert.equal(cache.length, ids.length);
  await steps.release();
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** A PEFT adapter folder for `cfg` at rank 4 with random A and B from `fill`. */
export function writeAdapter(cfg: ModelConfig, dir: string, fill: (name: string, n: number) => Float32Array, seed = 5, targetModules = ['q_proj', 'v_proj', 'down_proj']) {
  const spec = { rank: 4, alpha: 8, dropout: 0, targetModules };
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  const r = new SeededRandom(seed);
  for (const m of loraTargets(cfg, spec)) {
    const a = new Float32Array(spec.rank * m.inFeatures).map(() => (r.next() * 2 - 1) * 0.3);
    tensors.set(loraAName(m.path), { shape: [spec.rank, m.inFeatures], data: a });
    tensors.set(loraBName(m.path), { shape: [m.outFeatures, spec.rank], data: fill(loraBName(m.path), m.outFeatures * spec.rank) });
  }
  savePeftAdapter(dir, { baseModelName: 'base', ...spec }, tensors);
  return { spec, tensors };
}
