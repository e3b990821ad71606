// Random tiny models of each supported architecture as Hugging Face folders: config.json with the
// keys the published models' configs have (scaled down), bf16 safetensors with the real tensor
// names and shapes, and the bundled tiny-llama's tokenizer and ChatML template (vocabulary 704).
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseHfConfig } from '../../../src/engine/models/config.ts';
import { llamaWeightShapes } from '../../../src/engine/models/llama.ts';
import { saveHfModel } from '../../../src/engine/io/hf-model.ts';
import type { HostTensor } from '../../../src/engine/io/safetensors.ts';
import { SeededRandom } from '../../../src/engine/data/random.ts';

export const TINY_LLAMA_DIR = new URL('../../../models/tiny-llama/', import.meta.url).pathname;
const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json'];

/** tiny-llama's special token ids, which the copied tokenizer defines. */
const TOKENS = { bos_token_id: 677, eos_token_id: 679, vocab_size: 704 };

/** config.json of each architecture: the published config's keys (Qwen3-0.6B, SmolLM3-3B, Phi-4-mini), tiny sizes. */
export const TINY_CONFIGS = {
  // Qwen3-0.6B's keys; head_dim 32 while hidden / heads = 16, as Qwen3 sets it apart from the width.
  qwen3: {
    architectures: ['Qwen3ForCausalLM'], model_type: 'qwen3', attention_bias: false, attention_dropout: 0.0,
    head_dim: 32, hidden_act: 'silu', hidden_size: 64, initializer_range: 0.02, intermediate_size: 160,
    max_position_embeddings: 512, max_window_layers: 2, num_attention_heads: 4, num_hidden_layers: 2,
    num_key_value_heads: 2, rms_norm_eps: 1e-6, rope_scaling: null, rope_theta: 1000000, sliding_window: null,
    tie_word_embeddings: true, torch_dtype: 'bfloat16', transformers_version: '4.51.0', use_cache: true,
    use_sliding_window: false, ...TOKENS,
  },
  // SmolLM3-3B's keys; 4 layers so that one (the 4th, as in SmolLM3-3B's pattern) is a NoPE layer.
  smollm3: {
    architectures: ['SmolLM3ForCausalLM'], model_type: 'smollm3', attention_bias: false, attention_dropout: 0.0,
    hidden_act: 'silu', hidden_size: 64, initializer_range: 0.02, intermediate_size: 160, max_position_embeddings: 512,
    max_window_layers: 4, mlp_bias: false, no_rope_layer_interval: 4, no_rope_layers: [1, 1, 1, 0], num_attention_heads: 4,
    num_hidden_layers: 4, num_key_value_heads: 2, pretraining_tp: 2, rms_norm_eps: 1e-6, rope_scaling: null,
    rope_theta: 5000000.0, sliding_window: null, tie_word_embeddings: true, torch_dtype: 'bfloat16',
    transformers_version: '4.54.0.dev0', use_cache: false, use_sliding_window: false, ...TOKENS,
  },
  // Gemma 2's keys (gemma-2-2b's, scaled down): explicit head_dim unlike hidden / heads,
  // query_pre_attn_scalar unlike head_dim, a sliding window of 4 positions so that prompts longer
  // than it exercise the local layers (even layers), caps at 5 and 3 (small enough to bite on
  // random weights).
  gemma2: {
    architectures: ['Gemma2ForCausalLM'], model_type: 'gemma2', attention_bias: false, attention_dropout: 0.0,
    attn_logit_softcapping: 5, final_logit_softcapping: 3, head_dim: 32, hidden_activation: 'gelu_pytorch_tanh',
    hidden_size: 64, initializer_range: 0.02, intermediate_size: 128, max_position_embeddings: 512,
    num_attention_heads: 4, num_hidden_layers: 4, num_key_value_heads: 2, pad_token_id: 677, query_pre_attn_scalar: 24,
    rms_norm_eps: 1e-6, rope_theta: 10000, sliding_window: 4, tie_word_embeddings: true, torch_dtype: 'bfloat16',
    transformers_version: '4.53.0', use_cache: true, ...TOKENS,
  },
  // Gemma 3 text's keys (gemma-3-1b-it's, scaled down): every third layer global
  // (sliding_window_pattern 3: layers 0, 1, 3 local), q/k norms, global RoPE base 1e6 with linear
  // scaling, local layers at rope_local_base_freq 10000, no caps.
  gemma3: {
    architectures: ['Gemma3ForCausalLM'], model_type: 'gemma3_text', attention_bias: false, attention_dropout: 0.0,
    attn_logit_softcapping: null, final_logit_softcapping: null, head_dim: 32, hidden_activation: 'gelu_pytorch_tanh',
    hidden_size: 64, initializer_range: 0.02, intermediate_size: 128, max_position_embeddings: 512,
    num_attention_heads: 4, num_hidden_layers: 4, num_key_value_heads: 2, pad_token_id: 677, query_pre_attn_scalar: 24,
    rms_norm_eps: 1e-6, rope_local_base_freq: 10000, rope_scaling: { rope_type: 'linear', factor: 4 }, rope_theta: 1000000,
    sliding_window: 4, sliding_window_pattern: 3, tie_word_embeddings: true, torch_dtype: 'bfloat16',
    transformers_version: '4.53.0', use_cache: true, ...TOKENS,
  },
  // Phi-4-mini's keys: fused qkv_proj and gate_up_proj, RoPE on 75% of each head (12 of 16
  // dimensions here), LongRoPE with a factor per rotary frequency, the window longer than any context.
  phi3: {
    architectures: ['Phi3ForCausalLM'], model_type: 'phi3', attention_bias: false, attention_dropout: 0.0, embd_pdrop: 0.0,
    full_attn_mod: 1, hidden_act: 'silu', hidden_size: 64, initializer_range: 0.02, intermediate_size: 160,
    interpolate_factor: 1, lm_head_bias: false, max_position_embeddings: 131072, mlp_bias: false, num_attention_heads: 4,
    num_hidden_layers: 2, num_key_value_heads: 2, original_max_position_embeddings: 4096, partial_rotary_factor: 0.75,
    resid_pdrop: 0.0, rms_norm_eps: 1e-5,
    rope_scaling: { type: 'longrope', short_factor: [1, 1.1, 1.3, 1.8, 2.5, 3.2], long_factor: [1, 1.5, 2.5, 5, 10, 20] },
    rope_theta: 10000.0, sliding_window: 262144, tie_word_embeddings: true, torch_dtype: 'bfloat16',
    transformers_version: '4.45.0', use_cache: true, ...TOKENS,
  },
} satisfies Record<string, Record<string, unknown>>;

