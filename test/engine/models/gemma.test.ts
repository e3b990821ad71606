// Gemma 2 and Gemma 3 text: config.json parsing, the training graph's gradients (loss head with
// the final soft cap included) against finite differences in f64, the tiled attention's soft cap
// over several key chunks, and the KV-cache decoder (prefill and one-token steps past the sliding
// window) against the training graph on a tiny random HF folder (tiny-models.ts), and LoRA applied unmerged (one
// resident base, as reinforcement sampling and multi-adapter serving run it) against LoRA merged.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Tensor } from '../../../src/engine/graph/ir.ts';
import { parseHfConfig, attentionScale, layerWindow, usesLocalRope, type ModelConfig } from '../../../src/engine/models/config.ts';
import { llamaHidden, llamaWeightShapes } from '../../../src/engine/models/llama.ts';
import type { AttentionTiling } from '../../../src/engine/models/attention.ts';
import { tokenScores } from '../../../src/engine/train/loss.ts';
import { loadHfModel } from '../../../src/engine/io/hf-model.ts';
import { inferenceWeights } from '../../../src/engine/infer/decoder.ts';
import { DecoderSteps } from '../../../src/engine/infer/steps.ts';
import { loadModelForInference, loadSharedBase } from '../../../src/engine/infer/model.ts';
import { SeededRandom } from '../../../src/engine/data/random.ts';
import { gradCheck, type CheckInput } from '../graph/gradcheck.ts';
import { fullForward, maxAbsDiff, writeAdapter } from '../infer/fixtures.ts';
import { TINY_CONFIGS, writeTinyModel } from './tiny-models.ts';

const { gemma2: GEMMA2_CONFIG, gemma3: GEMMA3_CONFIG } = TINY_CONFIGS;

test('config.json: Gemma 2 alternates local and global layers, caps, scales by query_pre_attn_scalar', () => {
  const cfg = parseHfConfig(GEMMA2_CONFIG);
  assert.equal(cfg.architecture, 'gemma2');
  assert.deepEqual([0, 1, 2, 3].map((l) => layerWindow(cfg, l)), [4, null, 4, null]);
  assert.equal(cfg.attentionSoftcap, 5);
  assert.equal(cfg.finalSoftcap, 3);
  assert.equal(attentionScale(cfg), 1 / Math.sqrt(24));
  assert.equal(cfg.headDim, 32);
  assert.ok(cfg.normAddsOne && cfg.sandwichNorms && cfg.scaleEmbeddings && cfg.tieWordEmbeddings && !cfg.qkNorm);
  assert.equal(cfg.hiddenActivation, 'gelu_tanh');
  assert.equal(cfg.localRopeTheta, null);
  // Gemma2Config's defaults where config.json leaves keys out.
  const bare = parseHfConfig({ ...GEMMA2_CONFIG, attn_logit_softcapping: undefined, final_logit_softcapping: undefined, head_dim: undefined, query_pre_attn_scalar: undefined, tie_word_embeddings: undefined });
  assert.deepEqual([bare.attentionSoftcap, bare.finalSoftcap, bare.headDim, bare.queryPreAttnScalar, bare.tieWordEmbeddings], [50, 30, 256, 256, true]);
  assert.throws(() => parseHfConfig({ ...GEMMA2_CONFIG, hidden_activation: 'relu' }), /hidden_activation "relu" is not supported/);
});

