// Gemma 2 and Gemma 3 text exported as GGUF and run by node-llama-cpp (llama.cpp's gemma2/gemma3):
// on tiny random bf16 folders (test/engine/models/tiny-models.ts) with a LoRA adapter
// on every projection, prompts longer than the 4-position sliding window, the file carries
// llama.cpp's names and keys, and llama.cpp's log-probabilities of its most likely tokens at every
// position of each prompt and of our greedy continuation agree with our KV-cache decoder's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportGguf } from '../../../src/engine/export/index.ts';
import { readGguf } from '../../../src/engine/io/gguf.ts';
import { loadHfModel } from '../../../src/engine/io/hf-model.ts';
import { chatPrompt, loadModelForInference } from '../../../src/engine/infer/model.ts';
import { SeededRandom } from '../../../src/engine/data/random.ts';
import { writeAdapter } from '../infer/fixtures.ts';
import { writeTinyModel } from '../models/tiny-models.ts';
import { llamaCppGreedy, logprobGapToLlamaCpp } from './llama-cpp.ts';

/**
 * Wider than the Llama tests' 1e-4: llama.cpp's CPU GELU looks its input up in an f16 table
 * (GGML_GELU_FP16), a relative error up to ~5e-4 in every MLP activation. Measured: largest gaps
 * 5.6e-4 (Gemma 2) and 1.5e-3 (Gemma 3); leaving any Gemma feature out of our decoder moves them
 * far past this (see docs/export.md).
 */
const GEMMA_LOGPROB_TOLERANCE = 5e-3;
const ALL_PROJECTIONS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

const work = mkdtempSync(join(tmpdir(), 'tuneforge-gguf-gemma-'));
test.after(() => rmSync(work, { recursive: true, force: true }));

/** A tiny model of `raw`'s architecture with an adapter (small random A and B on every projection). */
function tinyWithAdapter(name: string, architecture: 'gemma2' | 'gemma3') {
  const dir = writeTinyModel(join(work, name), architecture, 3);
  const adapterDir = join(work, `${name}-adapter`);
  const rng = new SeededRandom(11);
  writeAdapter(loadHfModel(dir).config, adapterDir, (_n, size) => new Float32Array(size).map(() => (rng.next() * 2 - 1) * 0.1), 7, ALL_PROJECTIONS);
  return { dir, adapterDir };
}

test('Gemma 2 GGUF: gemma2 keys (soft caps, window, period 2), post_attention_norm / ffn_norm / post_ffw_norm, norms as 1 + w, q folded to llama.cpp\'s scale', () => {
  const { dir, adapterDir } = tinyWithAdapter('gemma2-structure', 'gemma2');
  const file = join(work, 'gemma2-structure.gguf');
  exportGguf(dir, file, { dtype: 'f32', adapterDir });
  const g = readGguf(file);
  const m = g.metadata;
  assert.equal(m.get('general.architecture'), 'gemma2');
  assert.equal(m.get('gemma2.attn_logit_softcapping'), 5);
  assert.equal(m.get('gemma2.final_logit_softcapping'), 3);
  assert.equal(m.get('gemma2.attention.sliding_window'), 4);
  assert.equal(m.get('gemma2.attention.sliding_window_pattern'), 2);
  assert.equal(m.get('gemma2.attention.key_length'), 32);
  assert.equal(m.get('gemma2.embedding_length'), 64);
  const names = g.tensors.map((t) => t.name);
  for (const n of ['attn_norm', 'attn_q', 'attn_k', 'attn_v', 'attn_output', 'post_attention_norm', 'ffn_norm', 'ffn_gate', 'ffn_up', 'ffn_down', 'post_ffw_norm']) {
    assert.ok(names.includes(`blk.1.${n}.weight`), n);
  }
  assert.ok(!names.includes('output.weight'), 'tied: no output tensor');
  assert.equal(names.length, 1 + 4 * 11 + 1);
  const { weights } = loadHfModel(dir);
  const norm = weights.get('model.layers.1.pre_feedforward_layernorm.weight')!.data;
  const stored = g.readTensor('blk.1.ffn_norm.weight');
  assert.ok(norm.every((w, i) => Math.abs(stored[i] - (1 + w)) < 1e-6), 'ffn_norm = 1 + pre_feedforward_layernorm');
});

