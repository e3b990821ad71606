// Causal self-attention as one op with its own backward: FlashAttention-2's algorithm in the graph
// IR. The forward runs over tiles (a block of queries × a chunk of the keys they may see) with an
// online softmax and keeps only the context and each row's log-sum-exp; the backward recomputes
// each tile's probabilities from them, P = exp(S − lse) (or, for a query block with a single key
// chunk, as the softmax again; at short T those are kept instead, see defaultTiling). What a layer keeps for the backward is
// O(T) instead of the O(T²) probabilities, and a tile's [G·Tq, Tk] scores are the largest transient.
//
// With a soft cap c (Gemma 2), each tile's scores are c·tanh(s/c) before the mask, and the backward
// multiplies the scores' gradient by 1 − tanh², from the tile's raw scores recomputed.
//
// Layout: q [B, KV, G, T, hd] (RoPE'd and scaled by 1/√hd), k and v [B, KV, 1, T, hd]. A tile
// stacks the G query heads of a k/v head as rows, [B, KV, G·Tq, hd]: grouped-query attention is
// one product per k/v head, and K's and V's gradients come out summed over the group.

import { isLengthDim, type Graph, type Tensor } from '../graph/ir.ts';
import * as op from '../graph/ops.ts';
import { customGradient } from '../graph/autodiff.ts';
import { after } from '../graph/checkpoint.ts';

export interface AttentionTiling {
  /** Most queries per block. */
  queryBlock: number;
  /** Most keys per tile; a block that sees more runs an online softmax over several chunks. */
  keyBlock: number;
  /** Keep single-chunk blocks' probabilities for the backward instead of recomputing them. */
  keepProbabilities: boolean;
}

/** Past T = 4096, most scores in a tile per row and head, Tq·Tk: 2048² (151 MB at SmolLM2-135M's 9 heads). */
const TILE_SCORES = 2048 * 2048;

/** Rows of T tokens as one tile, its probabilities kept: a graph for rows of any length (its blocks cannot follow a length it does not know). */
export const oneTile = (T: number): AttentionTiling => ({ queryBlock: T, keyBlock: T, keepProbabilities: true });

/**
 * 4 query blocks up to T = 2048 (at T = 512 the scheme tuned before tiling: 10/16 of the scores
 * computed, big enough products), then blocks of 512 queries up to T = 4096, so the masked-out
 * share keeps falling as T grows. Past that, 8 query blocks (of at most 2048 queries) and key
 * chunks as wide as TILE_SCORES allows, in the block's width times a power of two (few widths, see
 * fewWidths): every tile is tens of nodes a layer, forward and backward, and 32 blocks of 512 at
 * T = 16384 made a 334,000-node step graph that ORT took minutes to load (now 105,000 and 52 s).
 * Up to T = 1024 the probabilities are kept: they cost no more than the layer's other saved
 * activations, and recomputing them (one more QKᵀ and softmax) measured 6–12% more CPU per 4 × 512 step.
 */
export function defaultTiling(T: number): AttentionTiling {
  if (isLengthDim(T)) return oneTile(T);
  if (T <= 4096) return { queryBlock: Math.min(Math.ceil(T / 4), 512), keyBlock: 4096, keepProbabilities: T <= 1024 };
  const queryBlock = Math.min(Math.ceil(T / 8), Math.sqrt(TILE_SCORES));
  const keyBlock = queryBlock * 2 ** Math.floor(Math.log2(TILE_SCORES / queryBlock ** 2));
  return { queryBlock, keyBlock, keepProbabilities: false };
}

interface KeyChunk {
  start: number;
  end: number;
  /** [B, 1, 1, Tq, Tk] or [Tq, Tk] bool: true where the key is visible from the query; null: every key is. */
  visible: Tensor | null;
}

interface QueryBlock {
  start: number;
  end: number;
  keys: KeyChunk[];
}

/** The tiles of one batch's causal attention and their masks (bool), built once and shared by every layer. */
export interface AttentionPlan {
  blocks: QueryBlock[];
  keepProbabilities: boolean;
}

