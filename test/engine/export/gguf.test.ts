// GGUF export of a fine-tuned tiny-llama (base + a LoRA adapter on every projection, Q and K
// included, so the RoPE permutation matters): the file parses back with llama.cpp's names, shapes
// and hyperparameters, and node-llama-cpp 3.21.1 (its prebuilt CPU binary) loads it, generates the
// same greedy tokens as our engine for the same prompt ids, gives the same log-probabilities to its
// most likely tokens at every position (so a small error cannot hide behind the argmax), and
// tokenizes text the same. Twice: with a random adapter, and with one trained for real by train()
// on the pirate sample.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportGguf, exportMerged, permuteForGgmlRope, writeModelGguf } from '../../../src/engine/export/index.ts';
import { readGguf, GgmlType } from '../../../src/engine/io/gguf.ts';
import { loadHfModel, saveHfModel } from '../../../src/engine/io/hf-model.ts';
import { chatPrompt, loadModelForInference, type InferenceModel } from '../../../src/engine/infer/model.ts';
import { SeededRandom } from '../../../src/engine/data/random.ts';
import { writeAdapter } from '../infer/fixtures.ts';
import { LOGPROB_TOLERANCE, assertLogprobsMatchLlamaCpp, llamaCppGreedy, logprobGapToLlamaCpp } from './llama-cpp.ts';

const baseModelDir = new URL('../../../models/tiny-llama/', import.meta.url).pathname;
const ALL_PROJECTIONS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
const work = mkdtempSync(join(tmpdir(), 'tuneforge-gguf-'));
const adapterDir = join(work, 'adapter');
const cfg = loadHfModel(baseModelDir).config;
const rng = new SeededRandom(11);
writeAdapter(cfg, adapterDir, (_name, n) => new Float32Array(n).map(() => (rng.next() * 2 - 1) * 0.3), 7, ALL_PROJECTIONS);

let ours: InferenceModel;
test.before(async () => {
  ours = await loadModelForInference({ baseModelDir, adapterDir }, { intraOpNumThreads: 1 });
});
test.after(async () => {
  await ours.release();
  rmSync(work, { recursive: true, force: true });
});

test('permuteForGgmlRope moves each head from rotate-half to interleaved pairs', () => {
  // 2 heads of dim 4, one column: head rows [x0 x1 | y0 y1] → [x0 y0 x1 y1].
  const rows = Float32Array.from([0, 1, 2, 3, 10, 11, 12, 13]);
  assert.deepEqual([...permuteForGgmlRope(rows, 8, 2)], [0, 2, 1, 3, 10, 12, 11, 13]);
});

