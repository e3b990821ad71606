// Hugging Face `config.json` → the engine's model description.
// Llama, Qwen2 and Mistral share one decoder shape (RMSNorm, RoPE, GQA, SwiGLU); they differ in
// qkv bias (Qwen2), embedding tying and RoPE scaling, which is what ModelConfig records.

export type Architecture = 'llama' | 'qwen2' | 'mistral';

export type RopeScaling =
  | {
      type: 'llama3';
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositionEmbeddings: number;
    }
  | { type: 'linear'; factor: number };

export interface ModelConfig {
  architecture: Architecture;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  tieWordEmbeddings: boolean;
  /** Bias on q/k/v projections (Qwen2). */
  attentionBias: boolean;
  /** Bias on o_proj (Llama's `attention_bias` covers it too; Qwen2 has none there). */
  outputBias: boolean;
  /** Bias on gate/up/down projections (Llama's `mlp_bias`). */
  mlpBias: boolean;
  maxPositionEmbeddings: number;
  /** Mistral's sliding window; null where attention is full. */
  slidingWindow: number | null;
  bosTokenId: number | null;
  /** One id or several (Llama 3 instruct lists three); [] when config.json names none. */
  eosTokenId: number | number[];
  padTokenId: number | null;
  torchDtype: string;
}

const ARCHITECTURES: Record<string, Architecture> = {
  LlamaForCausalLM: 'llama',
  Qwen2ForCausalLM: 'qwen2',
  MistralForCausalLM: 'mistral',
};

type Json = Record<string, unknown>;

function num(json: Json, key: string, fallback?: number): number {
  const value = json[key];
  if (typeof value === 'number' && Number.isFinite(value)) return value;
  if (value === undefined || value === null) {
    if (fallback !== undefined) return fallback;
    throw new Error(`config.json: "${key}" is required`);
  }
  throw new Error(`config.json: "${key}" must be a number, got ${JSON.stringify(value)}`);
}

function optionalTokenId(value: unknown): number | null {
  return typeof value === 'number' ? value : null;
}

function parseRopeScaling(raw: unknown, maxPositionEmbeddings: number): RopeScaling | null {
  if (raw === undefined || raw === null) return null;
  if (typeof raw !== 'object') throw new Error('config.json: "rope_scaling" must be an object or null');
  const scaling = raw as Json;
  // transformers renamed `type` to `rope_type`; both appear in published configs.
  const type = (scaling.rope_type ?? scaling.type) as unknown;
  if (type === 'default') return null;
  if (type === 'llama3') {
    return {
      type: 'llama3',
      factor: num(scaling, 'factor'),
      lowFreqFactor: num(scaling, 'low_freq_factor', 1),
      highFreqFactor: num(scaling, 'high_freq_factor', 4),
      originalMaxPositionEmbeddings: num(
        scaling,
        'original_max_position_embeddings',
        maxPositionEmbeddings,
      ),
    };
  }
  if (type === 'linear') return { type: 'linear', factor: num(scaling, 'factor') };
  throw new Error(`config.json: rope_scaling type ${JSON.stringify(type)} is not supported (llama3, linear)`);
}

/** Parse a Hugging Face `config.json` object for a supported causal LM. */
export function parseHfConfig(json: unknown): ModelConfig {
  if (typeof json !== 'object' || json === null) throw new Error('config.json must be a JSON object');
  const config = json as Json;
  const declared = Array.isArray(config.architectures) ? (config.architectures as unknown[]) : [];
  const archName = declared.find((a): a is string => typeof a === 'string' && a in ARCHITECTURES);
  let architecture: Architecture | undefined = archName ? ARCHITECTURES[archName] : undefined;
  if (!architecture && declared.length === 0) {
    const modelType = config.model_type;
    if (modelType === 'llama' || modelType === 'qwen2' || modelType === 'mistral') architecture = modelType;
  }
  if (!architecture) {
    const what = declared.length ? declared.join(', ') : String(config.model_type ?? 'unknown');
    throw new Error(
      `Unsupported model architecture ${what}: supported are ${Object.keys(ARCHITECTURES).join(', ')}`,
    );
  }

  const hiddenSize = num(config, 'hidden_size');
  const numHeads = num(config, 'num_attention_heads');
  const numKvHeads = num(config, 'num_key_value_heads', numHeads);
  // Some configs (Mistral Nemo, Qwen3) set head_dim explicitly, not hidden/heads; null means derived.
  const headDim = typeof config.head_dim === 'number' ? config.head_dim : hiddenSize / numHeads;
  if (!Number.isInteger(headDim)) throw new Error(`config.json: hidden_size ${hiddenSize} is not divisible by ${numHeads} heads`);
  if (numHeads % numKvHeads !== 0) {
    throw new Error(`config.json: num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`);
  }
  const maxPositionEmbeddings = num(config, 'max_position_embeddings', 2048);

  const llamaAttentionBias = architecture === 'llama' && config.attention_bias === true;
  const slidingWindow =
    architecture === 'mistral' && typeof config.sliding_window === 'number' ? config.sliding_window : null;

  return {
    architecture,
    vocabSize: num(config, 'vocab_size'),
    hiddenSize,
    intermediateSize: num(config, 'intermediate_size'),
    numLayers: num(config, 'num_hidden_layers'),
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: num(config, 'rms_norm_eps', 1e-6),
    ropeTheta: num(config, 'rope_theta', 10000),
    ropeScaling: parseRopeScaling(config.rope_scaling, maxPositionEmbeddings),
    // LlamaConfig, Qwen2Config and MistralConfig all default tie_word_embeddings to false.
    tieWordEmbeddings: config.tie_word_embeddings === true,
    attentionBias: architecture === 'qwen2' || llamaAttentionBias,
    outputBias: llamaAttentionBias,
    mlpBias: architecture === 'llama' && config.mlp_bias === true,
    maxPositionEmbeddings,
    slidingWindow,
    bosTokenId: optionalTokenId(config.bos_token_id),
    eosTokenId: Array.isArray(config.eos_token_id)
      ? (config.eos_token_id as unknown[]).filter((x): x is number => typeof x === 'number')
      : (optionalTokenId(config.eos_token_id) ?? []),
    padTokenId: optionalTokenId(config.pad_token_id),
    torchDtype: typeof config.torch_dtype === 'string' ? config.torch_dtype : typeof config.dtype === 'string' ? config.dtype : 'float32',
  };
}

/** The ids that end generation, as a list. */
export function eosTokenIds(config: ModelConfig): number[] {
  return Array.isArray(config.eosTokenId) ? config.eosTokenId : [config.eosTokenId];
}
