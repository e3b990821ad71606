// The KV-cache decoder against the training graph: prefill + one-token decode steps give the same
// logits as llamaLogits over the whole sequence, at every position (f32 tolerance).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadHfModel } from '../../../src/engine/io/hf-model.ts';
import { inferenceWeights } from '../../../src/engine/infer/decoder.ts';
import { DecoderSteps } from '../../../src/engine/infer/steps.ts';
import { randomWeights, tinyConfig } from '../models/llama-fixtures.ts';
import { checkCachedDecoding, maxAbsDiff } from './fixtures.ts';

const tinyLlamaDir = new URL('../../../models/tiny-llama/', import.meta.url).pathname;

const f32 = (w: Map<string, Float64Array | Float32Array>) => new Map([...w].map(([k, v]) => [k, Float32Array.from(v)]));

test('tiny-llama: prefill + cached decode equal a full forward at every position', async () => {
  const { config, weights } = loadHfModel(tinyLlamaDir);
  const data = new Map([...weights].map(([k, v]) => [k, v.data]));
  // 70 positions: the cache grows from 64 to 128 slots on the way.
  const ids = Array.from({ length: 70 }, (_, i) => (i * 37 + 11) % config.vocabSize);
  await checkCachedDecoding(config, data, ids, 5, 2e-4);
});

test('random GQA config with qkv bias, untied head, llama3 rope scaling', async () => {
  const cfg = tinyConfig({
    architecture: 'qwen2', attentionBias: true, tieWordEmbeddings: false, numHeads: 6, numKvHeads: 2, headDim: 8, hiddenSize: 24,
    ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 16 },
  });
  const ids = Array.from({ length: 24 }, (_, i) => (i * 7 + 3) % cfg.vocabSize);
  await checkCachedDecoding(cfg, f32(randomWeights(cfg, 5, false)), ids, 19, 1e-4);
});

test('multi-head attention (no grouping) with every Llama bias (q/k/v/o and MLP), linear rope scaling', async () => {
  const cfg = tinyConfig({ numHeads: 4, numKvHeads: 4, attentionBias: true, outputBias: true, mlpBias: true, ropeScaling: { type: 'linear', factor: 2 } });
  const ids = Array.from({ length: 20 }, (_, i) => (i * 5 + 2) % cfg.vocabSize);
  await checkCachedDecoding(cfg, f32(randomWeights(cfg, 3, false)), ids, 1, 1e-4);
});

test('tied embeddings, sliding window, and a prompt longer than one prefill chunk', async () => {
  const cfg = tinyConfig({ slidingWindow: 6, maxPositionEmbeddings: 1024 });
  const ids = Array.from({ length: 530 }, (_, i) => (i * 13 + 1) % cfg.vocabSize);
  await checkCachedDecoding(cfg, f32(randomWeights(cfg, 9, false)), ids, 520, 1e-4);
});

test('warmup compiles every prefill bucket and the decode capacities up to the given length', async () => {
  const cfg = tinyConfig();
  const weights = f32(randomWeights(cfg, 1, false));
  const steps = new DecoderSteps(cfg, inferenceWeights(cfg, (name) => weights.get(name)!), { intraOpNumThreads: 1 });
  await steps.warmup(100);
  assert.deepEqual(steps.compiledShapes, ['16x0', '24x0', '32x0', '48x0', '64x0', '96x0', '128x0', '192x0', '256x0', '384x0', '512x0', '1x64', '1x128']);
  await steps.release();
});

test('batched decode over cache slots gives each sequence the logits of its own single-sequence decode', async () => {
  const cfg = tinyConfig({ architecture: 'qwen2', attentionBias: true, numHeads: 6, numKvHeads: 2, headDim: 8, hiddenSize: 24, slidingWindow: 40 });
  const weights = f32(randomWeights(cfg, 4, false));
  const steps = new DecoderSteps(cfg, inferenceWeights(cfg, (name) => weights.get(name)!), { intraOpNumThreads: 1 });
  const prompts = [[3, 4, 5], Array.from({ length: 60 }, (_, i) => (i * 7) % cfg.vocabSize), [9]];
  const batched = steps.newCache(3);
  const alone = prompts.map(() => steps.newCache());
  for (let b = 0; b < 3; b++) {
    const together = await steps.forward(batched, prompts[b], undefined, b);
    assert.ok(maxAbsDiff(together, await steps.forward(alone[b], prompts[b])) < 1e-5);
  }
  // Slot 1 sits out every third step; the 60-token prompt pushes the cache past 64 slots.
  for (let t = 0; t < 12; t++) {
    const tokens = [0, 1, 2].map((b) => (b === 1 && t % 3 === 2 ? null : (t * 5 + b) % cfg.vocabSize));
    const logits = await steps.decodeBatch(batched, tokens);
    for (let b = 0; b < 3; b++) {
      const token = tokens[b];
      if (token === null) {
        assert.equal(logits[b], null);
        continue;
      }
      const expected = await steps.forward(alone[b], [token]);
      assert.ok(maxAbsDiff(logits[b]!, expected) < 1e-4, `step ${t} slot ${b}: ${maxAbsDiff(logits[b]!, expected)}`);
    }
  }
  assert.deepEqual(batched.lengths, alone.map((c) => c.length));
  await steps.release();
});