test('GGUF structure: llama metadata, tokenizer, llama.cpp tensor names, permuted Q/K', () => {
  const file = join(work, 'model-f16.gguf');
  exportGguf(baseModelDir, file, { dtype: 'f16', adapterDir, name: 'ft:tiny-llama:test' });
  const g = readGguf(file);
  assert.equal(g.version, 3);
  assert.equal(g.alignment, 32);
  const m = g.metadata;
  assert.equal(m.get('general.architecture'), 'llama');
  assert.equal(m.get('general.name'), 'ft:tiny-llama:test');
  assert.equal(m.get('llama.context_length'), 512);
  assert.equal(m.get('llama.embedding_length'), 128);
  assert.equal(m.get('llama.block_count'), 4);
  assert.equal(m.get('llama.feed_forward_length'), 352);
  assert.equal(m.get('llama.attention.head_count'), 4);
  assert.equal(m.get('llama.attention.head_count_kv'), 2);
  assert.equal(m.get('llama.rope.dimension_count'), 32);
  assert.equal(m.get('llama.vocab_size'), 704);
  assert.equal(m.get('llama.rope.freq_base'), 10000);
  assert.ok(Math.abs(Number(m.get('llama.attention.layer_norm_rms_epsilon')) - 1e-5) < 1e-9);
  assert.equal(m.get('tokenizer.ggml.model'), 'gpt2');
  assert.equal(m.get('tokenizer.ggml.pre'), 'gpt-2');
  const tokens = m.get('tokenizer.ggml.tokens') as string[];
  assert.equal(tokens.length, 704);
  assert.equal(tokens[679], '<|im_end|>');
  const types = m.get('tokenizer.ggml.token_type') as number[];
  assert.equal(types[679], 3); // control
  assert.equal(types[680], 4); // <tool_call>: user-defined
  assert.equal(types[703], 5); // padding id: unused
  assert.equal((m.get('tokenizer.ggml.merges') as string[])[0], 't e');
  assert.equal(m.get('tokenizer.ggml.eos_token_id'), 679);
  assert.equal(m.get('tokenizer.ggml.bos_token_id'), 677);
  assert.equal(m.get('tokenizer.ggml.padding_token_id'), 677);
  assert.match(String(m.get('tokenizer.chat_template')), /<\|im_start\|>/);

  const names = g.tensors.map((t) => t.name);
  assert.equal(names.length, 1 + 4 * 9 + 2);
  assert.deepEqual(names.slice(0, 2), ['token_embd.weight', 'blk.0.attn_norm.weight']);
  for (const n of ['attn_q', 'attn_k', 'attn_v', 'attn_output', 'ffn_gate', 'ffn_up', 'ffn_down', 'attn_norm', 'ffn_norm']) assert.ok(names.includes(`blk.3.${n}.weight`), n);
  assert.ok(names.includes('output_norm.weight') && names.includes('output.weight'));
  const q = g.tensors.find((t) => t.name === 'blk.0.attn_q.weight')!;
  assert.deepEqual(q.dims, [128, 128]);
  assert.equal(q.type, GgmlType.F16);
  assert.deepEqual(g.tensors.find((t) => t.name === 'blk.0.attn_k.weight')!.dims, [128, 64]);
  assert.equal(g.tensors.find((t) => t.name === 'blk.0.attn_norm.weight')!.type, GgmlType.F32);
  for (const t of g.tensors) assert.equal(t.offset % 32, 0);

  // The stored K is the merged HF K permuted per KV head (f16-rounded).
  const merged = join(work, 'merged');
  exportMerged(baseModelDir, adapterDir, merged, 'f32');
  const hfK = loadHfModel(merged).weights.get('model.layers.0.self_attn.k_proj.weight')!;
  const expected = permuteForGgmlRope(hfK.data, 64, 2);
  const stored = g.readTensor('blk.0.attn_k.weight');
  for (let i = 0; i < expected.length; i++) assert.ok(Math.abs(stored[i] - expected[i]) <= 1e-3 * Math.max(1, Math.abs(expected[i])), `k[${i}]`);
});

test('node-llama-cpp loads the f32 GGUF: its greedy tokens and its top log-probabilities at every position match ours', async () => {
  const file = join(work, 'model-f32.gguf');
  exportGguf(baseModelDir, file, { dtype: 'f32', adapterDir });
  const prompts = [
    chatPrompt(ours, [{ role: 'user', content: 'What colour is the sky?' }]),
    ours.tokenizer.encode('Arr, matey! The sea is'),
  ];
  const expected: number[][] = [];
  for (const prompt of prompts) expected.push((await ours.generate(prompt, { maxTokens: 16, temperature: 0 })).tokenIds);
  // The tokenizer metadata tokenizes as tokenizer.json does (special tokens included).
  const text = '<|im_start|>user\nHello there, 42 pirates!<|im_end|>\n';
  const got = await llamaCppGreedy(file, prompts, expected.map((e) => e.length), ours.eosTokenIds, text);
  assert.deepEqual(got.outputs, expected);
  assert.ok(expected.every((e) => e.length === 16), 'no early EOS: 16 tokens compared per prompt');
  assert.deepEqual(got.tokenized, ours.tokenizer.encode(text));
  await assertLogprobsMatchLlamaCpp(file, ours, prompts, expected);
});

test('the log-probability comparison catches a 1% error in one layer that greedy tokens do not show', async () => {
  // The GGUF of a base whose layer-1 down_proj is scaled by 1.01, against our unscaled model.
  const off = variant('down-proj-1-percent', {}, (w) => {
    const name = 'model.layers.1.mlp.down_proj.weight';
    const t = w.get(name)!;
    w.set(name, { shape: t.shape, data: t.data.map((v) => v * 1.01) });
  });
  const file = join(work, 'off-by-1-percent.gguf');
  exportGguf(off, file, { dtype: 'f32', adapterDir });
  const prompts = [chatPrompt(ours, [{ role: 'user', content: 'What colour is the sky?' }])];
  const expected = [(await ours.generate(prompts[0], { maxTokens: 16, temperature: 0 })).tokenIds];
  assert.deepEqual((await llamaCppGreedy(file, prompts, [16], ours.eosTokenIds)).outputs, expected, 'the argmax hides the error');
  const gap = await logprobGapToLlamaCpp(file, ours, prompts, expected);
  assert.ok(gap.value > 10 * LOGPROB_TOLERANCE, `a 1% error moved log-probabilities by only ${gap.value}`);
});

