// A Hugging Face Llama-family folder → a GGUF file llama.cpp loads, unquantized (F32 or F16), laid
// out as llama.cpp's own convert_hf_to_gguf.py lays it out:
//   - tensor names: embed_tokens → token_embd, layers.N.self_attn.{q,k,v,o}_proj → blk.N.attn_{q,k,v,output},
//     mlp.{gate,up,down}_proj → blk.N.ffn_{gate,up,down}, input/post_attention_layernorm →
//     blk.N.{attn,ffn}_norm, norm → output_norm, lm_head → output (absent when tied);
//   - Q and K rows of Llama/Mistral permuted from HF's rotate-half RoPE layout (each head's first half
//     of dimensions pairs with its second half) to GGML's interleaved layout (pairs of adjacent rows):
//     within a head, row s·(d/2) + i moves to 2i + s (SmolLM3 too, its NoPE layers every 4th
//     as llama.cpp's smollm3 assumes). Qwen2 and Qwen3 use llama.cpp's NEOX RoPE,
//     which is rotate-half already, so they are not permuted (Qwen3's q_norm/k_norm → attn_{q,k}_norm);
//   - Phi-3 (llama.cpp's phi3, NEOX RoPE over rope.dimension_count = the partial rotary dims): the fused
//     qkv_proj → attn_qkv and gate_up_proj → ffn_up as they are, LongRoPE's factor lists as
//     rope_factors_long/short.weight with the original context length and attention factor;
//   - Gemma 2/3 (llama.cpp's gemma2/gemma3, NEOX RoPE, so not permuted either): the sandwich norms
//     post_attention_layernorm → post_attention_norm, pre_feedforward_layernorm → ffn_norm,
//     post_feedforward_layernorm → post_ffw_norm, q_norm/k_norm → attn_{q,k}_norm; every norm weight
//     stored as 1 + w (llama.cpp multiplies by the weight); soft caps, the sliding window, its layer
//     period and Gemma 3's local RoPE base as metadata; no output tensor (the head is tied);
//   - 1-D tensors (norms, biases) stay F32 when the rest is F16, as the converter keeps them;
//   - the tokenizer as "gpt2" (byte-level BPE): tokens, token types, merges, special ids, the
//     pre-tokenizer name llama.cpp knows, and the chat template.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ModelConfig } from '../models/config.ts';
import { attentionScale, eosTokenIds, layerWindow, ropeDim, usesRope } from '../models/config.ts';
import type { HostTensor } from '../io/safetensors.ts';
import { loadTokenizer, readTokenizerConfig } from '../data/tokenizer.ts';
import { GgmlType, GgufType, gguf, writeGguf, type GgufTensor, type GgufValue } from '../io/gguf.ts';

export type GgufDtype = 'f32' | 'f16';

type Json = Record<string, any>;

/** llama.cpp's token types. */
const TOKEN_TYPE = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

type GgufArchitecture = 'llama' | 'qwen2' | 'qwen3' | 'smollm3' | 'phi3' | 'gemma2' | 'gemma3';

/** GGUF architecture name: llama.cpp runs Mistral as llama. */
function ggufArchitecture(config: ModelConfig): GgufArchitecture {
  return config.architecture === 'mistral' ? 'llama' : config.architecture;
}

/**
 * HF's rotate-half → GGML's interleaved rows, per head (as the converter's `permute`): reshape the
 * [heads·d, cols] matrix to [heads, 2, d/2, cols], swap axes 1 and 2, flatten back. Also for biases
 * (cols = 1).
 */
export function permuteForGgmlRope(data: Float32Array, rows: number, heads: number): Float32Array {
  const cols = data.length / rows;
  const headDim = rows / heads;
  if (!Number.isInteger(cols) || !Number.isInteger(headDim) || headDim % 2 !== 0) {
    throw new Error(`gguf export: cannot permute ${rows} rows into ${heads} heads`);
  }
  const half = headDim / 2;
  const out = new Float32Array(data.length);
  for (let h = 0; h < heads; h++) {
    for (let s = 0; s < 2; s++) {
      for (let i = 0; i < half; i++) {
        const from = (h * headDim + s * half + i) * cols;
        const to = (h * headDim + 2 * i + s) * cols;
        out.set(data.subarray(from, from + cols), to);
      }
    }
  }
  return out;
}

