// Examples → fixed-shape micro-batches. Examples are packed greedily into rows of `seqLen` tokens;
// each keeps its own segment id (attention never crosses examples) and positions restart at 0.
// Token t predicts token t+1 of the same example with that token's loss weight.

import type { MicroBatch } from './runner.ts';

export interface Example {
  ids: ArrayLike<number>;
  /** weights[i]: loss weight of token i as a prediction target. */
  weights: ArrayLike<number>;
}

/** Greedy first-fit packing in the given order; returns, per row, the examples it holds. */
export function packRows(examples: Example[], seqLen: number): Example[][] {
  const rows: { used: number; items: Example[] }[] = [];
  for (const ex of examples) {
    if (ex.ids.length > seqLen) throw new Error(`example of ${ex.ids.length} tokens exceeds row length ${seqLen}`);
    let row = rows.find((r) => r.used + ex.ids.length <= seqLen);
    if (!row) rows.push((row = { used: 0, items: [] }));
    row.items.push(ex);
    row.used += ex.ids.length;
  }
  return rows.map((r) => r.items);
}

/** Rows → micro-batches of exactly `rowsPerMicro` rows (the last one padded with empty rows). */
export function toMicroBatches(rows: Example[][], rowsPerMicro: number, seqLen: number, padId = 0): MicroBatch[] {
  const out: MicroBatch[] = [];
  for (let first = 0; first < rows.length; first += rowsPerMicro) {
    const n = rowsPerMicro * seqLen;
    const b: MicroBatch = {
      inputIds: new BigInt64Array(n).fill(BigInt(padId)),
      positionIds: new BigInt64Array(n),
      segmentIds: new BigInt64Array(n),
      labels: new BigInt64Array(n),
      lossWeights: new Float32Array(n),
    };
    for (let r = 0; r < rowsPerMicro && first + r < rows.length; r++) {
      let at = r * seqLen;
      rows[first + r].forEach((ex, k) => {
        for (let t = 0; t < ex.ids.length; t++, at++) {
          b.inputIds[at] = BigInt(ex.ids[t]);
          b.positionIds[at] = BigInt(t);
          b.segmentIds[at] = BigInt(k + 1);
          if (t + 1 < ex.ids.length) {
            b.labels[at] = BigInt(ex.ids[t + 1]);
            b.lossWeights[at] = ex.weights[t + 1];
          }
        }
      });
    }
    out.push(b);
  }
  return out;
}
