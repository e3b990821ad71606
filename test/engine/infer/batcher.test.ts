// Batched decoding of concurrent generations: the tokens that arrive in one turn go through one
// step, and each generation gets what it would have got alone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { inferenceWeights } from '../../../src/engine/infer/decoder.ts';
import { DecoderSteps } from '../../../src/engine/infer/steps.ts';
import { DecodeBatcher, soloSequence } from '../../../src/engine/infer/batcher.ts';
import { chatPrompt, loadModelForInference } from '../../../src/engine/infer/model.ts';
import { randomWeights, tinyConfig } from '../models/llama-fixtures.ts';
import { maxAbsDiff } from './fixtures.ts';

const baseModelDir = new URL('../../../models/tiny-llama/', import.meta.url).pathname;

test('tokens fed in the same turn share one batched step; logits match solo sequences', async () => {
  const cfg = tinyConfig();
  const weights = new Map([...randomWeights(cfg, 2, false)].map(([k, v]) => [k, Float32Array.from(v)]));
  const steps = new DecoderSteps(cfg, inferenceWeights(cfg, (name) => weights.get(name)!), { intraOpNumThreads: 1 });
  const batcher = new DecodeBatcher(steps, 4);
  const prompts = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10]];
  const batched = prompts.map(() => batcher.open());
  const solo = prompts.map(() => soloSequence(steps));
  for (let i = 0; i < 3; i++) assert.ok(maxAbsDiff(await batched[i].prefill(prompts[i]), await solo[i].prefill(prompts[i])) < 1e-6);
  for (let t = 0; t < 5; t++) {
    // Sequence 2 skips odd steps: a batch of two, then of three.
    const active = t % 2 === 1 ? [0, 1] : [0, 1, 2];
    const results = await Promise.all(active.map((i) => batched[i].next(10 + t + i)));
    for (const [k, i] of active.entries()) assert.ok(maxAbsDiff(results[k], await solo[i].next(10 + t + i)) < 1e-4, `step ${t} sequence ${i}`);
  }
  assert.ok(steps.compiledShapes.some((s) => s.startsWith('3*1x')), steps.compiledShapes.join());
  assert.ok(steps.compiledShapes.some((s) => s.startsWith('2*1x')), steps.compiledShapes.join());
  // A lone request takes the single-sequence step; a released slot is reused lowest first.
  batched[1].release();
  assert.equal((await batched[0].next(3)).length, cfg.vocabSize);
  batched.forEach((s) => s.release());
  await steps.release();
});

test('concurrent generations with batched decoding produce what each produces alone', async () => {
  const model = await loadModelForInference({ baseModelDir }, { intraOpNumThreads: 1, batchDecode: true });
  const prompts = ['What colour is the sky?', 'What is two plus two?', 'Name a fish.'].map((q) => chatPrompt(model, [{ role: 'user', content: q }]));
  const options = (i: number) => ({ maxTokens: 16 + 4 * i, temperature: 0.9, seed: 100 + i, stop: i === 2 ? ['e'] : [] });
  const alone = [];
  for (let i = 0; i < 3; i++) alone.push(await model.generate(prompts[i], options(i)));
  const together = await Promise.all(prompts.map((p, i) => model.generate(p, options(i))));
  for (let i = 0; i < 3; i++) {
    assert.deepEqual(together[i].tokenIds, alone[i].tokenIds, `generation ${i}`);
    assert.equal(together[i].text, alone[i].text);
    assert.equal(together[i].finishReason, alone[i].finishReason);
  }
  await model.release();
});