test('Gemma 3 GGUF: gemma3 keys (window, period 3, local RoPE base, linear scaling), attn_q_norm / attn_k_norm', () => {
  const { dir } = tinyWithAdapter('gemma3-structure', 'gemma3');
  const file = join(work, 'gemma3-structure.gguf');
  exportGguf(dir, file, { dtype: 'f16' });
  const m = readGguf(file).metadata;
  assert.equal(m.get('general.architecture'), 'gemma3');
  assert.equal(m.get('gemma3.attention.sliding_window'), 4);
  assert.equal(m.get('gemma3.attention.sliding_window_pattern'), 3);
  assert.equal(m.get('gemma3.rope.freq_base_swa'), 10000);
  assert.equal(m.get('gemma3.rope.freq_base'), 1e6);
  assert.equal(m.get('gemma3.rope.scaling.type'), 'linear');
  assert.ok(!m.has('gemma3.attn_logit_softcapping') && !m.has('gemma3.final_logit_softcapping'));
  const names = readGguf(file).tensors.map((t) => t.name);
  assert.ok(names.includes('blk.0.attn_q_norm.weight') && names.includes('blk.0.attn_k_norm.weight'));
});

test('what llama.cpp cannot run is refused: local layers without a period, Gemma 3 with attention soft-capping', () => {
  const irregular = writeTinyModel(join(work, 'gemma3-irregular'), 'gemma3', 3, { layer_types: ['sliding_attention', 'full_attention', 'full_attention', 'sliding_attention'] });
  assert.throws(() => exportGguf(irregular, join(work, 'irregular.gguf'), { dtype: 'f16' }), /fixed period/);
  const capped = writeTinyModel(join(work, 'gemma3-capped'), 'gemma3', 3, { attn_logit_softcapping: 50 });
  assert.throws(() => exportGguf(capped, join(work, 'capped.gguf'), { dtype: 'f16' }), /without attention soft-capping/);
});

for (const name of ['gemma2', 'gemma3'] as const) {
  test(`${name}: llama.cpp's top log-probabilities at every position of prompts longer than the window equal ours (LoRA merged, f32)`, async () => {
    const { dir, adapterDir } = tinyWithAdapter(`${name}-logprobs`, name);
    const model = await loadModelForInference({ baseModelDir: dir, adapterDir }, { intraOpNumThreads: 1 });
    try {
      const prompts = [
        chatPrompt(model, [{ role: 'user', content: 'Where is the treasure buried, captain?' }]),
        model.tokenizer.encode('Arr, matey! The sea is wide and the wind is'),
      ];
      assert.ok(prompts.every((p) => p.length > 8), 'prompts longer than twice the window');
      const expected: number[][] = [];
      for (const prompt of prompts) expected.push((await model.generate(prompt, { maxTokens: 12, temperature: 0 })).tokenIds);
      const file = join(work, `${name}.gguf`);
      exportGguf(dir, file, { dtype: 'f32', adapterDir });
      const gap = await logprobGapToLlamaCpp(file, model, prompts, expected);
      console.log(`${name}: largest log-probability gap to llama.cpp ${gap.value.toExponential(2)}`);
      assert.ok(gap.value <= GEMMA_LOGPROB_TOLERANCE, `prompt ${gap.prompt}: log-probability of token ${gap.token} after position ${gap.position} differs from llama.cpp's by ${gap.value}`);
      // Greedy tokens too, where the margin between the two best exceeds the gap (random weights: near-ties happen).
      const got = await llamaCppGreedy(file, prompts.slice(1), [expected[1].length], model.eosTokenIds);
      assert.equal(got.outputs[0][0], expected[1][0]);
    } finally {
      await model.release();
    }
  });
}
