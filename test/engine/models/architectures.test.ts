// The architectures beside Llama, through the one decoder's switches: each parses from its HF
// config, its training graph's gradient equals finite differences (f64), and the KV-cache decoder
// (prefill, then one token at a time; LoRA merged or applied unmerged) gives the training graph's
// logits at every position.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseHfConfig, type ModelConfig } from '../../../src/engine/models/config.ts';
import { llamaWeightShapes } from '../../../src/engine/models/llama.ts';
import { ALL_LINEAR } from '../../../src/engine/models/lora.ts';
import { modelSetup } from '../../../src/engine/train/setup.ts';
import { loadHfModel } from '../../../src/engine/io/hf-model.ts';
import { loadModelForInference, loadSharedBase } from '../../../src/engine/infer/model.ts';
import { checkCachedDecoding, maxAbsDiff, writeAdapter } from '../infer/fixtures.ts';
import { SeededRandom } from '../../../src/engine/data/random.ts';
import { randomWeights, tinyConfig } from './llama-fixtures.ts';
import { checkModelGradient } from './model-gradcheck.ts';
import { TINY_CONFIGS, writeTinyModel, type TinyArchitecture } from './tiny-models.ts';

const work = mkdtempSync(join(tmpdir(), 'tuneforge-architectures-'));
test.after(() => rmSync(work, { recursive: true, force: true }));

const f32 = (w: Map<string, Float64Array | Float32Array>) => new Map([...w].map(([k, v]) => [k, Float32Array.from(v)]));

/** The tiny HF folder's weights through the KV-cache decoder equal the training graph's logits. */
async function checkTinyModelDecoding(architecture: TinyArchitecture) {
  const dir = writeTinyModel(join(work, architecture), architecture);
  const { config, weights } = loadHfModel(dir);
  const ids = Array.from({ length: 40 }, (_, i) => (i * 37 + 11) % config.vocabSize);
  await checkCachedDecoding(config, new Map([...weights].map(([k, v]) => [k, v.data])), ids, 7, 2e-4);
}

/** A LoRA adapter on every projection gives the same logits merged at load and applied unmerged. */
async function checkUnmergedAdapter(architecture: TinyArchitecture, targets = ALL_LINEAR) {
  const dir = join(work, `${architecture}-lora`);
  writeTinyModel(dir, architecture, 2);
  const adapterDir = join(dir, 'adapter');
  const rng = new SeededRandom(3);
  writeAdapter(loadHfModel(dir).config, adapterDir, (_name, n) => new Float32Array(n).map(() => (rng.next() * 2 - 1) * 0.3), 7, targets);
  const merged = await loadModelForInference({ baseModelDir: dir, adapterDir }, { intraOpNumThreads: 1 });
  const shared = await loadSharedBase(dir, { intraOpNumThreads: 1 });
  try {
    const ids = [677, 678, 300, 301, 302, 400, 12];
    const base = await shared.withAdapter().nextTokenLogits(ids);
    const expected = await merged.nextTokenLogits(ids);
    assert.ok(maxAbsDiff(base, expected) > 1e-2, 'the adapter changes the logits');
    assert.ok(maxAbsDiff(await shared.withAdapter(adapterDir).nextTokenLogits(ids), expected) < 1e-4);
  } finally {
    await merged.release();
    await shared.release();
  }
}

test('Qwen3: config.json → q/k norms, explicit head_dim, no qkv bias; HF weight names', () => {
  const config = parseHfConfig(TINY_CONFIGS.qwen3);
  assert.equal(config.architecture, 'qwen3');
  assert.equal(config.qkNorm, true);
  assert.equal(config.headDim, 32);
  assert.equal(config.attentionBias, false);
  assert.equal(config.slidingWindow, null);
  assert.equal(parseHfConfig({ ...TINY_CONFIGS.qwen3, attention_bias: true }).attentionBias, true);
  const shapes = llamaWeightShapes(config);
  assert.deepEqual(shapes.get('model.layers.1.self_attn.q_norm.weight'), [32]);
  assert.deepEqual(shapes.get('model.layers.1.self_attn.k_norm.weight'), [32]);
  assert.deepEqual(shapes.get('model.layers.0.self_attn.q_proj.weight'), [128, 64]);
  assert.deepEqual(shapes.get('model.layers.0.self_attn.o_proj.weight'), [64, 128]);
  assert.ok(!shapes.has('model.layers.0.self_attn.q_proj.bias'));
});

const qwen3: Partial<ModelConfig> = { architecture: 'qwen3', qkNorm: true, headDim: 6, tieWordEmbeddings: false };

test('Qwen3 (q/k norms, head_dim apart from hidden/heads): gradient = finite differences (f64)', async () => {
  await checkModelGradient(tinyConfig(qwen3));
});

test('Qwen3: the KV-cache decoder equals the training graph at every position', async () => {
  const cfg = tinyConfig(qwen3);
  await checkCachedDecoding(cfg, f32(randomWeights(cfg, 5, false)), Array.from({ length: 24 }, (_, i) => (i * 7 + 3) % cfg.vocabSize), 9, 1e-4);
  await checkTinyModelDecoding('qwen3');
});

test('Qwen3: a LoRA adapter applied unmerged equals it merged', async () => {
  await checkUnmergedAdapter('qwen3');
});

