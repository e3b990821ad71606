// Exports of the architectures beside Llama, each a random tiny model (bf16, real names and config
// keys) with a random LoRA adapter on every projection: the PEFT adapter carries PEFT's module
// names, the merged folder loads back to the same logits, and the GGUF file carries llama.cpp's
// architecture and tensor names and runs in node-llama-cpp like ours: the same greedy tokens and
// log-probabilities of its top tokens within LOGPROB_TOLERANCE at every position.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportGguf, exportMerged, exportPeft } from '../../../src/engine/export/index.ts';
import { readGguf } from '../../../src/engine/io/gguf.ts';
import { loadHfModel } from '../../../src/engine/io/hf-model.ts';
import { ALL_LINEAR } from '../../../src/engine/models/lora.ts';
import { chatPrompt, loadModelForInference, type InferenceModel } from '../../../src/engine/infer/model.ts';
import { SeededRandom } from '../../../src/engine/data/random.ts';
import { maxAbsDiff, writeAdapter } from '../infer/fixtures.ts';
import { writeTinyModel, type TinyArchitecture } from '../models/tiny-models.ts';
import { assertLogprobsMatchLlamaCpp, llamaCppGreedy } from './llama-cpp.ts';

const work = mkdtempSync(join(tmpdir(), 'tuneforge-export-architectures-'));
test.after(() => rmSync(work, { recursive: true, force: true }));

interface Exported {
  dir: string;
  adapterDir: string;
  model: InferenceModel;
  gguf: ReturnType<typeof readGguf>;
  ggufFile: string;
}

/** A tiny `architecture` model with a random adapter on `targets`, loaded (merged) and exported as f32 GGUF. */
async function tinyWithAdapter(architecture: TinyArchitecture, targets: string[], patch: Record<string, unknown> = {}): Promise<Exported> {
  const dir = writeTinyModel(join(work, architecture), architecture, 4, patch);
  const adapterDir = join(work, `${architecture}-adapter`);
  const rng = new SeededRandom(9);
  writeAdapter(loadHfModel(dir).config, adapterDir, (_name, n) => new Float32Array(n).map(() => (rng.next() * 2 - 1) * 0.3), 7, targets);
  const model = await loadModelForInference({ baseModelDir: dir, adapterDir }, { intraOpNumThreads: 1 });
  const ggufFile = join(work, `${architecture}.gguf`);
  // Not named after the architecture: llama.cpp fails to load the vocabulary of a phi3 GGUF whose
  // general.name contains "phi3" (it expects Phi-3's own special tokens then).
  exportGguf(dir, ggufFile, { dtype: 'f32', adapterDir, name: 'tiny-random-model' });
  return { dir, adapterDir, model, gguf: readGguf(ggufFile), ggufFile };
}

/**
 * llama.cpp generates our greedy tokens and gives our log-probabilities, on a chat prompt and a raw
 * one (`greedy` false: the log-probabilities only, where a near tie may flip a greedy token).
 */
async function assertLlamaCppAgrees({ model, ggufFile }: Exported, greedy = true) {
  const prompts = [chatPrompt(model, [{ role: 'user', content: 'Where is the treasure buried, captain?' }]), model.tokenizer.encode('Arr, matey! The sea is')];
  const expected: number[][] = [];
  for (const prompt of prompts) expected.push((await model.generate(prompt, { maxTokens: 16, temperature: 0 })).tokenIds);
  assert.ok(expected.every((e) => e.length >= 8), `no early end of text: ${expected.map((e) => e.length)} tokens`);
  if (greedy) assert.deepEqual((await llamaCppGreedy(ggufFile, prompts, expected.map((e) => e.length), model.eosTokenIds)).outputs, expected);
  await assertLogprobsMatchLlamaCpp(ggufFile, model, prompts, expected);
}