test('a model fine-tuned for real (train() on the pirate sample, LoRA on Q/K/V/O/MLP): llama.cpp greedy and log-probabilities equal ours', async () => {
  const root = new URL('../../../', import.meta.url).pathname;
  const { train } = await import('../../../src/engine/train/train.ts');
  const result = await train({
    baseModelDir,
    method: 'supervised',
    trainingFile: join(root, 'samples/demo-train.jsonl'),
    hyperparameters: { n_epochs: 2, batch_size: 8, learning_rate_multiplier: 4 },
    seed: 1,
    lora: { rank: 8, alpha: 16, dropout: 0, targetModules: ALL_PROJECTIONS },
    outputDir: join(work, 'trained'),
  } as Parameters<typeof train>[0], {});
  const tuned = await loadModelForInference({ baseModelDir, adapterDir: result.finalDir }, { intraOpNumThreads: 1 });
  try {
    const question = chatPrompt(tuned, [
      { role: 'system', content: 'You are Captain Byte, a helpful pirate.' },
      { role: 'user', content: 'What colour is the sky?' },
    ]);
    // The question, and the same question with the start of the trained answer, so the greedy
    // comparison runs over tokens the adapter learned whatever length the first reply has (two
    // epochs of this sample teach short answers; log-probabilities are compared at every prompt
    // position as well).
    const prompts = [question, [...question, ...tuned.tokenizer.encode('Arr, matey! The sky be')]];
    const expected: number[][] = [];
    for (const prompt of prompts) expected.push((await tuned.generate(prompt, { maxTokens: 24, temperature: 0 })).tokenIds);
    assert.ok(expected.every((e) => e.length >= 4), `${expected.map((e) => tuned.tokenizer.decode(e))}`);
    const file = join(work, 'trained.gguf');
    exportGguf(baseModelDir, file, { dtype: 'f32', adapterDir: result.finalDir });
    const got = await llamaCppGreedy(file, prompts, expected.map((e) => e.length), tuned.eosTokenIds);
    assert.deepEqual(got.outputs, expected, expected.map((e) => tuned.tokenizer.decode(e)).join(' | '));
    await assertLogprobsMatchLlamaCpp(file, tuned, prompts, expected);
    // At f16 the trained answer is confident enough to survive the rounding: the same chat reply.
    const half = join(work, 'trained-f16.gguf');
    exportGguf(baseModelDir, half, { dtype: 'f16', adapterDir: result.finalDir });
    const gotHalf = await llamaCppGreedy(half, [prompts[0]], [expected[0].length], tuned.eosTokenIds);
    assert.deepEqual(gotHalf.outputs[0], expected[0], `f16: ${tuned.tokenizer.decode(gotHalf.outputs[0])}`);
  } finally {
    await tuned.release();
  }
});

/** A variant of tiny-llama: config fields patched, weights changed by `edit` (same tokenizer). */
function variant(name: string, patch: Record<string, unknown>, edit: (w: Map<string, { shape: number[]; data: Float32Array }>) => void): string {
  const dir = join(work, name);
  const { rawConfig, weights } = loadHfModel(baseModelDir);
  edit(weights);
  saveHfModel(dir, { ...rawConfig, ...patch }, weights);
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json']) copyFileSync(join(baseModelDir, f), join(dir, f));
  return dir;
}

