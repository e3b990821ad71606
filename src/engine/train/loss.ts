// The LM head with the per-token loss, in token chunks, and the supervised loss terms on top.
// Logits [N, vocab] and their gradient never exist whole (151,936 × 2,048 floats is 1.2 GB each):
// each chunk's logits live only while its nll, argmax hit and ∂nll/∂hidden = (softmax − onehot)·W
// are taken from them; the backward scales that saved [C, D] gradient by the incoming one, and only
// a trainable head weight (full fine-tuning) has its chunks' logits recomputed, from the saved
// log-sum-exp, to accumulate ∂W chunk by chunk. Given loss weights, each chunk's head runs on its
// weighted rows only.
// The loss is returned as a weighted *sum*; the step divides by the whole batch's weight (fed as a
// scalar), so micro-batches of a gradient-accumulation step add up to the exact batch mean.

import { isLengthDim, type FloatType, type Tensor } from '../graph/ir.ts';
import * as op from '../graph/ops.ts';
import { customGradient } from '../graph/autodiff.ts';
import { after } from '../graph/checkpoint.ts';
import type { LmHead } from '../models/llama.ts';

/** Logits per head chunk, at most: 2²⁵ (128 MB in float32): 512 rows at SmolLM2's 49,152 vocab, 128 at Qwen2.5's 151,936. */
const CHUNK_LOGITS = 2 ** 25;

/** Rows per head chunk for a vocabulary: a power of two, at least 64. */
export function headChunkRows(vocab: number): number {
  return 2 ** Math.max(6, Math.floor(Math.log2(CHUNK_LOGITS / vocab)));
}

export interface TokenScores {
  /** −log p(label_t), [N]; differentiable with respect to the hidden states and the head weight. */
  nll: Tensor;
  /** [label_t is the argmax] as 0/1, [N] (no gradient). */
  hit: Tensor;
}

/**
 * Per-token nll and argmax hits of `labels` [N] int64 under the head, `chunkRows` tokens at a time.
 * With `weights` [N], the head runs only on the tokens whose weight is not 0 (a chat example's
 * prompt has none; reinforcement's can be negative): the others score 0 with no gradient, as their
 * weight would have them anyway.
 */
export function tokenScores(head: LmHead, labels: Tensor, weights?: Tensor, chunkRows = headChunkRows(head.weight.shape[0])): TokenScores {
  const { hidden, weight } = head;
  const softcap = head.softcap ?? null;
  const g = hidden.graph;
  // Capped logits z = c·tanh(raw/c) (final_logit_softcapping): ∂z/∂raw = 1 − (z/c)², applied to
  // the logits' gradient before it meets h or W.
  const capped = (raw: Tensor) => (softcap === null ? raw : op.softcap(raw, softcap));
  const throughCap = (dlogits: Tensor, logits: Tensor) =>
    softcap === null ? dlogits : op.mul(dlogits, op.sub(g.scalar(1), op.mul(op.mul(logits, logits), 1 / (softcap * softcap))));
  const [N] = labels.shape;
  // A graph for rows of any length is fed rows no longer than one chunk (see anyLengthLimit in step.ts).
  const sizes = isLengthDim(N) ? [N] : Array.from({ length: Math.ceil(N / chunkRows) }, (_, c) => Math.min(chunkRows, N - c * chunkRows));
  const hs = op.split(hidden, sizes, 0);
  const idxs = op.split(op.reshape(labels, [N, 1]), sizes, 0);
  const picks = weights ? op.split(op.not(op.equal(weights, g.scalar(0))), sizes, 0).map(pickedRows) : null;
  const rowMax = (x: Tensor) => g.emit('ReduceMax', [x, g.ints([1])], { keepdims: 1 }, [{ shape: [x.shape[0], 1], dtype: g.float }])[0];
  // exp(logp) − onehot(label), in place of a fresh [C, V] mask.
  const minusOnehot = (probs: Tensor, idx: Tensor) =>
    g.emit('ScatterElements', [probs, idx, filledLike(idx, g.float, -1)], { axis: 1, reduction: 'add' }, [{ shape: probs.shape, dtype: g.float }])[0];

  // Each chunk starts after the previous one is done with its logits: ORT's order would otherwise
  // run every chunk's logits and log-softmax before any of the nll, hit or dHidden reading them.
  let previous: Tensor[] = [];
  const chunks = hs.map((hAll, c) => {
    const pick = picks?.[c];
    const h = pick ? pick.of(hAll) : hAll;
    const idx = pick ? pick.of(idxs[c]) : idxs[c];
    const logits = capped(op.matmul(previous.length > 0 ? after(h, previous) : h, op.T(weight))); // [C, V], or [K, V] picked
    const logp = g.emit('LogSoftmax', [logits], { axis: -1 }, [{ shape: logits.shape, dtype: g.float }])[0];
    const pickedLogp = op.gatherElements(logp, idx, 1);
    const pickedLogit = op.gatherElements(logits, idx, 1);
    const all = (x: Tensor, like: Tensor) => (pick ? pick.into(x, like) : x);
    const chunk = {
      h,
      idx,
      nll: all(op.neg(pickedLogp), idxs[c]),
      // argmax = label ⇔ logit[label] ≥ max logit (ties aside). ReduceMax runs ~4× faster than ArgMax here.
      hit: all(op.cast(op.not(op.less(pickedLogit, rowMax(logits))), g.float), idxs[c]),
      lse: op.sub(pickedLogit, pickedLogp),
      dHidden: all(op.matmul(throughCap(minusOnehot(op.exp(logp), idx), logits), weight), hAll), // [C, D]
    };
    previous = [chunk.nll, chunk.hit, chunk.dHidden];
    return chunk;
  });
  const joined = (key: 'nll' | 'hit' | 'dHidden') => (chunks.length > 1 ? op.concat(chunks.map((k) => k[key]), 0) : chunks[0][key]);
  // The last chunk's loss terms are read only by outputs ORT runs after the whole backward: the
  // backward waits for them, so that chunk's logits are freed first.
  const dHidden = after(joined('dHidden'), previous.slice(0, 2));

  // ∂W = Σ_chunks ((softmax − onehot) ⊙ dnll)ᵀ h, the logits recomputed from h and the saved
  // log-sum-exp. Gemm, not MatMul: ORT's common-subexpression elimination would otherwise merge it
  // with the forward's product and keep every chunk's logits alive until the backward.
  const weightGradient = (dnll: Tensor): Tensor => {
    const dnlls = op.split(op.reshape(dnll, [N, 1]), sizes, 0);
    return chunks
      .map(({ h, idx, lse }, c) => {
        const logits = capped(g.emit('Gemm', [h, weight], { transB: 1 }, [{ shape: [h.shape[0], weight.shape[0]], dtype: g.float }])[0]);
        const dlogits = throughCap(minusOnehot(op.exp(op.sub(logits, lse)), idx), logits);
        return op.matmul(op.T(dlogits), op.mul(h, picks ? picks[c].of(dnlls[c]) : dnlls[c])); // [V, D]
      })
      .reduce((a, b) => op.add(a, b));
  };
  const nll = customGradient(op.reshape(joined('nll'), [N]), [hidden, weight], (dnll, [hiddenWanted, weightWanted]) => [
    hiddenWanted ? op.mul(dHidden, op.reshape(dnll, [N, 1])) : null,
    weightWanted ? weightGradient(dnll) : null,
  ]);
  return { nll, hit: op.reshape(joined('hit'), [N]) };
}

