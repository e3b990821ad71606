// Tiny random Gemma 2 and Gemma 3 text models as Hugging Face folders: config.json with the real
// config keys (explicit head_dim unlike hidden / heads, query_pre_attn_scalar unlike head_dim, a
// sliding window of 4 positions so that prompts longer than it exercise the local layers),
// model.safetensors in bfloat16 with the real tensor names and shapes, and tiny-llama's byte-level
// BPE tokenizer and ChatML template (Gemma's own SentencePiece vocabulary is 256k tokens).
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseHfConfig } from '../../../src/engine/models/config.ts';
import { llamaWeightShapes } from '../../../src/engine/models/llama.ts';
import { saveHfModel } from '../../../src/engine/io/hf-model.ts';
import { SeededRandom } from '../../../src/engine/data/random.ts';

const tinyLlamaDir = new URL('../../../models/tiny-llama/', import.meta.url).pathname;
const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json'];

const shared = {
  vocab_size: 704,
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 4,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  head_dim: 32,
  query_pre_attn_scalar: 24,
  hidden_activation: 'gelu_pytorch_tanh',
  max_position_embeddings: 512,
  rms_norm_eps: 1e-6,
  sliding_window: 4,
  tie_word_embeddings: true,
  bos_token_id: 677,
  eos_token_id: 679,
  pad_token_id: 677,
  attention_bias: false,
  attention_dropout: 0,
  torch_dtype: 'bfloat16',
  transformers_version: '4.53.0',
  use_cache: true,
};

/** Gemma 2: local and global layers alternate; scores capped at 5 and logits at 3 (small enough to bite on random weights). */
export const GEMMA2_CONFIG: Record<string, unknown> = {
  ...shared,
  architectures: ['Gemma2ForCausalLM'],
  model_type: 'gemma2',
  rope_theta: 10000,
  attn_logit_softcapping: 5,
  final_logit_softcapping: 3,
};

/**
 * Gemma 3 text: every third layer global (sliding_window_pattern 3: layers 0, 1, 3 local), q/k
 * norms, global RoPE base 1e6 with linear scaling, local layers at rope_local_base_freq 10000.
 */
export const GEMMA3_CONFIG: Record<string, unknown> = {
  ...shared,
  architectures: ['Gemma3ForCausalLM'],
  model_type: 'gemma3_text',
  rope_theta: 1000000,
  rope_local_base_freq: 10000,
  rope_scaling: { rope_type: 'linear', factor: 4 },
  sliding_window_pattern: 3,
  attn_logit_softcapping: null,
  final_logit_softcapping: null,
};

/**
 * Random weights for `rawConfig`: projections and embeddings U(±0.3) (Gemma scales embeddings by
 * √hidden, so ±0.3 already makes a lively residual stream), norm weights U(±0.3) around 0, as
 * Gemma stores them (the norm scales by 1 + w).
 */
export function randomGemmaWeights(rawConfig: Record<string, unknown>, seed: number) {
  const cfg = parseHfConfig(rawConfig);
  const r = new SeededRandom(seed);
  const weights = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, shape] of llamaWeightShapes(cfg)) {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1)).map(() => (r.next() * 2 - 1) * 0.3);
    weights.set(name, { shape, data });
  }
  return weights;
}

/** Writes a tiny Gemma folder (bfloat16 weights) to `dir` and returns `dir`. */
export function writeTinyGemma(dir: string, rawConfig: Record<string, unknown>, seed = 3): string {
  saveHfModel(dir, rawConfig, randomGemmaWeights(rawConfig, seed), 'BF16');
  for (const file of TOKENIZER_FILES) copyFileSync(join(tinyLlamaDir, file), join(dir, file));
  return dir;
}