test('variants llama.cpp runs like ours: tied embeddings + Llama 3 RoPE scaling (rope_freqs), Qwen2 with q/k/v biases (no permutation)', async () => {
  const r = new SeededRandom(5);
  const tied = variant('tied-llama3', { tie_word_embeddings: true, rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 } }, (w) => {
    w.set('model.embed_tokens.weight', w.get('lm_head.weight')!);
    w.delete('lm_head.weight');
  });
  const qwen2 = variant('qwen2', { architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', rope_theta: 1000000 }, (w) => {
    for (let l = 0; l < 4; l++) {
      for (const [p, n] of [['q_proj', 128], ['k_proj', 64], ['v_proj', 64]] as const) {
        w.set(`model.layers.${l}.self_attn.${p}.bias`, { shape: [n], data: new Float32Array(n).map(() => (r.next() * 2 - 1) * 0.5) });
      }
    }
  });
  for (const [dir, arch] of [[tied, 'llama'], [qwen2, 'qwen2']] as const) {
    const model = await loadModelForInference({ baseModelDir: dir, adapterDir }, { intraOpNumThreads: 1 });
    try {
      const prompts = [chatPrompt(model, [{ role: 'user', content: 'Where is the treasure buried, captain?' }])];
      const expected: number[][] = [];
      for (const prompt of prompts) expected.push((await model.generate(prompt, { maxTokens: 16, temperature: 0 })).tokenIds);
      const file = join(work, `${arch}-${expected[0][0]}.gguf`);
      exportGguf(dir, file, { dtype: 'f32', adapterDir });
      const g = readGguf(file);
      assert.equal(g.metadata.get('general.architecture'), arch);
      if (dir === tied) {
        assert.ok(!g.tensors.some((t) => t.name === 'output.weight'), 'tied: no output tensor');
        assert.deepEqual(g.tensors[0].name, 'rope_freqs.weight');
      }
      if (dir === qwen2) assert.ok(g.tensors.some((t) => t.name === 'blk.0.attn_q.bias'));
      const got = await llamaCppGreedy(file, prompts, expected.map((e) => e.length), model.eosTokenIds);
      assert.deepEqual(got.outputs, expected, dir);
      await assertLogprobsMatchLlamaCpp(file, model, prompts, expected);
    } finally {
      await model.release();
    }
  }
});

test('linear RoPE scaling is written as llama.cpp reads it', () => {
  const dir = variant('linear', { rope_scaling: { type: 'linear', factor: 4 } }, () => {});
  const file = join(work, 'linear.gguf');
  exportGguf(dir, file, { dtype: 'f16' });
  const g = readGguf(file);
  assert.equal(g.metadata.get('llama.rope.scaling.type'), 'linear');
  assert.equal(g.metadata.get('llama.rope.scaling.factor'), 4);
  assert.ok(!g.tensors.some((t) => t.name === 'rope_freqs.weight'));
});

test('without a tokenizer (benchmarks on random weights): a placeholder vocabulary, and llama.cpp still computes as ours', async () => {
  const { config, weights } = loadHfModel(baseModelDir);
  const file = join(work, 'no-tokenizer.gguf');
  writeModelGguf({ config, weights, tokenizerDir: null, name: 'bench' }, file, 'f32');
  const g = readGguf(file);
  const tokens = g.metadata.get('tokenizer.ggml.tokens') as string[];
  assert.equal(tokens.length, 704);
  assert.equal(new Set(tokens).size, 704);
  assert.deepEqual(g.metadata.get('tokenizer.ggml.merges'), []);
  const base = await loadModelForInference({ baseModelDir }, { intraOpNumThreads: 1 });
  try {
    const prompt = [678, 300, 301, 302, 400, 12, 678];
    const expected = (await base.generate(prompt, { maxTokens: 12, temperature: 0 })).tokenIds;
    const got = await llamaCppGreedy(file, [prompt], [expected.length], base.eosTokenIds);
    assert.deepEqual(got.outputs[0], expected);
    await assertLogprobsMatchLlamaCpp(file, base, [prompt], [expected]);
  } finally {
    await base.release();
  }
});

test('add_bos_token follows the tokenizer: a post-processor that prepends BOS (as Llama 3 does) turns it on', () => {
  const dir = variant('bos-template', {}, () => {});
  const tokenizer = JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8'));
  tokenizer.post_processor = {
    type: 'TemplateProcessing',
    single: [{ SpecialToken: { id: '<|endoftext|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
    pair: [{ SpecialToken: { id: '<|endoftext|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
    special_tokens: { '<|endoftext|>': { id: '<|endoftext|>', ids: [677], tokens: ['<|endoftext|>'] } },
  };
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tokenizer));
  const config = JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8'));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ ...config, bos_token: '<|endoftext|>' }));
  const file = join(work, 'bos.gguf');
  exportGguf(dir, file, { dtype: 'f16' });
  assert.equal(readGguf(file).metadata.get('tokenizer.ggml.add_bos_token'), true);
  assert.equal(readGguf(join(work, 'linear.gguf')).metadata.get('tokenizer.ggml.add_bos_token'), false);
});