/** A tensor shaped like `x` (at run time) filled with `value`. */
function filledLike(x: Tensor, dtype: FloatType, value: number): Tensor {
  const g = x.graph;
  const [shape] = g.emit('Shape', [x], {}, [{ shape: [x.rank], dtype: 'int64' }]);
  const fill = { tensor: { dtype, shape: [1], data: dtype === 'float64' ? Float64Array.of(value) : Float32Array.of(value) } };
  return g.emit('ConstantOfShape', [shape], { value: fill }, [{ shape: x.shape, dtype }])[0];
}

/**
 * The rows where `keep` [C] bool is true: `of` takes them from a [C, …] tensor (Compress; their
 * count is known at run time only, see Graph.rowsPicked), `into` puts [K, …] values back at their
 * rows of a zero tensor shaped like `like` [C, …].
 */
function pickedRows(keep: Tensor) {
  const g = keep.graph;
  const [nonzero] = g.emit('NonZero', [keep], {}, [{ shape: [1, keep.shape[0]], dtype: 'int64' }]);
  const [rows] = g.emit('Transpose', [nonzero], { perm: [1, 0] }, [{ shape: [keep.shape[0], 1], dtype: 'int64' }]);
  g.rowsPicked.add(nonzero).add(rows);
  return {
    of(x: Tensor): Tensor {
      const [y] = g.emit('Compress', [x, keep], { axis: 0 }, [{ shape: x.shape, dtype: x.dtype }]);
      g.rowsPicked.add(y);
      return y;
    },
    into(values: Tensor, like: Tensor): Tensor {
      const [y] = g.emit('ScatterND', [op.zeros({ shape: like.shape, dtype: values.dtype }, g), rows, values], {}, [{ shape: like.shape, dtype: values.dtype }]);
      g.rowsPicked.delete(y);
      return y;
    },
  };
}

export interface LossTerms {
  /** Σ_t w_t · −log p(label_t). */
  weightedNll: Tensor;
  /** Σ_t [argmax = label] over tokens with w_t > 0. */
  correct: Tensor;
  /** Number of tokens with w_t > 0. */
  counted: Tensor;
}

/** The head's hidden states [N, D], labels [N] int64 (any valid id where w = 0), weights [N] float. */
export function crossEntropyTerms(head: LmHead, labels: Tensor, weights: Tensor, chunkRows?: number): LossTerms {
  const g = labels.graph;
  const { nll, hit } = tokenScores(head, labels, weights, chunkRows);
  const counts = op.cast(op.greater(weights, g.scalar(0)), g.float);
  return { weightedNll: op.sumAll(op.mul(nll, weights)), correct: op.sumAll(op.mul(hit, counts)), counted: op.sumAll(counts) };
}