const LAYER_TENSORS: Record<string, string> = {
  'self_attn.q_proj': 'attn_q',
  'self_attn.k_proj': 'attn_k',
  'self_attn.v_proj': 'attn_v',
  'self_attn.o_proj': 'attn_output',
  'self_attn.qkv_proj': 'attn_qkv', // Phi-3's fused q|k|v
  'mlp.gate_up_proj': 'ffn_up', // Phi-3's fused gate|up: llama.cpp's phi3 splits its ffn_up in two
  'mlp.gate_proj': 'ffn_gate',
  'mlp.up_proj': 'ffn_up',
  'mlp.down_proj': 'ffn_down',
  input_layernorm: 'attn_norm',
  post_attention_layernorm: 'ffn_norm',
  'self_attn.q_norm': 'attn_q_norm',
  'self_attn.k_norm': 'attn_k_norm',
  pre_feedforward_layernorm: 'ffn_norm',
  post_feedforward_layernorm: 'post_ffw_norm',
};

/**
 * The llama.cpp name of a HF tensor, or null for tensors GGUF does not carry (rotary caches). With
 * `sandwichNorms` (Gemma) post_attention_layernorm follows attention instead of preceding the MLP.
 */
export function ggufTensorName(hfName: string, sandwichNorms = false): string | null {
  if (hfName === 'model.embed_tokens.weight') return 'token_embd.weight';
  if (hfName === 'model.norm.weight') return 'output_norm.weight';
  if (hfName === 'lm_head.weight') return 'output.weight';
  const match = /^model\.layers\.(\d+)\.(.+)\.(weight|bias)$/.exec(hfName);
  if (match) {
    if (match[2].endsWith('rotary_emb')) return null;
    const mapped = sandwichNorms && match[2] === 'post_attention_layernorm' ? 'post_attention_norm' : LAYER_TENSORS[match[2]];
    if (!mapped) throw new Error(`gguf export: no llama.cpp name for ${hfName}`);
    return `blk.${match[1]}.${mapped}.${match[3]}`;
  }
  if (hfName.endsWith('rotary_emb.inv_freq')) return null;
  throw new Error(`gguf export: no llama.cpp name for ${hfName}`);
}

/** Which llama.cpp pre-tokenizer matches a tokenizer.json's pre_tokenizer. */
function preTokenizerName(tokenizerJson: Json): string {
  const pre = tokenizerJson.pre_tokenizer as Json | null;
  if (!pre) return 'default';
  if (pre.type === 'ByteLevel' && pre.use_regex !== false) return 'gpt-2';
  if (pre.type === 'Sequence' && Array.isArray(pre.pretokenizers)) {
    const parts = pre.pretokenizers as Json[];
    const types = parts.map((p) => p.type).join(',');
    // SmolLM/SmolLM2: digits split one by one, then GPT-2's byte-level regex.
    if (types === 'Digits,ByteLevel' && parts[0].individual_digits === true && parts[1].use_regex !== false) return 'smollm';
    const regex = String(parts[0]?.pattern?.Regex ?? '');
    if (parts[0]?.type === 'Split') {
      // Qwen2's pattern splits digits singly (\p{N}); Llama 3's groups up to three (\p{N}{1,3}).
      if (regex.includes('\\p{N}{1,3}')) return 'llama-bpe';
      if (regex.includes('[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|')) return 'qwen2';
    }
  }
  return 'default';
}

