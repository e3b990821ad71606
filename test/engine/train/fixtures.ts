// A memorisation set for the tiny model: fixed token sequences packed one per row.
import type { MicroBatch } from '../../../src/engine/train/runner.ts';

/** Rows of `seqLen` tokens: each row is one example ids[0..] predicting its own next tokens. */
export function memorisationBatch(rows: number[][], seqLen: number): MicroBatch {
  const n = rows.length * seqLen;
  const b: MicroBatch = {
    inputIds: new BigInt64Array(n),
    positionIds: new BigInt64Array(n),
    segmentIds: new BigInt64Array(n),
    labels: new BigInt64Array(n),
    lossWeights: new Float32Array(n),
  };
  rows.forEach((ids, r) => {
    for (let t = 0; t < seqLen; t++) {
      const i = r * seqLen + t;
      b.inputIds[i] = BigInt(ids[t] ?? 0);
      b.positionIds[i] = BigInt(t);
      b.segmentIds[i] = t < ids.length ? 1n : 0n;
      if (t + 1 < ids.length) {
        b.labels[i] = BigInt(ids[t + 1]);
        b.lossWeights[i] = 1;
      }
    }
  });
  return b;
}

export const SEQS = [
  [1, 5, 9, 3, 17, 22, 8, 2],
  [1, 30, 4, 4, 12, 6, 2],
  [1, 7, 7, 21, 13, 28, 19, 2],
  [1, 11, 25, 14, 2],
];
