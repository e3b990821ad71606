// Hugging Face `config.json` → the engine's model description.
// Llama, Qwen2, Qwen3, Mistral, Gemma 2 and Gemma 3 share one decoder shape (RMSNorm, RoPE, GQA, a
// gated MLP); they differ in qkv bias (Qwen2), embedding tying, RoPE scaling, and features (see
// DecoderFeatures), which is what ModelConfig records. Both the training graph (llama.ts) and the
// KV-cache decoder (infer/decoder.ts) read these switches; neither knows architecture names.

export type Architecture = 'llama' | 'qwen2' | 'qwen3' | 'smollm3' | 'phi3' | 'mistral' | 'gemma2' | 'gemma3';

export type RopeScaling =
  | {
      type: 'llama3';
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositionEmbeddings: number;
    }
  | { type: 'linear'; factor: number }
  | {
      /**
       * Phi-3's LongRoPE: each rotary frequency divided by its factor (the short ones within
       * originalMaxPositionEmbeddings; see ropeTables), and cos/sin scaled by attentionFactor.
       */
      type: 'longrope';
      shortFactor: number[];
      longFactor: number[];
      attentionFactor: number;
      originalMaxPositionEmbeddings: number;
    };

/** Switches of the decoder beyond Llama's; LLAMA_FEATURES turns each off. */
export interface DecoderFeatures {
  /** RMSNorms scale by (1 + w), so a zero weight is the identity (Gemma). */
  normAddsOne: boolean;
  /** The gated MLP's activation: SiLU (SwiGLU) or tanh-approximated GELU (Gemma's gelu_pytorch_tanh). */
  hiddenActivation: 'silu' | 'gelu_tanh';
  /** Embeddings multiplied by √hidden_size (Gemma). */
  scaleEmbeddings: boolean;
  /**
   * Norms on both sides of attention and of the MLP (Gemma 2/3): input_layernorm → attention →
   * post_attention_layernorm → residual, pre_feedforward_layernorm → MLP →
   * post_feedforward_layernorm → residual. Otherwise post_attention_layernorm is the MLP's input norm.
   */
  sandwichNorms: boolean;
  /** Per-head RMSNorm of q and k (q_norm, k_norm [head_dim]) before RoPE (Qwen3, Gemma 3). */
  qkNorm: boolean;
  /** Scores scaled by this to the −½ instead of head_dim (Gemma's query_pre_attn_scalar); null = head_dim. */
  queryPreAttnScalar: number | null;
  /** Scores capped as c·tanh(s/c) after scaling, before the mask (Gemma 2's attn_logit_softcapping); null = none. */
  attentionSoftcap: number | null;
  /** Logits capped as c·tanh(z/c) (Gemma 2's final_logit_softcapping); null = none. */
  finalSoftcap: number | null;
  /**
   * Which layers attend within slidingWindow (Gemma's local layers); null = every layer when
   * slidingWindow is set (Mistral).
   */
  slidingLayers: boolean[] | null;
  /** RoPE base of the sliding-window layers, which then take no rope_scaling (Gemma 3's rope_local_base_freq); null = rope_theta. */
  localRopeTheta: number | null;
  /** Which layers apply RoPE: SmolLM3's no_rope_layers (1 = RoPE, 0 = a NoPE layer); null = every layer. */
  ropeLayers: boolean[] | null;
  /** Dimensions of each head that RoPE rotates, the first ones (Phi-3's partial_rotary_factor × head_dim); the rest pass. */
  rotaryDim: number | null;
  /** q|k|v and gate|up stored as one matrix each (Phi-3's qkv_proj, gate_up_proj: gate rows first). */
  fusedProjections: boolean;
}

export const LLAMA_FEATURES: DecoderFeatures = {
  normAddsOne: false,
  hiddenActivation: 'silu',
  scaleEmbeddings: false,
  sandwichNorms: false,
  qkNorm: false,
  queryPreAttnScalar: null,
  attentionSoftcap: null,
  finalSoftcap: null,
  slidingLayers: null,
  localRopeTheta: null,
  ropeLayers: null,
  rotaryDim: null,
  fusedProjections: false,
};