test('config.json: Gemma 3 text takes sliding_window_pattern or layer_types, a local RoPE base, q/k norms', () => {
  const cfg = parseHfConfig(GEMMA3_CONFIG);
  assert.equal(cfg.architecture, 'gemma3');
  assert.deepEqual([0, 1, 2, 3].map((l) => layerWindow(cfg, l)), [4, 4, null, 4]);
  assert.deepEqual([0, 1, 2, 3].map((l) => usesLocalRope(cfg, l)), [true, true, false, true]);
  assert.equal(cfg.localRopeTheta, 10000);
  assert.equal(cfg.ropeTheta, 1e6);
  assert.deepEqual(cfg.ropeScaling, { type: 'linear', factor: 4 });
  assert.ok(cfg.qkNorm && cfg.attentionSoftcap === null && cfg.finalSoftcap === null);
  const types = ['full_attention', 'sliding_attention', 'sliding_attention', 'full_attention'];
  const listed = parseHfConfig({ ...GEMMA3_CONFIG, layer_types: types });
  assert.deepEqual([0, 1, 2, 3].map((l) => layerWindow(listed, l)), [null, 4, 4, null]);
  // Found by model_type alone too, as transformers writes it for the text model.
  assert.equal(parseHfConfig({ ...GEMMA3_CONFIG, architectures: undefined }).architecture, 'gemma3');
  assert.ok(llamaWeightShapes(cfg).has('model.layers.3.self_attn.q_norm.weight'));
  assert.ok(llamaWeightShapes(cfg).has('model.layers.0.post_feedforward_layernorm.weight'));
  assert.ok(!llamaWeightShapes(cfg).has('lm_head.weight'));
});

const B = 2, T = 6;
// Row 0 holds one example; row 1 packs two (positions restart, segments differ).
const batch: CheckInput[] = [
  { name: 'input_ids', shape: [B, T], dtype: 'int64', data: BigInt64Array.from([3, 5, 7, 9, 11, 13, 4, 6, 8, 10, 12, 14].map(BigInt)) },
  { name: 'position_ids', shape: [B, T], dtype: 'int64', data: BigInt64Array.from([0, 1, 2, 3, 4, 5, 0, 1, 2, 0, 1, 2].map(BigInt)) },
  { name: 'segment_ids', shape: [B, T], dtype: 'int64', data: BigInt64Array.from([1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2].map(BigInt)) },
  { name: 'labels', shape: [B * T], dtype: 'int64', data: BigInt64Array.from([5, 7, 9, 11, 13, 0, 6, 8, 10, 12, 14, 0].map(BigInt)) },
];

/** A 2-layer Gemma of hidden 16 (head_dim 6, window 3 of T = 6) from its config.json keys. */
function smallGemma(raw: Record<string, unknown>, over: Record<string, unknown> = {}): ModelConfig {
  return parseHfConfig({ ...raw, vocab_size: 32, hidden_size: 16, intermediate_size: 24, num_hidden_layers: 2, head_dim: 6, query_pre_attn_scalar: 5, sliding_window: 3, sliding_window_pattern: 2, ...over });
}

/** Gradients of Σ R ⊙ nll(labels) (the loss head, capped logits and all) w.r.t. every weight, against finite differences (f64). */
async function checkGradients(cfg: ModelConfig, attentionTiling?: AttentionTiling, recompute = 0) {
  const weights = [...llamaWeightShapes(cfg)].map(([name, shape]): CheckInput => ({ name, shape }));
  await gradCheck([...batch, ...weights], (...xs: Tensor[]) => {
    const byName = new Map([...batch, ...weights].map((spec, i) => [spec.name, xs[i]]));
    const inputs = { inputIds: byName.get('input_ids')!, positionIds: byName.get('position_ids')!, segmentIds: byName.get('segment_ids')! };
    const head = llamaHidden(xs[0].graph, cfg, inputs, { weight: (name) => byName.get(name)!, attentionTiling, recompute });
    return tokenScores(head, byName.get('labels')!, undefined, 5).nll;
  }, { maxProbes: 4, eps: 1e-6, tol: 1e-6 });
}

test('Gemma 2 (capped scores and logits, local/global layers, sandwich norms, GELU): gradient = finite differences (f64)', async () => {
  await checkGradients(smallGemma(GEMMA2_CONFIG, { attn_logit_softcapping: 2, final_logit_softcapping: 1.5 }));
});

test('Gemma 3 (q/k norms, local RoPE base, linear-scaled global RoPE): gradient = finite differences (f64)', async () => {
  await checkGradients(smallGemma(GEMMA3_CONFIG));
});