/** Token list, types and merges as llama.cpp's "gpt2" tokenizer model expects them. */
function tokenizerMetadata(tokenizerDir: string, config: ModelConfig): Map<string, GgufValue> {
  const tokenizerJson = JSON.parse(readFileSync(join(tokenizerDir, 'tokenizer.json'), 'utf8')) as Json;
  const tokenizerConfig = readTokenizerConfig(tokenizerDir) as Json;
  const model = tokenizerJson.model as Json;
  if (model?.type !== 'BPE') throw new Error(`gguf export: tokenizer model ${String(model?.type)} is not supported (byte-level BPE only)`);

  const byId = new Map<number, { text: string; type: number }>();
  for (const [text, id] of Object.entries(model.vocab as Record<string, number>)) byId.set(id, { text, type: TOKEN_TYPE.NORMAL });
  for (const added of (tokenizerJson.added_tokens ?? []) as Json[]) {
    const looksSpecial = /^<\|.*\|>$/.test(added.content);
    byId.set(added.id, { text: added.content, type: added.special || looksSpecial ? TOKEN_TYPE.CONTROL : TOKEN_TYPE.USER_DEFINED });
  }
  const largest = Math.max(...byId.keys());
  const vocabSize = Math.max(config.vocabSize, largest + 1);
  const tokens: string[] = [];
  const types: number[] = [];
  for (let id = 0; id < vocabSize; id++) {
    const entry = byId.get(id);
    tokens.push(entry?.text ?? `[PAD${id}]`);
    types.push(entry?.type ?? TOKEN_TYPE.UNUSED);
  }
  const merges = ((model.merges ?? []) as (string | string[])[]).map((m) => (Array.isArray(m) ? m.join(' ') : m));

  const idOf = (value: unknown): number | null => {
    const text = typeof value === 'string' ? value : value && typeof value === 'object' ? (value as Json).content : null;
    if (typeof text !== 'string') return null;
    const index = tokens.indexOf(text);
    return index >= 0 ? index : null;
  };
  const eos = eosTokenIds(config);
  const bos = idOf(tokenizerConfig.bos_token) ?? config.bosTokenId;
  const eosId = idOf(tokenizerConfig.eos_token) ?? (eos.length > 0 ? eos[0] : null);
  const pad = idOf(tokenizerConfig.pad_token) ?? config.padTokenId;
  const unk = idOf(tokenizerConfig.unk_token);

  const metadata = new Map<string, GgufValue>();
  metadata.set('tokenizer.ggml.model', gguf.str('gpt2'));
  metadata.set('tokenizer.ggml.pre', gguf.str(preTokenizerName(tokenizerJson)));
  metadata.set('tokenizer.ggml.tokens', gguf.array(GgufType.STRING, tokens));
  metadata.set('tokenizer.ggml.token_type', gguf.array(GgufType.INT32, types));
  metadata.set('tokenizer.ggml.merges', gguf.array(GgufType.STRING, merges));
  if (bos !== null) metadata.set('tokenizer.ggml.bos_token_id', gguf.u32(bos));
  if (eosId !== null) metadata.set('tokenizer.ggml.eos_token_id', gguf.u32(eosId));
  if (unk !== null) metadata.set('tokenizer.ggml.unknown_token_id', gguf.u32(unk));
  if (pad !== null) metadata.set('tokenizer.ggml.padding_token_id', gguf.u32(pad));
  // Whether encoding adds BOS: tokenizer_config's add_bos_token, or the post-processor's template
  // (Llama 3 says so only there), as the tokenizer itself does it.
  const tokenizer = loadTokenizer(tokenizerDir);
  metadata.set('tokenizer.ggml.add_bos_token', gguf.bool(tokenizerConfig.add_bos_token === true || tokenizer.addsBos));
  metadata.set('tokenizer.ggml.add_eos_token', gguf.bool(tokenizerConfig.add_eos_token === true));
  if (tokenizer.chatTemplate !== null) metadata.set('tokenizer.chat_template', gguf.str(tokenizer.chatTemplate));
  return metadata;
}

/** GPT-2's printable stand-ins for the 256 bytes, as byte-level BPE vocabularies spell them. */
function byteLevelSymbols(): string[] {
  const printable: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const symbols = new Array<string>(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) symbols[b] = String.fromCodePoint(printable.includes(b) ? b : 256 + extra++);
  return symbols;
}

