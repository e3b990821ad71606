// Tokenized examples → fixed-shape [B, T] micro-batches for the training graph.
//
// Two layouts share one format:
//  - padding: one example per row, the rest of the row padding;
//  - packing: several whole examples per row, one after another (first fit, in the given order).
// A training step packs its own examples into rows of one of the job's row lengths (chooseRowLengths,
// layoutStep), so its rows are about as long as its longest example, not the longest of the whole file.
// In both, segmentIds number the examples within a row from 1 (0 = padding) and positionIds restart
// at 0 for every example, so a model that masks attention to `key ≤ query && segment[key] ==
// segment[query]` computes exactly what it would for each example alone. Padding tokens only see
// other padding of their row (never an empty softmax) and carry no loss.
//
// targets[b, t] is the next token of the same example and lossWeights[b, t] its weight: the last
// token of each example predicts nothing (weight 0), so nothing is learned across a boundary.

import { SeededRandom } from './random.ts';
import type { TokenizedExample } from './chat-format.ts';

export interface Batch {
  batchSize: number;
  seqLen: number;
  /** [B, T] row-major. */
  inputIds: Int32Array;
  /** [B, T] next-token ids (0 where the weight is 0). */
  targets: Int32Array;
  /** [B, T] loss weight of targets[b, t]. */
  lossWeights: Float32Array;
  /** [B, T] position of each token within its own example. */
  positionIds: Int32Array;
  /** [B, T] 1-based example number within the row; 0 for padding. */
  segmentIds: Int32Array;
  /** Which examples (indices into the array given) each row holds, in order. */
  rows: number[][];
  /** Σ lossWeights: normalise the summed loss by this (across accumulated micro-batches). */
  weightedTokens: number;
  /** Tokens that are not padding. */
  realTokens: number;
}

type Example = Pick<TokenizedExample, 'ids' | 'weights'>;

/** The order of examples for one epoch: a seeded shuffle that differs per epoch and repeats per seed. */
export function epochOrder(exampleCount: number, seed: number, epoch: number): number[] {
  // Mixing the epoch into the seed (instead of carrying RNG state across epochs) lets a resumed run
  // recompute any epoch's order from (seed, epoch) alone.
  const rng = new SeededRandom((Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(epoch + 1, 0x85ebca6b)) >>> 0);
  return rng.shuffle(Array.from({ length: exampleCount }, (_, i) => i));
}

/** Split an order into consecutive groups of `size` (the last may be shorter). */
export function chunk<T>(items: T[], size: number): T[][] {
  if (size < 1) throw new Error('chunk size must be at least 1');
  const groups: T[][] = [];
  for (let i = 0; i < items.length; i += size) groups.push(items.slice(i, i + size));
  return groups;
}

/**
 * Assign examples (by length) to rows of `seqLen` tokens, first fit in the given order.
 * Every length must already be ≤ seqLen (examples are truncated when tokenized).
 */
export function packRows(lengths: number[], seqLen: number): number[][] {
  const rows: number[][] = [];
  const free: number[] = [];
  lengths.forEach((length, index) => {
    if (length > seqLen) throw new Error(`example ${index} has ${length} tokens, more than the row length ${seqLen}`);
    const row = free.findIndex((space) => space >= length);
    if (row === -1) {
      rows.push([index]);
      free.push(seqLen - length);
    } else {
      rows[row].push(index);
      free[row] -= length;
    }
  });
  return rows;
}

/**
 * The next of 32, 64, 96, 128, 192, 256, 384, 512, 768, … (2^k and 1.5·2^k, multiples of 32) from
 * `tokens`, at most `context`: a ladder of row lengths at most a third padding, which the memory
 * check steps down (plan.ts memoryContext).
 */
export function bucketLength(tokens: number, context: number): number {
  for (let p = 32; ; p *= 2) {
    if (tokens <= p) return Math.min(p, context);
    if (p >= 64 && tokens <= 1.5 * p) return Math.min(1.5 * p, context);
  }
}

/** One optimizer step's examples as micro-batches of equal shape: rows of example indices. */
export interface StepLayout {
  seqLen: number;
  /** Rows per micro-batch (a micro-batch's trailing rows may be empty: all padding). */
  rows: number;
  microBatches: number[][][];
}

/**
 * Lays out one step's examples (by length) in rows of `seqLen` tokens: packed first fit, longest
 * first, then split evenly into as few micro-batches as keep each within `tokensPerMicroBatch`
 * tokens (at least one row).
 */
export function layoutStep(lengths: number[], seqLen: number, tokensPerMicroBatch: number): StepLayout {
  if (lengths.length === 0) return { seqLen, rows: 1, microBatches: [] };
  const longestFirst = lengths.map((_, i) => i).sort((a, b) => lengths[b] - lengths[a] || a - b);
  const packed = packRows(longestFirst.map((i) => lengths[i]), seqLen).map((row) => row.map((k) => longestFirst[k]));
  const count = Math.ceil(packed.length / Math.max(1, Math.floor(tokensPerMicroBatch / seqLen)));
  const rows = Math.ceil(packed.length / count);
  const microBatches = chunk(packed, rows).map((group) => [...group, ...Array.from({ length: rows - group.length }, (): number[] => [])]);
  return { seqLen, rows, microBatches };
}

/** The longest of a step's example lengths (1 when it has none). */
export const longestOf = (lengths: number[]) => lengths.reduce((m, n) => Math.max(m, n), 1);

/** The row length for sequences of up to `longest` tokens: a multiple of 32, within `context`. */
export const rowLength = (longest: number, context: number) => Math.min(context, Math.ceil(longest / 32) * 32);

