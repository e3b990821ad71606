import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildBatch, chunk, epochOrder, packBatch, packRows, padBatch, toBigInt64, type Batch } from '../../../src/engine/data/batching.ts';
import { readJsonl, readJsonlSync } from '../../../src/engine/data/jsonl.ts';
import { SeededRandom } from '../../../src/engine/data/random.ts';

function example(ids: number[], weights?: number[]) {
  return { ids: Int32Array.from(ids), weights: Float32Array.from(weights ?? ids.map(() => 1)) };
}

/** Check every invariant the model relies on, row by row. */
function assertWellFormed(batch: Batch, examples: ReturnType<typeof example>[]) {
  const T = batch.seqLen;
  assert.equal(batch.inputIds.length, batch.batchSize * T);
  for (const array of [batch.targets, batch.lossWeights, batch.positionIds, batch.segmentIds]) assert.equal(array.length, batch.batchSize * T);
  batch.rows.forEach((row, r) => {
    let t = 0;
    row.forEach((exampleIndex, s) => {
      const { ids, weights } = examples[exampleIndex];
      for (let i = 0; i < ids.length; i++, t++) {
        const at = r * T + t;
        assert.equal(batch.inputIds[at], ids[i]);
        assert.equal(batch.segmentIds[at], s + 1, 'one segment per example');
        assert.equal(batch.positionIds[at], i, 'positions restart per example');
        if (i + 1 < ids.length) {
          assert.equal(batch.lossWeights[at], weights[i + 1]);
          if (weights[i + 1] !== 0) assert.equal(batch.targets[at], ids[i + 1], 'targets are the next token of the same example');
        } else {
          assert.equal(batch.lossWeights[at], 0, "an example's last token predicts nothing across the boundary");
        }
      }
    });
    for (; t < T; t++) {
      assert.equal(batch.segmentIds[r * T + t], 0, 'padding is segment 0');
      assert.equal(batch.lossWeights[r * T + t], 0);
    }
  });
}

test('packing: first fit, segments never cross, positions restart, no loss across boundaries', () => {
  const examples = [example([1, 2, 3, 4, 5]), example([6, 7, 8], [0, 0, 1]), example([9, 10, 11, 12, 13, 14]), example([15, 16]), example([17, 18, 19, 20], [0, 1, 0, 1])];
  const batch = packBatch(examples, { seqLen: 8, padTokenId: 99 });
  assert.deepEqual(batch.rows, [[0, 1], [2, 3], [4]]);
  assert.equal(batch.batchSize, 3);
  assertWellFormed(batch, examples);
  assert.deepEqual([...batch.segmentIds.subarray(0, 8)], [1, 1, 1, 1, 1, 2, 2, 2]);
  assert.deepEqual([...batch.positionIds.subarray(0, 8)], [0, 1, 2, 3, 4, 0, 1, 2]);
  assert.deepEqual([...batch.targets.subarray(0, 8)], [2, 3, 4, 5, 0, 0, 8, 0]);
  assert.deepEqual([...batch.lossWeights.subarray(0, 8)], [1, 1, 1, 1, 0, 0, 1, 0]);
  assert.deepEqual([...batch.inputIds.subarray(16, 24)], [17, 18, 19, 20, 99, 99, 99, 99]);
  assert.equal(batch.weightedTokens, 4 + 1 + 5 + 1 + 2);
  assert.equal(batch.realTokens, 20);
});

test('packing random examples keeps every invariant', () => {
  const rng = new SeededRandom(7);
  const examples = Array.from({ length: 60 }, () =>
    example(Array.from({ length: 1 + rng.nextInt(30) }, () => rng.nextInt(500)), undefined),
  ).map((e) => ({ ...e, weights: e.weights.map(() => rng.nextInt(2)) }));
  const batch = packBatch(examples, { seqLen: 32, padTokenId: 0 });
  assert.deepEqual(batch.rows.flat().sort((a, b) => a - b), examples.map((_, i) => i));
  assertWellFormed(batch, examples);
  assert.ok(batch.batchSize < examples.length, 'packing saves rows');
  assert.throws(() => packRows([33], 32), /more than the row length/);
});

test('padding: one example per row, rounded up', () => {
  const examples = [example([1, 2, 3]), example([4, 5, 6, 7, 8])];
  const batch = padBatch(examples, { padTokenId: 0, padToMultipleOf: 4 });
  assert.equal(batch.seqLen, 8);
  assert.deepEqual(batch.rows, [[0], [1]]);
  assertWellFormed(batch, examples);
  assert.deepEqual([...batch.inputIds], [1, 2, 3, 0, 0, 0, 0, 0, 4, 5, 6, 7, 8, 0, 0, 0]);
  assert.equal(padBatch(examples, { padTokenId: 0, seqLen: 16 }).seqLen, 16);
  assert.throws(() => buildBatch(examples, [[0, 1]], 6, 0), /overflows/);
  assert.deepEqual([...toBigInt64(Int32Array.from([1, -2]))], [1n, -2n]);
});

test('epoch order: a permutation, repeatable per (seed, epoch), different across them', () => {
  const a = epochOrder(50, 42, 0);
  assert.deepEqual([...a].sort((x, y) => x - y), Array.from({ length: 50 }, (_, i) => i));
  assert.deepEqual(epochOrder(50, 42, 0), a);
  assert.notDeepEqual(epochOrder(50, 42, 1), a);
  assert.notDeepEqual(epochOrder(50, 43, 0), a);
  assert.deepEqual(chunk(a, 16).map((g) => g.length), [16, 16, 16, 2]);
});

test('seeded random: same seed same stream, state restores', () => {
  const rng = new SeededRandom(123);
  const first = [rng.next(), rng.next()];
  const state = rng.currentState;
  const next = [rng.next(), rng.nextNormal()];
  assert.deepEqual([new SeededRandom(123).next(), new SeededRandom(123).next()], [first[0], first[0]]);
  const resumed = new SeededRandom(0).restore(state);
  assert.deepEqual([resumed.next(), resumed.nextNormal()], next);
});

test('JSONL reader: skips blank lines, numbers lines from 1, names the bad line', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tuneforge-jsonl-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const good = join(dir, 'good.jsonl');
  writeFileSync(good, '{"a":1}\n\n{"a":2}\r\n');
  assert.deepEqual(readJsonlSync(good), [{ line: 1, value: { a: 1 } }, { line: 3, value: { a: 2 } }]);
  const streamed = [];
  for await (const record of readJsonl(good)) streamed.push(record);
  assert.deepEqual(streamed, [{ line: 1, value: { a: 1 } }, { line: 3, value: { a: 2 } }]);
  const bad = join(dir, 'bad.jsonl');
  writeFileSync(bad, '{"a":1}\n{oops}\n');
  assert.throws(() => readJsonlSync(bad), /line 2 is not valid JSON/);
});