function placeholderTokenizer(config: ModelConfig): Map<string, GgufValue> {
  const tokens = byteLevelSymbols();
  for (let id = tokens.length; id < config.vocabSize; id++) tokens.push(`[T${id}]`);
  tokens.length = config.vocabSize;
  const metadata = new Map<string, GgufValue>();
  metadata.set('tokenizer.ggml.model', gguf.str('gpt2'));
  metadata.set('tokenizer.ggml.pre', gguf.str('gpt-2'));
  metadata.set('tokenizer.ggml.tokens', gguf.array(GgufType.STRING, tokens));
  metadata.set('tokenizer.ggml.token_type', gguf.array(GgufType.INT32, tokens.map(() => TOKEN_TYPE.NORMAL)));
  metadata.set('tokenizer.ggml.merges', gguf.array(GgufType.STRING, []));
  const eos = eosTokenIds(config);
  if (config.bosTokenId !== null) metadata.set('tokenizer.ggml.bos_token_id', gguf.u32(config.bosTokenId));
  if (eos.length > 0) metadata.set('tokenizer.ggml.eos_token_id', gguf.u32(eos[0]));
  metadata.set('tokenizer.ggml.add_bos_token', gguf.bool(false));
  return metadata;
}

/** Llama 3's per-dimension RoPE frequency factors, as the converter stores them (rope_freqs.weight). */
function llama3RopeFactors(config: ModelConfig): Float32Array | null {
  const scaling = config.ropeScaling;
  if (scaling?.type !== 'llama3') return null;
  const dim = config.headDim;
  const factors = new Float32Array(dim / 2);
  const lowWavelen = scaling.originalMaxPositionEmbeddings / scaling.lowFreqFactor;
  const highWavelen = scaling.originalMaxPositionEmbeddings / scaling.highFreqFactor;
  for (let i = 0; i < dim / 2; i++) {
    const freq = 1 / config.ropeTheta ** ((2 * i) / dim);
    const wavelen = (2 * Math.PI) / freq;
    if (wavelen < highWavelen) factors[i] = 1;
    else if (wavelen > lowWavelen) factors[i] = scaling.factor;
    else {
      const smooth = (scaling.originalMaxPositionEmbeddings / wavelen - scaling.lowFreqFactor) / (scaling.highFreqFactor - scaling.lowFreqFactor);
      factors[i] = 1 / ((1 - smooth) / scaling.factor + smooth);
    }
  }
  return factors;
}

export interface GgufSource {
  config: ModelConfig;
  weights: Map<string, HostTensor>;
  /**
   * Folder with tokenizer.json (and tokenizer_config.json); null for a placeholder vocabulary of
   * vocab_size tokens (the 256 byte-level symbols, then "[Tn]"), for benchmarks on random weights.
   */
  tokenizerDir: string | null;
  /** general.name. */
  name: string;
}

/**
 * llama.cpp's gemma2/gemma3 metadata (llama_model_gemma2/3::load_arch_hparams): soft caps, the
 * sliding window and its layer period (local layers are those with il % n < n − 1: every n-th is
 * global), Gemma 3's local RoPE base.
 */
function gemmaMetadata(config: ModelConfig, arch: 'gemma2' | 'gemma3'): Map<string, GgufValue> {
  const metadata = new Map<string, GgufValue>();
  // gemma2 always caps: with no cap in config.json, a cap far above any score leaves them as they are.
  const NO_CAP = 1e6;
  if (arch === 'gemma2') {
    metadata.set('gemma2.attn_logit_softcapping', gguf.f32(config.attentionSoftcap ?? NO_CAP));
    metadata.set('gemma2.final_logit_softcapping', gguf.f32(config.finalSoftcap ?? NO_CAP));
  } else {
    if (config.attentionSoftcap !== null) throw new Error('gguf export: llama.cpp runs gemma3 without attention soft-capping');
    if (config.finalSoftcap !== null) metadata.set('gemma3.final_logit_softcapping', gguf.f32(config.finalSoftcap));
    if (config.localRopeTheta !== null) metadata.set('gemma3.rope.freq_base_swa', gguf.f32(config.localRopeTheta));
  }
  const local = Array.from({ length: config.numLayers }, (_, l) => layerWindow(config, l) !== null);
  if (local.some(Boolean)) {
    const firstGlobal = local.indexOf(false);
    const period = firstGlobal < 0 ? 0 : firstGlobal + 1;
    if (local.some((isLocal, l) => isLocal !== (period === 0 || l % period < period - 1))) {
      throw new Error(`gguf export: llama.cpp's ${arch} takes local layers in a fixed period (every n-th global); this model's layer_types are not`);
    }
    metadata.set(`${arch}.attention.sliding_window`, gguf.u32(config.slidingWindow!));
    metadata.set(`${arch}.attention.sliding_window_pattern`, gguf.u32(period));
  } else if (arch === 'gemma2') {
    metadata.set('gemma2.attention.sliding_window_pattern', gguf.u32(1)); // every layer global
  }
  return metadata;
}