test('SmolLM3: config.json → RoPE on the layers no_rope_layers marks 1 (every 4th left out by default)', () => {
  const config = parseHfConfig(TINY_CONFIGS.smollm3);
  assert.equal(config.architecture, 'smollm3');
  assert.deepEqual(config.ropeLayers, [true, true, true, false]);
  assert.deepEqual(parseHfConfig({ ...TINY_CONFIGS.smollm3, no_rope_layers: [0, 1, 1, 1] }).ropeLayers, [false, true, true, true]);
  const { no_rope_layers: _, ...byInterval } = { ...TINY_CONFIGS.smollm3, num_hidden_layers: 8 };
  assert.deepEqual(parseHfConfig(byInterval).ropeLayers, [true, true, true, false, true, true, true, false]);
  assert.throws(() => parseHfConfig({ ...TINY_CONFIGS.smollm3, no_rope_layers: [1, 1] }), /no_rope_layers/);
  assert.equal(config.qkNorm, false);
  assert.deepEqual([...llamaWeightShapes(config).keys()].filter((n) => n.startsWith('model.layers.3.')).length, 9);
});

const smollm3: Partial<ModelConfig> = { architecture: 'smollm3', ropeLayers: [true, false], tieWordEmbeddings: false };

test('SmolLM3 (a NoPE layer beside a RoPE one): gradient = finite differences (f64)', async () => {
  await checkModelGradient(tinyConfig(smollm3));
});

test('SmolLM3: the KV-cache decoder equals the training graph at every position', async () => {
  const cfg = tinyConfig(smollm3);
  await checkCachedDecoding(cfg, f32(randomWeights(cfg, 5, false)), Array.from({ length: 24 }, (_, i) => (i * 7 + 3) % cfg.vocabSize), 9, 1e-4);
  await checkTinyModelDecoding('smollm3');
});

test('SmolLM3: a LoRA adapter applied unmerged equals it merged', async () => {
  await checkUnmergedAdapter('smollm3');
});

const PHI3_MODULES = ['qkv_proj', 'o_proj', 'gate_up_proj', 'down_proj'];

test('Phi-3: config.json → fused qkv_proj/gate_up_proj, partial rotary, LongRoPE; LoRA targets name the fused modules', () => {
  const config = parseHfConfig(TINY_CONFIGS.phi3);
  assert.equal(config.architecture, 'phi3');
  assert.equal(config.fusedProjections, true);
  assert.equal(config.rotaryDim, 12);
  assert.equal(config.slidingWindow, 262144);
  assert.deepEqual(config.ropeScaling, {
    type: 'longrope', shortFactor: [1, 1.1, 1.3, 1.8, 2.5, 3.2], longFactor: [1, 1.5, 2.5, 5, 10, 20],
    attentionFactor: Math.sqrt(1 + Math.log(32) / Math.log(4096)), originalMaxPositionEmbeddings: 4096,
  });
  const shapes = llamaWeightShapes(config);
  assert.deepEqual(shapes.get('model.layers.0.self_attn.qkv_proj.weight'), [128, 64]);
  assert.deepEqual(shapes.get('model.layers.0.mlp.gate_up_proj.weight'), [320, 64]);
  assert.ok(!shapes.has('model.layers.0.self_attn.q_proj.weight'));
  // The server's Llama-named defaults (and PEFT's own names) adapt the fused modules, saved under their names.
  for (const targetModules of [ALL_LINEAR, PHI3_MODULES, ['q_proj', 'v_proj', 'o_proj', 'gate_proj', 'down_proj']]) {
    assert.deepEqual(modelSetup(config, { rank: 4, alpha: 8, dropout: 0, targetModules }).lora!.targetModules, PHI3_MODULES);
  }
  assert.deepEqual(modelSetup(config, { rank: 4, alpha: 8, dropout: 0, targetModules: ['k_proj'] }).lora!.targetModules, ['qkv_proj']);
  assert.equal(parseHfConfig({ ...TINY_CONFIGS.phi3, partial_rotary_factor: 1 }).rotaryDim, null);
});

const phi3: Partial<ModelConfig> = {
  architecture: 'phi3', fusedProjections: true, headDim: 6, rotaryDim: 4, tieWordEmbeddings: false, slidingWindow: 4,
  ropeScaling: { type: 'longrope', shortFactor: [1.5, 3], longFactor: [2, 8], attentionFactor: 1.2, originalMaxPositionEmbeddings: 64 },
};

test('Phi-3 (fused projections, partial rotary, LongRoPE, sliding window): gradient = finite differences (f64)', async () => {
  await checkModelGradient(tinyConfig(phi3));
});

test('Phi-3: the KV-cache decoder equals the training graph at every position', async () => {
  const cfg = tinyConfig(phi3);
  await checkCachedDecoding(cfg, f32(randomWeights(cfg, 5, false)), Array.from({ length: 24 }, (_, i) => (i * 7 + 3) % cfg.vocabSize), 9, 1e-4);
  await checkTinyModelDecoding('phi3');
});

test('Phi-3: a LoRA adapter on the fused modules applied unmerged equals it merged', async () => {
  await checkUnmergedAdapter('phi3', PHI3_MODULES);
});