export interface ModelConfig extends DecoderFeatures {
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
  /** Mistral's and Gemma's sliding window (a query sees this many positions, itself included); null where attention is full. */
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
  Qwen3ForCausalLM: 'qwen3',
  Phi3ForCausalLM: 'phi3',
  SmolLM3ForCausalLM: 'smollm3',
  MistralForCausalLM: 'mistral',
  Gemma2ForCausalLM: 'gemma2',
  Gemma3ForCausalLM: 'gemma3',
};

const MODEL_TYPES: Record<string, Architecture> = { llama: 'llama', qwen2: 'qwen2', qwen3: 'qwen3', smollm3: 'smollm3', phi3: 'phi3', mistral: 'mistral', gemma2: 'gemma2', gemma3_text: 'gemma3' };

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

function parseRopeScaling(raw: unknown, maxPositionEmbeddings: number, originalMaxPositionEmbeddings = maxPositionEmbeddings): RopeScaling | null {
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
  if (type === 'longrope') {
    const factors = (key: string) => {
      const list = scaling[key];
      if (!Array.isArray(list) || list.some((f) => typeof f !== 'number')) throw new Error(`config.json: rope_scaling.${key} must be a list of numbers`);
      return list as number[];
    };
    // transformers' _compute_longrope_parameters: √(1 + ln(s) / ln(original)) for s = max / original > 1.
    const ratio = maxPositionEmbeddings / originalMaxPositionEmbeddings;
    const derived = ratio <= 1 ? 1 : Math.sqrt(1 + Math.log(ratio) / Math.log(originalMaxPositionEmbeddings));
    return {
      type: 'longrope',
      shortFactor: factors('short_factor'),
      longFactor: factors('long_factor'),
      attentionFactor: num(scaling, 'attention_factor', derived),
      originalMaxPositionEmbeddings,
    };
  }
  throw new Error(`config.json: rope_scaling type ${JSON.stringify(type)} is not supported (llama3, linear, longrope)`);
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
    if (typeof modelType === 'string' && modelType in MODEL_TYPES) architecture = MODEL_TYPES[modelType];
  }
  if (!architecture) {
    const what = declared.length ? declared.join(', ') : String(config.model_type ?? 'unknown');
    throw new Error(
      `Unsupported model architecture ${what}: supported are ${Object.keys(ARCHITECTURES).join(', ')}`,
    );
  }

  const gemma = architecture === 'gemma2' || architecture === 'gemma3';
  const hiddenSize = num(config, 'hidden_size');
  const numHeads = num(config, 'num_attention_heads');
  const numKvHeads = num(config, 'num_key_value_heads', numHeads);
  // Some configs (Mistral Nemo, Qwen3) set head_dim explicitly, not hidden/heads; null means derived.
  // Gemma2Config and Gemma3TextConfig default it to 256.
  const headDim = typeof config.head_dim === 'number' ? config.head_dim : gemma ? 256 : hiddenSize / numHeads;
  if (!Number.isInteger(headDim)) throw new Error(`config.json: hidden_size ${hiddenSize} is not divisible by ${numHeads} heads`);
  if (numHeads % numKvHeads !== 0) {
    throw new Error(`config.json: num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`);
  }
  const maxPositionEmbeddings = num(config, 'max_position_embeddings', 2048);

  const numLayers = num(config, 'num_hidden_layers');
  // SmolLM3 is Llama with NoPE layers: the same bias switches.
  const llamaLike = architecture === 'llama' || architecture === 'smollm3';
  const llamaAttentionBias = llamaLike && config.attention_bias === true;
  const slidingWindow =
    (architecture === 'mistral' || architecture === 'phi3' || gemma) && typeof config.sliding_window === 'number' ? config.sliding_window : null;
  const features = gemma
    ? gemmaFeatures(config, architecture as 'gemma2' | 'gemma3', numLayers, slidingWindow)
    : {
        ...LLAMA_FEATURES,
        qkNorm: architecture === 'qwen3',
        ropeLayers: architecture === 'smollm3' ? smolLm3RopeLayers(config, numLayers) : null,
        ...(architecture === 'phi3' ? phi3Features(config, headDim) : {}),
      };
  const rope = gemma ? gemmaGlobalRope(config, architecture === 'gemma3' ? 1e6 : 10000) : { theta: num(config, 'rope_theta', 10000), scaling: config.rope_scaling };

  return {
    ...features,
    architecture,
    vocabSize: num(config, 'vocab_size'),
    hiddenSize,
    intermediateSize: num(config, 'intermediate_size'),
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: num(config, 'rms_norm_eps', 1e-6),
    ropeTheta: rope.theta,
    ropeScaling: parseRopeScaling(rope.scaling, maxPositionEmbeddings, num(config, 'original_max_position_embeddings', maxPositionEmbeddings)),
    // LlamaConfig, Qwen2Config, Qwen3Config and MistralConfig default tie_word_embeddings to false, Gemma's to true.
    tieWordEmbeddings: gemma ? config.tie_word_embeddings !== false : config.tie_word_embeddings === true,
    // Qwen3's attention_bias covers q/k/v only (its o_proj has none).
    attentionBias: architecture === 'qwen2' || llamaAttentionBias || (architecture === 'qwen3' && config.attention_bias === true),
    outputBias: llamaAttentionBias,
    mlpBias: llamaLike && config.mlp_bias === true,
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

/** Phi-3 / Phi-4-mini: fused projections, RoPE on the first partial_rotary_factor of each head. */
function phi3Features(config: Json, headDim: number): Pick<DecoderFeatures, 'fusedProjections' | 'rotaryDim'> {
  const rotaryDim = Math.trunc(num(config, 'partial_rotary_factor', 1) * headDim);
  if (rotaryDim % 2 !== 0 || rotaryDim <= 0) throw new Error(`config.json: partial_rotary_factor gives ${rotaryDim} rotary dimensions, not a positive even number`);
  return { fusedProjections: true, rotaryDim: rotaryDim === headDim ? null : rotaryDim };
}

/**
 * SmolLM3's RoPE layers (HF modeling_smollm3: use_rope = no_rope_layers[l], so 1 means RoPE):
 * no_rope_layers, or by default every no_rope_layer_interval-th layer (4) without RoPE.
 */
function smolLm3RopeLayers(config: Json, numLayers: number): boolean[] {
  if (config.use_sliding_window === true) throw new Error('config.json: SmolLM3 with use_sliding_window is not supported');
  if (Array.isArray(config.no_rope_layers)) {
    const flags = config.no_rope_layers as unknown[];
    if (flags.length !== numLayers || flags.some((f) => f !== 0 && f !== 1)) {
      throw new Error('config.json: "no_rope_layers" must hold 1 (RoPE) or 0 (no RoPE) for each layer');
    }
    return flags.map((f) => f === 1);
  }
  const interval = num(config, 'no_rope_layer_interval', 4);
  return Array.from({ length: numLayers }, (_, l) => (l + 1) % interval !== 0);
}

/**
 * Gemma 2 and 3 (HF modeling_gemma2.py / modeling_gemma3.py): (1 + w) norms on both sides of
 * attention and MLP, gelu_pytorch_tanh, embeddings × √hidden, query_pre_attn_scalar, local
 * (sliding-window) layers beside global ones; Gemma 2 caps attention scores and logits, Gemma 3
 * normalises q and k per head and gives its local layers their own RoPE base.
 */
function gemmaFeatures(config: Json, architecture: 'gemma2' | 'gemma3', numLayers: number, slidingWindow: number | null): DecoderFeatures {
  const activation = config.hidden_activation ?? config.hidden_act ?? 'gelu_pytorch_tanh';
  if (activation !== 'gelu_pytorch_tanh' && activation !== 'gelu_tanh') {
    throw new Error(`config.json: hidden_activation ${JSON.stringify(activation)} is not supported (gelu_pytorch_tanh)`);
  }
  const optional = (key: string, fallback: number | null): number | null =>
    config[key] === null ? null : config[key] === undefined ? fallback : num(config, key);
  // Local layers: layer_types when given, else Gemma 2's alternation (even layers local) or Gemma
  // 3's sliding_window_pattern (every n-th layer global), as the HF configs derive layer_types.
  let slidingLayers: boolean[];
  if (Array.isArray(config.layer_types)) {
    const types = config.layer_types as unknown[];
    if (types.length !== numLayers || types.some((t) => t !== 'sliding_attention' && t !== 'full_attention')) {
      throw new Error('config.json: "layer_types" must list "sliding_attention" or "full_attention" for each layer');
    }
    slidingLayers = types.map((t) => t === 'sliding_attention');
  } else {
    const pattern = architecture === 'gemma2' ? 2 : num(config, 'sliding_window_pattern', 6);
    slidingLayers = Array.from({ length: numLayers }, (_, l) => (l + 1) % pattern !== 0);
  }
  const ropeParameters = config.rope_parameters as Json | undefined;
  const localRope = (ropeParameters?.sliding_attention as Json | undefined)?.rope_theta ?? config.rope_local_base_freq;
  return {
    normAddsOne: true,
    hiddenActivation: 'gelu_tanh',
    scaleEmbeddings: true,
    sandwichNorms: true,
    qkNorm: architecture === 'gemma3',
    queryPreAttnScalar: num(config, 'query_pre_attn_scalar', 256),
    attentionSoftcap: optional('attn_logit_softcapping', architecture === 'gemma2' ? 50 : null),
    finalSoftcap: optional('final_logit_softcapping', architecture === 'gemma2' ? 30 : null),
    slidingLayers: slidingWindow === null ? null : slidingLayers,
    localRopeTheta: architecture === 'gemma3' ? (typeof localRope === 'number' ? localRope : 10000) : null,
    ropeLayers: null,
    rotaryDim: null,
    fusedProjections: false,
  };
}

/** Gemma's global RoPE: rope_theta and rope_scaling, or transformers 5's rope_parameters.full_attention. */
function gemmaGlobalRope(config: Json, defaultTheta: number): { theta: number; scaling: unknown } {
  const full = (config.rope_parameters as Json | undefined)?.full_attention as Json | undefined;
  if (full) return { theta: num(full, 'rope_theta', defaultTheta), scaling: full };
  return { theta: num(config, 'rope_theta', defaultTheta), scaling: config.rope_scaling };
}

/** Scale of the attention scores: head_dim^−½, or query_pre_attn_scalar^−½. */
export function attentionScale(cfg: ModelConfig): number {
  return 1 / Math.sqrt(cfg.queryPreAttnScalar ?? cfg.headDim);
}

/** Layer l's sliding window, or null where it attends to every earlier position. */
export function layerWindow(cfg: ModelConfig, l: number): number | null {
  return cfg.slidingWindow !== null && (cfg.slidingLayers?.[l] ?? true) ? cfg.slidingWindow : null;
}

/** How many of each head's dimensions RoPE rotates (the first ones). */
export function ropeDim(cfg: ModelConfig): number {
  return cfg.rotaryDim ?? cfg.headDim;
}

/** Whether layer l rotates q and k at all (SmolLM3's NoPE layers do not). */
export function usesRope(cfg: ModelConfig, l: number): boolean {
  return cfg.ropeLayers?.[l] ?? true;
}

/** Whether layer l uses the local RoPE (localRopeTheta, no scaling) rather than the global one. */
export function usesLocalRope(cfg: ModelConfig, l: number): boolean {
  return cfg.localRopeTheta !== null && layerWindow(cfg, l) !== null;
}

/** The ids that end generation, as a list. */
export function eosTokenIds(config: ModelConfig): number[] {
  return Array.isArray(config.eosTokenId) ? config.eosTokenId : [config.eosTokenId];
}