/**
 * llama.cpp scales Gemma's queries by head_dim^−½ (for the 27B shapes, by (hidden / heads)^−½;
 * see load_arch_hparams), not by query_pre_attn_scalar^−½: the ratio is folded into the queries.
 */
function gemmaQueryFactor(config: ModelConfig, arch: 'gemma2' | 'gemma3'): number {
  const is27B = config.numLayers === (arch === 'gemma2' ? 46 : 62);
  const llamaCppScale = 1 / Math.sqrt(is27B ? config.hiddenSize / config.numHeads : config.headDim);
  return attentionScale(config) / llamaCppScale;
}

/**
 * llama.cpp's smollm3 has no GGUF key for its NoPE layers: it leaves RoPE out of every 4th layer
 * (n_no_rope_layer_step = 4), SmolLM3's default. Other patterns cannot be written.
 */
function checkSmolLm3RopeLayers(config: ModelConfig): void {
  for (let l = 0; l < config.numLayers; l++) {
    if (usesRope(config, l) !== ((l + 1) % 4 !== 0)) {
      throw new Error(`gguf export: llama.cpp's smollm3 leaves RoPE out of every 4th layer only; this model's no_rope_layers differ at layer ${l}`);
    }
  }
}

/** Writes `source` as an unquantized GGUF file. */
export function writeModelGguf(source: GgufSource, outFile: string, dtype: GgufDtype): void {
  const { config, weights } = source;
  const arch = ggufArchitecture(config);
  const gemma = arch === 'gemma2' || arch === 'gemma3' ? arch : null;
  // llama.cpp's llama and smollm3 rotate adjacent pairs; the others rotate halves as HF does.
  const permute = arch === 'llama' || arch === 'smollm3';
  if (arch === 'smollm3') checkSmolLm3RopeLayers(config);
  const metadata = new Map<string, GgufValue>();
  metadata.set('general.architecture', gguf.str(arch));
  metadata.set('general.name', gguf.str(source.name));
  metadata.set('general.file_type', gguf.u32(dtype === 'f32' ? 0 : 1));
  metadata.set('general.alignment', gguf.u32(32));
  metadata.set(`${arch}.vocab_size`, gguf.u32(config.vocabSize));
  metadata.set(`${arch}.context_length`, gguf.u32(config.maxPositionEmbeddings));
  metadata.set(`${arch}.embedding_length`, gguf.u32(config.hiddenSize));
  metadata.set(`${arch}.block_count`, gguf.u32(config.numLayers));
  metadata.set(`${arch}.feed_forward_length`, gguf.u32(config.intermediateSize));
  metadata.set(`${arch}.attention.head_count`, gguf.u32(config.numHeads));
  metadata.set(`${arch}.attention.head_count_kv`, gguf.u32(config.numKvHeads));
  if (gemma || config.headDim !== config.hiddenSize / config.numHeads) {
    metadata.set(`${arch}.attention.key_length`, gguf.u32(config.headDim));
    metadata.set(`${arch}.attention.value_length`, gguf.u32(config.headDim));
  }
  metadata.set(`${arch}.rope.freq_base`, gguf.f32(config.ropeTheta));
  metadata.set(`${arch}.rope.dimension_count`, gguf.u32(ropeDim(config)));
  metadata.set(`${arch}.attention.layer_norm_rms_epsilon`, gguf.f32(config.rmsNormEps));
  if (config.ropeScaling?.type === 'linear') {
    metadata.set(`${arch}.rope.scaling.type`, gguf.str('linear'));
    metadata.set(`${arch}.rope.scaling.factor`, gguf.f32(config.ropeScaling.factor));
  }
  if (gemma) for (const [key, value] of gemmaMetadata(config, gemma)) metadata.set(key, value);
  const tokenizer = source.tokenizerDir === null ? placeholderTokenizer(config) : tokenizerMetadata(source.tokenizerDir, config);
  for (const [key, value] of tokenizer) metadata.set(key, value);

  const tensors: GgufTensor[] = [];
  const ropeFactors = llama3RopeFactors(config);
  if (ropeFactors) tensors.push({ name: 'rope_freqs.weight', shape: [ropeFactors.length], type: GgmlType.F32, data: ropeFactors });
  if (config.ropeScaling?.type === 'longrope') {
    // As the converter writes Phi-3's LongRoPE: both factor lists (llama.cpp takes the long ones for
    // contexts past the original length), that length, and the cos/sin magnitude.
    const { longFactor, shortFactor, originalMaxPositionEmbeddings, attentionFactor } = config.ropeScaling;
    metadata.set(`${arch}.rope.scaling.original_context_length`, gguf.u32(originalMaxPositionEmbeddings));
    metadata.set(`${arch}.rope.scaling.attn_factor`, gguf.f32(attentionFactor));
    tensors.push({ name: 'rope_factors_long.weight', shape: [longFactor.length], type: GgmlType.F32, data: Float32Array.from(longFactor) });
    tensors.push({ name: 'rope_factors_short.weight', shape: [shortFactor.length], type: GgmlType.F32, data: Float32Array.from(shortFactor) });
  }
  // The converter writes Phi-3's window (llama.cpp's phi3 then runs without it: the models' windows
  // are at least as long as the contexts they are run at).
  if (arch === 'phi3') metadata.set('phi3.attention.sliding_window', gguf.u32(config.slidingWindow ?? 0));
  const wide = dtype === 'f32' ? GgmlType.F32 : GgmlType.F16;
  const queryFactor = gemma ? gemmaQueryFactor(config, gemma) : 1;
  const scaled = (data: Float32Array, factor: number) => (factor === 1 ? data : data.map((v) => v * factor));
  // The converter's order: embeddings, then each block, then the final norm and output.
  const order = (name: string) => (name.startsWith('model.embed_tokens') ? -1 : name.startsWith('model.layers.') ? Number(name.split('.')[2]) : 1e9);
  const names = [...weights.keys()].sort((a, b) => order(a) - order(b));
  for (const hfName of names) {
    const tensor = weights.get(hfName)!;
    const name = ggufTensorName(hfName, config.sandwichNorms);
    if (name === null) continue;
    if (name === 'output.weight' && config.tieWordEmbeddings) continue;
    let data = tensor.data;
    if (permute && /\.attn_q\.(weight|bias)$/.test(name)) data = permuteForGgmlRope(data, tensor.shape[0], config.numHeads);
    if (permute && /\.attn_k\.(weight|bias)$/.test(name)) data = permuteForGgmlRope(data, tensor.shape[0], config.numKvHeads);
    if (config.normAddsOne && hfName.endsWith('norm.weight')) data = data.map((v) => 1 + v);
    // The query factor goes where the queries' scale survives: after Gemma 3's q_norm, else into q_proj.
    if (/\.attn_q_norm\.weight$/.test(name) || (!config.qkNorm && /\.attn_q\.(weight|bias)$/.test(name))) data = scaled(data, queryFactor);
    tensors.push({ name, shape: tensor.shape, type: tensor.shape.length === 1 ? GgmlType.F32 : wide, data });
  }
  for (const required of ['token_embd.weight', 'output_norm.weight']) {
    if (!tensors.some((t) => t.name === required)) throw new Error(`gguf export: the model has no ${required}`);
  }
  writeGguf(outFile, metadata, tensors);
}
