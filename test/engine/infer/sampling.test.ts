// Sampling and text pieces in isolation: penalties, greedy, top-p nucleus, top-k, stop strings.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { applyPenalties, indexOfMax, logProbabilities, sampleToken, topIndices } from '../../../src/engine/infer/sampling.ts';
import { StopStrings } from '../../../src/engine/infer/text.ts';
import { SeededRandom } from '../../../src/engine/data/random.ts';

const settings = { temperature: 1, topP: 1, presencePenalty: 0, frequencyPenalty: 0 };

test('penalties subtract count·frequency + presence from generated tokens only', () => {
  const logits = Float32Array.from([1, 1, 1, 1]);
  applyPenalties(logits, new Map([[1, 3], [2, 1]]), 0.5, 0.25);
  assert.deepEqual([...logits], [1, 1 - 0.75 - 0.5, 1 - 0.25 - 0.5, 1]);
});

test('temperature 0 is argmax (lowest id on ties) and draws nothing from the generator', () => {
  const rng = new SeededRandom(1);
  const before = rng.currentState;
  assert.equal(sampleToken(Float32Array.from([0, 3, 3, 1]), { ...settings, temperature: 0 }, rng), 1);
  assert.equal(rng.currentState, before);
  assert.equal(indexOfMax([5, 1, 5]), 0);
});

test('top-p samples only from the nucleus, in proportion', () => {
  // p ∝ [0.5, 0.3, 0.15, 0.05]: top_p 0.8 keeps ids 0 and 1 (0.5 + 0.3 reaches 0.8).
  const logits = Float32Array.from([0.5, 0.3, 0.15, 0.05].map(Math.log));
  const rng = new SeededRandom(3);
  const counts = [0, 0, 0, 0];
  for (let i = 0; i < 4000; i++) counts[sampleToken(logits, { ...settings, topP: 0.8 }, rng)]++;
  assert.equal(counts[2] + counts[3], 0);
  assert.ok(Math.abs(counts[0] / 4000 - 0.625) < 0.04, `${counts}`);
  // Ties at the cutoff: four equal tokens, top_p 0.5 keeps the two lowest ids.
  const flat = new Float32Array(4);
  const seen = new Set<number>();
  for (let i = 0; i < 200; i++) seen.add(sampleToken(flat, { ...settings, topP: 0.5 }, rng));
  assert.deepEqual([...seen].sort(), [0, 1]);
  // A flat distribution over a large vocabulary (the slow case for a full sort) still works.
  const wide = new Float32Array(50000);
  const id = sampleToken(wide, { ...settings, topP: 0.9 }, rng);
  assert.ok(id >= 0 && id < 45000);
});

test('same seed, same draws; logProbabilities and topIndices', () => {
  const logits = Float32Array.from({ length: 100 }, (_, i) => Math.sin(i));
  const draw = (seed: number) => {
    const rng = new SeededRandom(seed);
    return Array.from({ length: 20 }, () => sampleToken(logits, { ...settings, topP: 0.9 }, rng));
  };
  assert.deepEqual(draw(5), draw(5));
  assert.notDeepEqual(draw(5), draw(6));
  const logp = logProbabilities(logits);
  assert.ok(Math.abs(logp.reduce((s, v) => s + Math.exp(v), 0) - 1) < 1e-5);
  assert.deepEqual(topIndices([1, 5, 3, 5, 0], 3), [1, 3, 2]);
});

test('stop strings: held back while they might begin, cut when complete, flushed otherwise', () => {
  const stops = new StopStrings(['END', 'xyz']);
  assert.equal(stops.push('hello E'), 'hello ');
  assert.equal(stops.push('N'), '');
  assert.equal(stops.push('D and more'), '');
  assert.equal(stops.stopped, true);
  const other = new StopStrings(['END']);
  assert.equal(other.push('a bit EN'), 'a bit ');
  assert.equal(other.push('ough'), 'ENough');
  assert.equal(other.push(' E'), ' ');
  assert.equal(other.flush(), 'E');
  assert.equal(other.stopped, false);
  const earliest = new StopStrings(['b', 'abc']);
  assert.equal(earliest.push('xab'), 'xa');
  assert.equal(earliest.stopped, true);
});