/** [start, end) split into ⌈length / most⌉ near-equal parts. */
function parts(start: number, end: number, most: number): [number, number][] {
  const n = Math.max(1, Math.ceil((end - start) / most));
  const at = (i: number) => start + Math.round((i * (end - start)) / n);
  return Array.from({ length: n }, (_, i) => [at(i), at(i + 1)]);
}

/**
 * [start, end) in chunks of few widths: `most` while that fits, then the rest in parts of
 * `unit`·2ᵏ, largest first, then what is left under `unit`. ONNX Runtime's planner hands a freed
 * buffer only to a later tensor of the same size and keeps it allocated until then, so every
 * distinct tile width held its own buffers for the whole step (7 GB at 1 × 16384 with 30 widths);
 * with queries in blocks of `unit`, a tile here is one of ⌈log₂(most/unit)⌉ + 1 widths at any T.
 */
function fewWidths(start: number, end: number, most: number, unit: number): [number, number][] {
  const out: [number, number][] = [];
  for (let at = start; at < end; ) {
    let width = Math.min(most, end - at);
    if (width < most && width >= unit) width = unit * 2 ** Math.floor(Math.log2(width / unit));
    out.push([at, (at += width)]);
  }
  return out;
}

/**
 * Tiles for rows of T tokens: a query attends to keys at or before it and, with a sliding window
 * W, fewer than W positions back; with segment ids [B, T] (rows that pack several examples) only
 * to keys of its own segment. Without them (one example per row, padding at its end) nothing else
 * is masked: a real query's keys are all of its example, and padding queries, which see the row
 * too, carry no loss, so their gradients are zero; a tile entirely in the past then has no mask
 * at all, a diagonal one only the causal mask, the same constant in every layer. Tiles entirely
 * in the future or entirely outside the window are never built. Query blocks are `queryBlock`
 * long (the last may be shorter); a block's keys are one chunk when its probabilities are kept
 * (they stay allocated until the backward anyway, and one softmax is fastest), else chunks of few widths.
 */
export function attentionPlan(g: Graph, T: number, segmentIds: Tensor | null, slidingWindow: number | null, tiling: AttentionTiling = defaultTiling(T)): AttentionPlan {
  // True where query and key are of the same example, [B, 1, 1, Tq, Tk].
  const sameSegment = (ids: Tensor, qs: number, qe: number, ks: number, ke: number) => {
    const B = ids.shape[0];
    const at = (start: number, end: number, shape: number[]) => op.reshape(op.slice(ids, 1, start, end), shape);
    return op.equal(at(qs, qe, [B, 1, 1, qe - qs, 1]), at(ks, ke, [B, 1, 1, 1, ke - ks]));
  };
  const and = (a: Tensor | null, b: Tensor) => (a ? op.and(a, b) : b);
  const Q = tiling.queryBlock;
  const starts = Array.from({ length: Math.ceil(T / Q) }, (_, i) => i * Q);
  const blocks = starts.map((qs): QueryBlock => {
    const qe = Math.min(qs + Q, T);
    const Tq = qe - qs;
    const lo = slidingWindow ? Math.max(0, qs - slidingWindow + 1) : 0;
    const chunks = tiling.keepProbabilities ? parts(lo, qe, tiling.keyBlock) : fewWidths(lo, qe, tiling.keyBlock, Q);
    const keys = chunks.map(([ks, ke]): KeyChunk => {
      const Tk = ke - ks;
      let visible = segmentIds ? sameSegment(segmentIds, qs, qe, ks, ke) : null;
      const keyAt = op.arange(g, ks, ke, [1, Tk]);
      // Masks only where the tile crosses them: the diagonal (key after query), the window's edge.
      if (ke - 1 > qs) visible = and(visible, op.less(keyAt, op.arange(g, qs + 1, qe + 1, [Tq, 1])));
      if (slidingWindow && qe - 1 - ks >= slidingWindow) {
        visible = and(visible, op.greater(keyAt, op.arange(g, qs - slidingWindow, qe - slidingWindow, [Tq, 1])));
      }
      return { start: ks, end: ke, visible };
    });
    return { start: qs, end: qe, keys };
  });
  return { blocks, keepProbabilities: tiling.keepProbabilities };
}

