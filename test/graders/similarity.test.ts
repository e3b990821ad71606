import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  bleu,
  bleuTokens,
  cosineSimilarity,
  fuzzyMatch,
  gleu,
  meteorDetails,
  modifiedPrecision,
  rougeL,
  rougeN,
  rougeTokens,
  textSimilarity,
} from '../../src/graders/similarity.ts';

const close = (actual: number, expected: number, digits = 4) =>
  assert.ok(Math.abs(actual - expected) < 10 ** -digits, `${actual} ≉ ${expected}`);

test('fuzzy_match: rapidfuzz ratio (2·LCS / total length)', () => {
  close(fuzzyMatch('this is a test', 'this is a test!'), 28 / 29); // fuzz.ratio = 96.55
  assert.equal(fuzzyMatch('abc', 'abc'), 1);
  assert.equal(fuzzyMatch('abc', 'xyz'), 0);
  assert.equal(fuzzyMatch('', ''), 1);
  close(fuzzyMatch('kitten', 'sitting'), (2 * 4) / 13);
});

test('bleu: Papineni modified precision (the the the … vs the cat is on the mat) = 2/7', () => {
  const cand = 'the the the the the the the'.split(' ');
  assert.deepEqual(modifiedPrecision(cand, 'the cat is on the mat'.split(' '), 1), [2, 7]);
  assert.deepEqual(modifiedPrecision(cand, 'there is a cat on the mat'.split(' '), 1), [1, 7]);
});

test('bleu: sentence BLEU with brevity penalty and exp smoothing (sacrebleu sentence_bleu / 100)', () => {
  // p1 = 5/6, p2 = 3/5, p3 = 1/4, p4: no match → 1/(2·3); equal lengths → BP = 1.
  close(bleu('the cat sat on the mat', 'the cat is on the mat'), ((5 / 6) * (3 / 5) * (1 / 4) * (1 / 6)) ** 0.25);
  assert.equal(bleu('the quick brown fox jumps', 'the quick brown fox jumps'), 1);
  // Brevity penalty: a 3-token exact prefix of a 6-token reference, effective order 3.
  close(bleu('the cat is', 'the cat is on the mat'), Math.exp(1 - 6 / 3));
  assert.equal(bleu('', 'anything'), 0);
  assert.deepEqual(bleuTokens("Hello, world! It's 3.5 (or 1,000) well-known 2-3."), [
    'Hello', ',', 'world', '!', "It's", '3.5', '(', 'or', '1,000', ')', 'well-known', '2', '-', '3', '.',
  ]);
});

test('gleu: min(n-gram precision, recall) over 1…4-grams (Wu et al., nltk sentence_gleu)', () => {
  // 18 candidate n-grams, 18 reference n-grams, 5 + 3 + 1 + 0 matches.
  close(gleu('the cat sat on the mat', 'the cat is on the mat'), 9 / 18);
  assert.equal(gleu('a b c d', 'a b c d'), 1);
  // Shorter candidate: precision 1, recall 6/18 … min is the recall.
  close(gleu('the cat is', 'the cat is on the mat'), 6 / 18);
});

test('meteor: Wikipedia examples (exact matching, α=0.9 β=3 γ=0.5)', () => {
  const same = meteorDetails('the cat sat on the mat', 'the cat sat on the mat');
  assert.equal(same.chunks, 1);
  close(same.score, 1 - 0.5 * (1 / 6) ** 3); // 0.9977
  const extra = meteorDetails('the cat was sat on the mat', 'the cat sat on the mat');
  close(extra.precision, 6 / 7);
  assert.equal(extra.chunks, 2);
  close(extra.score, 0.9654, 4);
  // Reordered: our alignment keeps "on the mat" and "the cat" as chunks: 3 chunks (nltk's greedy
  // first-match alignment finds 6 and scores 0.5).
  const reordered = meteorDetails('on the mat sat the cat', 'the cat sat on the mat');
  assert.equal(reordered.chunks, 3);
  close(reordered.score, 1 - 0.5 * (3 / 6) ** 3);
  assert.equal(meteorDetails('x y', 'a b').score, 0);
});

test('rouge_n and rouge_l: F-measure on the textbook example (rouge-score)', () => {
  const ref = 'the cat was under the bed';
  const cand = 'the cat was found under the bed';
  // ROUGE-1: overlap 6, P = 6/7, R = 6/6.
  close(rougeN(cand, ref, 1), (2 * (6 / 7) * 1) / (6 / 7 + 1));
  // ROUGE-2: overlap 4 (the cat, cat was, under the, the bed), P = 4/6, R = 4/5.
  close(rougeN(cand, ref, 2), (2 * (4 / 6) * (4 / 5)) / (4 / 6 + 4 / 5));
  // ROUGE-3: overlap 2 (the cat was, under the bed), P = 2/5, R = 2/4.
  close(rougeN(cand, ref, 3), (2 * (2 / 5) * (2 / 4)) / (2 / 5 + 2 / 4));
  close(rougeL(cand, ref), (2 * (6 / 7) * 1) / (6 / 7 + 1));
  close(rougeL('the cat sat on the mat', 'the cat is on the mat'), 5 / 6);
  assert.equal(rougeN('one two three four', 'one two three four', 5), 0); // no 5-grams at all
  assert.equal(textSimilarity('rouge_5', 'a b c d e f', 'a b c d e f'), 1);
  assert.deepEqual(rougeTokens('The Cat, sat!'), ['the', 'cat', 'sat']);
});

test('cosine similarity of vectors', () => {
  close(cosineSimilarity([1, 0], [1, 0]), 1);
  close(cosineSimilarity([1, 0], [0, 1]), 0);
  close(cosineSimilarity([1, 2, 3], [2, 4, 6]), 1);
  assert.throws(() => cosineSimilarity([1], [1, 2]));
});
