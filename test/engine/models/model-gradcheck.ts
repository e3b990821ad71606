// The whole-model gradient check the architecture tests share: the loss through the chunked LM
// head, and each weight's analytic gradient against central finite differences in f64, on two
// small batches (two rows each): packed (the second row packs two examples) through the graph
// that masks by segment, and unpacked (one example a row, trailing padding) through the graph that
// masks causally only.
import assert from 'node:assert/strict';
import { Graph, type Tensor } from '../../../src/engine/graph/ir.ts';
import { gradients } from '../../../src/engine/graph/autodiff.ts';
import { CompiledGraph, type HostArray } from '../../../src/engine/runtime/session.ts';
import { llamaHidden, llamaLogits, llamaInputs } from '../../../src/engine/models/llama.ts';
import type { AttentionTiling } from '../../../src/engine/models/attention.ts';
import { crossEntropyTerms } from '../../../src/engine/train/loss.ts';
import type { ModelConfig } from '../../../src/engine/models/config.ts';
import { rng } from '../graph/gradcheck.ts';
import { randomWeights } from './llama-fixtures.ts';

export const B = 2, T = 6;
const int64 = (xs: number[]) => BigInt64Array.from(xs.map(BigInt));
export const ids = int64([3, 5, 7, 9, 11, 13, 4, 6, 8, 10, 12, 14]);
const labels = int64([5, 7, 9, 11, 13, 0, 6, 8, 10, 12, 14, 0]);
const lossWeights = Float64Array.from([1, 1, 1, 1, 1, 0, 1, 0.5, 1, 1, 1, 0]);
// Row 0 holds one example; row 1 packs two (positions restart, segments differ).
const positions = int64([0, 1, 2, 3, 4, 5, 0, 1, 2, 0, 1, 2]);
const segments = int64([1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2]);

export const batchFeeds = { input_ids: ids, position_ids: positions, segment_ids: segments, labels, loss_weights: lossWeights };
/** One example a row: row 1's is 4 tokens, then 2 of padding (no loss; segment 0 for the packed graph). */
export const unpackedFeeds = {
  input_ids: int64([3, 5, 7, 9, 11, 13, 4, 6, 8, 10, 1, 1]),
  position_ids: int64([0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 0, 0]),
  segment_ids: int64([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]),
  labels: int64([5, 7, 9, 11, 13, 0, 6, 8, 10, 0, 0, 0]),
  loss_weights: Float64Array.from([1, 1, 1, 1, 1, 0, 1, 0.5, 1, 0, 0, 0]),
};

/** The tiny model's graph: logits, or the loss and every weight's gradient; `pack`: rows may pack several examples (segment_ids). */
export function build(cfg: ModelConfig, withLoss: boolean, { pack = true, attentionTiling }: { pack?: boolean; attentionTiling?: AttentionTiling } = {}) {
  const g = new Graph('float64');
  const inputs = llamaInputs(g, B, T, pack);
  const weights = new Map<string, Tensor>();
  const weight = (name: string, shape: number[]) => weights.get(name) ?? weights.set(name, g.input(name, shape)).get(name)!;
  if (!withLoss) {
    g.output('logits', llamaLogits(g, cfg, inputs, { weight, attentionTiling }));
    return { g, weights };
  }
  // The chunked head, in chunks that do not divide B·T.
  const terms = crossEntropyTerms(llamaHidden(g, cfg, inputs, { weight, attentionTiling }), g.input('labels', [B * T], 'int64'), g.input('loss_weights', [B * T]), 5);
  g.output('loss', terms.weightedNll);
  const names = [...weights.keys()];
  const grads = gradients(terms.weightedNll, names.map((n) => weights.get(n)!));
  names.forEach((n, i) => g.output(`grad:${n}`, grads[i]!));
  return { g, weights };
}

export async function checkModelGradient(cfg: ModelConfig) {
  await checkGradient(cfg, true, batchFeeds);
  await checkGradient(cfg, false, unpackedFeeds);
}

async function checkGradient(cfg: ModelConfig, pack: boolean, batch: Record<string, HostArray>) {
  const { g } = build(cfg, true, { pack });
  const s = await CompiledGraph.compile(g, { intraOpNumThreads: 1 });
  const w = randomWeights(cfg);
  const feeds: Record<string, HostArray> = { ...batch, ...Object.fromEntries(w) };
  const base = await s.run(feeds);
  const r = rng(11);
  const eps = 1e-5; // ≈ ∛(f64 machine ε): balances truncation against rounding error
  for (const [name, data] of w) {
    const analytic = base[`grad:${name}`] as Float64Array;
    for (let probe = 0; probe < 3; probe++) {
      const i = Math.floor(r() * data.length);
      const keep = data[i];
      data[i] = keep + eps;
      const up = ((await s.run(feeds, ['loss'])).loss as Float64Array)[0];
      data[i] = keep - eps;
      const down = ((await s.run(feeds, ['loss'])).loss as Float64Array)[0];
      data[i] = keep;
      const numeric = (up - down) / (2 * eps);
      const err = Math.abs(numeric - analytic[i]) / Math.max(1e-3, Math.abs(numeric), Math.abs(analytic[i]));
      assert.ok(err < 1e-6, `${pack ? 'packed' : 'unpacked'} ${name}[${i}]: analytic ${analytic[i]} numeric ${numeric}`);
    }
  }
  await s.release();
}