const rowMax = (x: Tensor) => x.graph.emit('ReduceMax', [x, x.graph.ints([-1])], { keepdims: 1 }, [{ shape: [...x.shape.slice(0, -1), 1], dtype: x.dtype }])[0];
const max = (a: Tensor, b: Tensor) => a.graph.emit('Max', [a, b], {}, [{ shape: a.shape, dtype: a.dtype }])[0];
const rowSum = (x: Tensor) => op.reduceSum(x, [-1], true);

/** softmax(masked(cap(q kᵀ))) v over the plan's tiles: [B, KV, G, T, hd]; cap = c·tanh(·/c) with `softcap` c, else none. */
export function causalAttention(q: Tensor, k: Tensor, v: Tensor, plan: AttentionPlan, softcap: number | null = null): Tensor {
  const [B, KV, G, , hd] = q.shape;
  // Rows [start, end) of a [B, KV, groups, T, hd] tensor as [B, KV, groups·(end − start), hd].
  const rows = (t: Tensor, start: number, end: number) => op.reshape(op.slice(t, 3, start, end), [B, KV, t.shape[2] * (end - start), hd]);
  const unrows = (t: Tensor) => op.reshape(t, [B, KV, G, t.shape[2] / G, hd]);
  // A key range's rows of k or v, sliced once however many query blocks read them.
  const keyRows = (t: Tensor) => {
    const made = new Map<string, Tensor>();
    return (start: number, end: number) => {
      const key = `${start}:${end}`;
      if (!made.has(key)) made.set(key, rows(t, start, end));
      return made.get(key)!;
    };
  };
  // A tile's masked scores S = cap(q kᵀ), −1e9 where not visible, [B, KV, G·Tq, Tk].
  const masked = q.graph.scalar(-1e9);
  const scores = (qRows: Tensor, kRows: Tensor, visible: Tensor | null) => {
    const product = op.matmul(qRows, op.T(kRows));
    const capped = softcap === null ? product : op.softcap(product, softcap);
    if (!visible) return capped;
    const [Tq, Tk] = [qRows.shape[2] / G, kRows.shape[2]];
    return op.reshape(op.where(visible, op.reshape(capped, [B, KV, G, Tq, Tk]), masked), [B, KV, G * Tq, Tk]);
  };
  // The cap's derivative at a tile's raw scores, 1 − tanh²(q kᵀ / c), [B, KV, G·Tq, Tk].
  const capSlope = (qRows: Tensor, kRows: Tensor) => {
    const t = op.tanh(op.mul(op.matmul(qRows, op.T(kRows)), 1 / softcap!));
    return op.sub(q.graph.scalar(1), op.mul(t, t));
  };

  // Forward, per query block: running max m, sum l and unnormalised context acc over its key
  // chunks. A block with one chunk is a plain softmax (ORT's fused kernel: at T = 512 the online
  // form's separate max, exp and sum passes measured ~8% slower per step) and keeps no lse: its
  // backward recomputes the softmax itself.
  // Where tiles are large (probabilities not kept), each tile's queries wait for the previous
  // tile's result: ORT's scheduler does not follow node order among independent nodes, and running
  // every tile's scores before their reductions would hold all the [G·Tq, Tk] transients at once.
  let previous: Tensor[] = [];
  const inOrder = (qRows: Tensor) => (previous.length > 0 && !plan.keepProbabilities ? after(qRows, previous) : qRows);
  const lses: (Tensor | null)[] = [];
  const kept: (Tensor | null)[] = [];
  const [kRows, vRows] = [keyRows(k), keyRows(v)];
  const contexts = plan.blocks.map((block) => {
    const qBlock = rows(q, block.start, block.end);
    if (block.keys.length === 1) {
      const [chunk] = block.keys;
      const p = op.softmax(scores(inOrder(qBlock), kRows(chunk.start, chunk.end), chunk.visible));
      lses.push(null);
      kept.push(plan.keepProbabilities ? p : null);
      const context = op.matmul(p, vRows(chunk.start, chunk.end));
      previous = [context];
      return context;
    }
    kept.push(null);
    let m: Tensor | null = null;
    let l: Tensor | null = null;
    let acc: Tensor | null = null;
    for (const chunk of block.keys) {
      const s = scores(inOrder(qBlock), kRows(chunk.start, chunk.end), chunk.visible);
      const mNew: Tensor = m ? max(m, rowMax(s)) : rowMax(s);
      const e = op.exp(op.sub(s, mNew));
      const pv = op.matmul(e, vRows(chunk.start, chunk.end));
      if (m && l && acc) {
        const rescale = op.exp(op.sub(m, mNew));
        l = op.add(op.mul(l, rescale), rowSum(e));
        acc = op.add(op.mul(acc, rescale), pv);
      } else {
        l = rowSum(e);
        acc = pv;
      }
      m = mNew;
      previous = [acc, l]; // l too: its row sums of every chunk's exp would otherwise wait for the block's end
    }
    lses.push(op.add(m!, op.log(l!)));
    return op.div(acc!, l!);
  });
  const o = plan.blocks.length > 1 ? op.concat(contexts.map(unrows), 3) : unrows(contexts[0]);

  return customGradient(o, [q, k, v], (dO) => {
    // The backward reads q, k, v through after(): otherwise ORT's CSE merges its slices and
    // recomputed scores with the forward's and keeps those alive until here.
    const [qAgain, kAgain, vAgain] = [q, k, v].map((t) => after(t, [dO]));
    const [kAgainRows, vAgainRows] = [keyRows(kAgain), keyRows(vAgain)];
    const dq: Tensor[] = [];
    const dkv = new Map<string, { start: number; end: number; dk: Tensor; dv: Tensor }>();
    previous = [];
    plan.blocks.forEach((block, i) => {
      const qBlock = rows(qAgain, block.start, block.end);
      const dOi = rows(dO, block.start, block.end);
      const delta = rowSum(op.mul(dOi, rows(o, block.start, block.end))); // rowsum(dO ⊙ O)
      let dqi: Tensor | null = null;
      for (const chunk of block.keys) {
        // The tile's q and dO rows wait for the previous tile's gradients (one gate for both; dO vᵀ
        // too, else ORT would run every tile's before any P).
        const gate = previous.length > 0 && !plan.keepProbabilities ? after(q.graph.constant(q.dtype, [1], [0]), previous) : null;
        const gated = (t: Tensor) => (gate ? op.add(t, gate) : t);
        const [qi, kj, vj] = [gated(qBlock), kAgainRows(chunk.start, chunk.end), vAgainRows(chunk.start, chunk.end)];
        const lse = lses[i];
        const p = kept[i] ?? (lse ? op.exp(op.sub(scores(qi, kj, chunk.visible), lse)) : op.softmax(scores(qi, kj, chunk.visible)));
        let ds = op.mul(p, op.sub(op.matmul(gated(dOi), op.T(vj)), delta));
        if (softcap !== null) ds = op.mul(ds, capSlope(qi, kj));
        const dk = op.matmul(op.T(ds), qi);
        const dv = op.matmul(op.T(p), dOi);
        const part = op.matmul(ds, kj);
        dqi = dqi ? op.add(dqi, part) : part;
        // All three: a tile's dK and dV are summed only at the end, and would keep P and dS alive until then.
        previous = [part, dk, dv];
        const key = `${chunk.start}:${chunk.end}`;
        const seen = dkv.get(key);
        dkv.set(key, seen ? { ...seen, dk: op.add(seen.dk, dk), dv: op.add(seen.dv, dv) } : { start: chunk.start, end: chunk.end, dk, dv });
      }
      dq.push(unrows(dqi!));
    });
    // Each key range's gradients, zero-padded to all T keys, summed.
    const T = q.shape[3];
    const padded = (t: Tensor, start: number, end: number) => {
      const pads = [0, 0, start, 0, 0, 0, T - end, 0];
      return start === 0 && end === T ? t : t.graph.emit('Pad', [t, t.graph.ints(pads)], {}, [{ shape: [B, KV, T, hd], dtype: t.dtype }])[0];
    };
    const total = (pick: (r: { start: number; end: number; dk: Tensor; dv: Tensor }) => Tensor) =>
      op.reshape([...dkv.values()].map((r) => padded(pick(r), r.start, r.end)).reduce((a, b) => op.add(a, b)), [B, KV, 1, T, hd]);
    return [dq.length > 1 ? op.concat(dq, 3) : dq[0], total((r) => r.dk), total((r) => r.dv)];
  });
}