test('Gemma 3 with the first two of three layers recomputed in the backward (a local layer\'s RoPE tables and masks shared with a kept one): gradient = finite differences (f64)', async () => {
  const cfg = smallGemma(GEMMA3_CONFIG, { num_hidden_layers: 3 });
  assert.deepEqual([0, 1, 2].map((l) => layerWindow(cfg, l)), [3, null, 3]);
  await checkGradients(cfg, undefined, 2);
});

test('the capped tiled attention over several key chunks (online softmax, probabilities recomputed): gradient = finite differences (f64)', async () => {
  await checkGradients(smallGemma(GEMMA2_CONFIG, { attn_logit_softcapping: 2, sliding_window: 5 }), { queryBlock: 2, keyBlock: 2, keepProbabilities: false });
});

const work = mkdtempSync(join(tmpdir(), 'tuneforge-gemma-'));
test.after(() => rmSync(work, { recursive: true, force: true }));

for (const [name, architecture] of [['Gemma 2', 'gemma2'], ['Gemma 3', 'gemma3']] as const) {
  test(`${name}: the KV-cache decoder (prefill, then one token a step past the window) equals the training graph`, async () => {
    const dir = writeTinyModel(join(work, architecture), architecture);
    const { config, weights } = loadHfModel(dir);
    const hf = new Map([...weights].map(([k, v]) => [k, v.data]));
    const ids = [677, 12, 40, 300, 301, 87, 5, 9, 400, 13, 14, 15, 16, 200, 17, 18];
    const reference = await fullForward(config, hf, ids); // [T, vocab]
    const V = config.vocabSize;
    const steps = new DecoderSteps(config, inferenceWeights(config, (n) => hf.get(n)!.slice()), { intraOpNumThreads: 1 });
    try {
      const cache = steps.newCache();
      const prompt = 6;
      let worst = maxAbsDiff(await steps.forward(cache, ids.slice(0, prompt)), reference.subarray((prompt - 1) * V, prompt * V));
      for (let t = prompt; t < ids.length; t++) {
        worst = Math.max(worst, maxAbsDiff(await steps.forward(cache, [ids[t]]), reference.subarray(t * V, (t + 1) * V)));
      }
      // Logits of order 1 (Gemma 3 uncapped: up to ~10) in f32 through different kernels.
      assert.ok(worst < 2e-4, `largest logit difference ${worst}`);
    } finally {
      await steps.release();
    }
  });
}

for (const [name, architecture] of [['Gemma 2', 'gemma2'], ['Gemma 3', 'gemma3']] as const) {
  test(`${name}: a LoRA adapter applied unmerged over a shared base gives the merged model's logits`, async () => {
    const dir = writeTinyModel(join(work, `${architecture}-lora`), architecture);
    const adapterDir = join(work, `${architecture}-adapter`);
    const r = new SeededRandom(9);
    writeAdapter(loadHfModel(dir).config, adapterDir, (_n, size) => new Float32Array(size).map(() => (r.next() * 2 - 1) * 0.2), 5, ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']);
    const merged = await loadModelForInference({ baseModelDir: dir, adapterDir }, { intraOpNumThreads: 1 });
    const shared = await loadSharedBase(dir, { intraOpNumThreads: 1 });
    try {
      const ids = [677, 12, 40, 300, 301, 87, 5, 9, 400, 13];
      const a = await merged.nextTokenLogits(ids);
      const unmerged = shared.withAdapter(adapterDir);
      const b = await unmerged.nextTokenLogits(ids);
      const bare = await shared.withAdapter().nextTokenLogits(ids);
      assert.ok(maxAbsDiff(a, b) < 1e-4, `unmerged vs merged: ${maxAbsDiff(a, b)}`);
      assert.ok(maxAbsDiff(a, bare) > 1e-2, 'the adapter changes the logits');
    } finally {
      await merged.release();
      await shared.release();
    }
  });
}