/** The shortest of `rowLengths` (ascending) that holds `tokens`. */
export function rowLengthFor(tokens: number, rowLengths: number[]): number {
  const fit = rowLengths.find((n) => n >= tokens);
  if (fit === undefined) throw new Error(`no row length holds ${tokens} tokens (longest ${rowLengths[rowLengths.length - 1]})`);
  return fit;
}

/**
 * Most row lengths a job uses: each compiles its own step graphs (one session per kind and length,
 * all kept for the run), so a long job over many lengths would otherwise hold hundreds of sessions.
 */
export const MAX_ROW_LENGTHS = 8;

/**
 * The row lengths a job lays its steps out at (ascending; each step at the shortest that holds its
 * longest example), chosen for this job's steps: at most `maxLengths` multiples of 32 up to
 * `context`, the fewest padded tokens over all `steps` (each the lengths of its examples) plus
 * `compileTokens` for every length, since each compiles its own step graphs. Dynamic programming
 * over the steps' own lengths, rounded up to 32 (a length that ends a group is the longest of the
 * group), and over how many lengths are used.
 */
export function chooseRowLengths(steps: number[][], context: number, tokensPerMicroBatch: number, compileTokens: number, maxLengths = MAX_ROW_LENGTHS): number[] {
  const own = (lengths: number[]) => rowLength(longestOf(lengths), context);
  const candidates = [...new Set(steps.filter((s) => s.length > 0).map(own))].sort((a, b) => a - b);
  const padded = (lengths: number[], seqLen: number) => {
    const l = layoutStep(lengths, seqLen, tokensPerMicroBatch);
    return l.microBatches.length * l.rows * seqLen;
  };
  // Steps by the index of their own candidate.
  const byOwn = candidates.map((c) => steps.filter((s) => s.length > 0 && own(s) === c));
  // group[j][i + 1]: padded tokens of the steps whose own candidate is in (i, j], laid out at candidates[j].
  const group = candidates.map((c, j) => {
    const sums: number[] = [];
    for (let i = j - 1, sum = 0; i >= -1; i--) sums[i + 1] = sum += byOwn[i + 1].reduce((total, s) => total + padded(s, c), 0);
    return sums;
  });
  // best[k][j]: least cost of the steps up to candidate j with k + 1 lengths, the last candidates[j]; from[k][j]: the one before (-1: none).
  const best: number[][] = [candidates.map((_, j) => compileTokens + group[j][0])];
  const from: number[][] = [candidates.map(() => -1)];
  for (let k = 1; k < Math.min(maxLengths, candidates.length); k++) {
    best[k] = [];
    from[k] = [];
    candidates.forEach((_, j) => {
      best[k][j] = Infinity;
      for (let i = k - 1; i < j; i++) {
        const cost = best[k - 1][i] + compileTokens + group[j][i + 1];
        if (cost < best[k][j]) [best[k][j], from[k][j]] = [cost, i];
      }
    });
  }
  const last = candidates.length - 1;
  let k = best.reduce((m, row, i) => (row[last] < best[m][last] ? i : m), 0);
  const chosen: number[] = [];
  for (let j = last; j >= 0; j = from[k--][j]) chosen.unshift(candidates[j]);
  return chosen;
}

/** Lay out rows of examples as a [rows.length, seqLen] batch. */
export function buildBatch(examples: Example[], rows: number[][], seqLen: number, padTokenId: number): Batch {
  const size = rows.length * seqLen;
  const batch: Batch = {
    batchSize: rows.length,
    seqLen,
    inputIds: new Int32Array(size).fill(padTokenId),
    targets: new Int32Array(size),
    lossWeights: new Float32Array(size),
    positionIds: new Int32Array(size),
    segmentIds: new Int32Array(size),
    rows,
    weightedTokens: 0,
    realTokens: 0,
  };
  rows.forEach((row, r) => {
    let offset = r * seqLen;
    const rowEnd = offset + seqLen;
    row.forEach((exampleIndex, s) => {
      const { ids, weights } = examples[exampleIndex];
      if (offset + ids.length > rowEnd) throw new Error(`row ${r} overflows ${seqLen} tokens`);
      batch.inputIds.set(ids, offset);
      for (let t = 0; t < ids.length; t++) {
        batch.positionIds[offset + t] = t;
        batch.segmentIds[offset + t] = s + 1;
        if (t + 1 < ids.length && weights[t + 1] !== 0) {
          batch.targets[offset + t] = ids[t + 1];
          batch.lossWeights[offset + t] = weights[t + 1];
          batch.weightedTokens += weights[t + 1];
        }
      }
      batch.realTokens += ids.length;
      offset += ids.length;
    });
  });
  return batch;
}

export interface PadOptions {
  padTokenId: number;
  /** Fixed row length; default: the longest example, rounded up to `padToMultipleOf`. */
  seqLen?: number;
  padToMultipleOf?: number;
}

/** One example per row. */
export function padBatch(examples: Example[], options: PadOptions): Batch {
  const longest = Math.max(1, ...examples.map((e) => e.ids.length));
  const multiple = options.padToMultipleOf ?? 1;
  const seqLen = options.seqLen ?? Math.ceil(longest / multiple) * multiple;
  return buildBatch(examples, examples.map((_, i) => [i]), seqLen, options.padTokenId);
}

/** Several examples per row of `seqLen` tokens. */
export function packBatch(examples: Example[], options: { seqLen: number; padTokenId: number }): Batch {
  const rows = packRows(examples.map((e) => e.ids.length), options.seqLen);
  return buildBatch(examples, rows, options.seqLen, options.padTokenId);
}

/** For graph inputs declared int64. */
export function toBigInt64(values: Int32Array): BigInt64Array {
  const out = new BigInt64Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = BigInt(values[i]);
  return out;
}