export type TinyArchitecture = keyof typeof TINY_CONFIGS;

/**
 * Writes a random model of `architecture` to `dir` (config fields patched by `patch`). Matrices are
 * N(0, 0.15²) (larger than an initialisation, so every layer moves the logits), norms 1 ± 0.2
 * (Gemma's 0 ± 0.2: its norms scale by 1 + w).
 */
export function writeTinyModel(dir: string, architecture: TinyArchitecture, seed = 1, patch: Record<string, unknown> = {}): string {
  const rawConfig = { ...TINY_CONFIGS[architecture], ...patch };
  const config = parseHfConfig(rawConfig);
  const rng = new SeededRandom(seed);
  const weights = new Map<string, HostTensor>();
  for (const [name, shape] of llamaWeightShapes(config)) {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    const isNorm = name.endsWith('norm.weight');
    const normCenter = config.normAddsOne ? 0 : 1;
    for (let i = 0; i < data.length; i++) data[i] = isNorm ? normCenter + (rng.next() - 0.5) * 0.4 : rng.nextNormal() * 0.15;
    weights.set(name, { shape, data });
  }
  saveHfModel(dir, rawConfig, weights, 'BF16');
  for (const file of TOKENIZER_FILES) copyFileSync(join(TINY_LLAMA_DIR, file), join(dir, file));
  return dir;
}