/** The PEFT export names PEFT's modules, and the merged folder computes what the merged model does. */
async function assertPeftAndMerged({ dir, adapterDir, model }: Exported, architecture: string, targetModules: string[]) {
  const peft = join(work, `${architecture}-peft`);
  exportPeft(adapterDir, peft);
  const adapterConfig = JSON.parse(readFileSync(join(peft, 'adapter_config.json'), 'utf8'));
  assert.deepEqual(adapterConfig.target_modules, [...targetModules].sort());
  const merged = join(work, `${architecture}-merged`);
  exportMerged(dir, adapterDir, merged, 'f32');
  assert.deepEqual(JSON.parse(readFileSync(join(merged, 'config.json'), 'utf8')).architectures, JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')).architectures);
  const reloaded = await loadModelForInference({ baseModelDir: merged }, { intraOpNumThreads: 1 });
  try {
    const ids = [677, 678, 300, 301, 302, 400, 12];
    assert.ok(maxAbsDiff(await reloaded.nextTokenLogits(ids), await model.nextTokenLogits(ids)) < 1e-4);
  } finally {
    await reloaded.release();
  }
}

test('Qwen3: GGUF as llama.cpp names it (qwen3, attn_q_norm/attn_k_norm, key_length), llama.cpp computes as ours; PEFT and merged exports', async () => {
  const exported = await tinyWithAdapter('qwen3', ALL_LINEAR);
  try {
    const m = exported.gguf.metadata;
    assert.equal(m.get('general.architecture'), 'qwen3');
    assert.equal(m.get('qwen3.attention.key_length'), 32);
    assert.equal(m.get('qwen3.attention.value_length'), 32);
    assert.equal(m.get('qwen3.rope.freq_base'), 1000000);
    const names = exported.gguf.tensors.map((t) => t.name);
    for (const n of ['attn_q', 'attn_k', 'attn_v', 'attn_output', 'attn_q_norm', 'attn_k_norm', 'ffn_gate', 'ffn_up', 'ffn_down', 'attn_norm', 'ffn_norm']) {
      assert.ok(names.includes(`blk.1.${n}.weight`), n);
    }
    assert.ok(!names.includes('output.weight'), 'tied embeddings: no output tensor');
    assert.deepEqual(exported.gguf.tensors.find((t) => t.name === 'blk.0.attn_q_norm.weight')!.dims, [32]);
    await assertLlamaCppAgrees(exported);
    await assertPeftAndMerged(exported, 'qwen3', ALL_LINEAR);
  } finally {
    await exported.model.release();
  }
});

test('SmolLM3: GGUF as llama.cpp names it (smollm3, Q/K permuted as for llama), llama.cpp (NoPE every 4th layer) computes as ours; PEFT and merged exports', async () => {
  const exported = await tinyWithAdapter('smollm3', ALL_LINEAR);
  try {
    assert.equal(exported.gguf.metadata.get('general.architecture'), 'smollm3');
    assert.equal(exported.gguf.metadata.get('smollm3.block_count'), 4);
    const names = exported.gguf.tensors.map((t) => t.name);
    for (const n of ['attn_q', 'attn_k', 'attn_v', 'attn_output', 'ffn_gate', 'ffn_up', 'ffn_down', 'attn_norm', 'ffn_norm']) {
      assert.ok(names.includes(`blk.3.${n}.weight`), n);
    }
    await assertLlamaCppAgrees(exported);
    await assertPeftAndMerged(exported, 'smollm3', ALL_LINEAR);
  } finally {
    await exported.model.release();
  }
  // llama.cpp has no key for other NoPE patterns: such a model is refused rather than exported wrong.
  const other = writeTinyModel(join(work, 'smollm3-other-pattern'), 'smollm3', 4, { no_rope_layers: [1, 0, 1, 1] });
  assert.throws(() => exportGguf(other, join(work, 'other.gguf'), { dtype: 'f32' }), /every 4th layer/);
});

test('Phi-3: GGUF as llama.cpp names it (phi3, attn_qkv, ffn_up holding gate|up, LongRoPE factors, partial rope dimension), llama.cpp computes as ours; PEFT and merged exports', async () => {
  const targets = ['qkv_proj', 'o_proj', 'gate_up_proj', 'down_proj'];
  const exported = await tinyWithAdapter('phi3', targets);
  try {
    const m = exported.gguf.metadata;
    assert.equal(m.get('general.architecture'), 'phi3');
    assert.equal(m.get('phi3.rope.dimension_count'), 12);
    assert.equal(m.get('phi3.rope.scaling.original_context_length'), 4096);
    assert.ok(Math.abs(Number(m.get('phi3.rope.scaling.attn_factor')) - Math.sqrt(1 + Math.log(32) / Math.log(4096))) < 1e-6);
    const names = exported.gguf.tensors.map((t) => t.name);
    for (const n of ['attn_qkv', 'attn_output', 'ffn_up', 'ffn_down', 'attn_norm', 'ffn_norm']) assert.ok(names.includes(`blk.1.${n}.weight`), n);
    assert.ok(!names.some((n) => /attn_q\.|ffn_gate/.test(n)));
    assert.deepEqual(exported.gguf.tensors.find((t) => t.name === 'blk.0.ffn_up.weight')!.dims, [64, 320]);
    assert.deepEqual([...exported.gguf.readTensor('rope_factors_short.weight')].map((v) => Math.round(v * 10) / 10), [1, 1.1, 1.3, 1.8, 2.5, 3.2]);
    await assertLlamaCppAgrees(exported, false);
    await assertPeftAndMerged(exported, 'phi3', targets);
  } finally {
    await exported.model.release();
  }
});
