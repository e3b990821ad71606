// The Llama-family decoder (Llama, Qwen2, Qwen3, SmolLM3, Phi-3, Mistral, Gemma 2/3) in the graph IR, following HF's
// modeling_llama (and modeling_gemma2/3 where ModelConfig's DecoderFeatures say so):
//   x = embed(ids)                                                          (Gemma: × √hidden)
//   for each layer:  x = x + o_proj(attention(rope(q), rope(k), v))   on rmsnorm(x)
//                    x = x + down_proj(silu(gate_proj(h)) ⊙ up_proj(h))  on h = rmsnorm(x)
//   logits = rmsnorm(x) @ lm_headᵀ   (lm_head = embed when tied; training applies it in token chunks)
// Qwen3 norms each head of q and k before RoPE; SmolLM3 leaves RoPE out on some layers (NoPE);
// Phi-3 fuses q|k|v and gate|up into one matrix each and rotates only part of each head (LongRoPE).
// Gemma adds a norm after attention and after the MLP (sandwichNorms), norms that scale by 1 + w,
// GELU(tanh) for SiLU, per-head q/k norms (Gemma 3), sliding-window layers with their own RoPE
// base beside global ones, and soft-capped attention scores and logits (Gemma 2).
// Activations are kept as [N = B·T, features] so every projection is one 2-D MatMul; attention
// is one op with its own backward over tiles of queries × keys (attention.ts), keeping O(T) per
// layer. With `recompute`, that many decoder layers keep only their input and recompute the rest in
// the backward (graph/checkpoint.ts); with `recomputeMlp`, that many more do so for their MLP only.
// Under LoRA the adapters' inputs (norm outputs, attention context, SwiGLU output) are recomputed
// for their gradients from what the layer keeps anyway, not kept themselves (loraDown).
// Frozen weights may come as a checkpoint's 2-byte floats (raw bits), widened to f32 for each use
// only (widen, frozenProduct).

import { attentionScale, layerWindow, ropeDim, usesLocalRope, usesRope, type ModelConfig } from './config.ts';
import type { LoraSpec } from './lora.ts';
import { loraAName, loraBName } from './lora.ts';
import { isLengthDim, type Graph, type Tensor } from '../graph/ir.ts';
import { halfToF32Table, type HalfDtype } from '../io/safetensors.ts';
import * as op from '../graph/ops.ts';
import { after, checkpoint } from '../graph/checkpoint.ts';
import { customGradient } from '../graph/autodiff.ts';
import { attentionPlan, causalAttention, type AttentionTiling } from './attention.ts';

export interface LlamaInputs {
  /** [B, T] int64 token ids. */
  inputIds: Tensor;
  /** [B, T] int64 positions (restart at 0 for each packed example). */
  positionIds: Tensor;
  /**
   * [B, T] int64 example ids: a token attends only to earlier tokens with the same id. Null when
   * no row packs several examples: causal attention alone (see attentionPlan).
   */
  segmentIds: Tensor | null;
}

/**
 * The step graphs' batch inputs: `input_ids`, `position_ids` and, when rows `pack` several
 * examples, `segment_ids`, each [rows, seqLen] int64.
 */
export function llamaInputs(g: Graph, rows: number, seqLen: number, pack = true): LlamaInputs {
  return {
    inputIds: g.input('input_ids', [rows, seqLen], 'int64'),
    positionIds: g.input('position_ids', [rows, seqLen], 'int64'),
    segmentIds: pack ? g.input('segment_ids', [rows, seqLen], 'int64') : null,
  };
}

export interface LlamaOptions {
  /** Returns the graph tensor for an HF weight name (a frozen or trainable graph input). */
  weight: (name: string, shape: number[]) => Tensor;
  /** LoRA adapters on the targeted linears; their tensors come from `weight` too (lora_A/lora_B names). */
  lora?: LoraSpec & {
    targets: Set<string>;
    /** Inverted-dropout mask [N, in] (0 or 1/(1−p)) for a module, or null for no dropout. */
    dropoutMask?: (path: string, shape: number[]) => Tensor | null;
  };
  /**
   * How many decoder layers, the first ones, recompute their inside in the backward instead of
   * keeping it (default 0). The first: the backward reaches them after the kept layers above have
   * freed their activations, where a recomputed top layer's copy would come on top of all of them.
   */
  recompute?: number;
  /**
   * How many decoder layers after those recompute only their MLP (norm, gate, up, SwiGLU) in the
   * backward, keeping its input (default 0): of a layer's activations the MLP's are most of the
   * memory (LoRA at SmolLM2-135M's shape, by the memory estimate: 56 of 97 MB at T = 4096) and the
   * cheapest to recompute (two products, no attention).
   */
  recomputeMlp?: number;
  /** Attention tiles (default: defaultTiling in attention.ts). */
  attentionTiling?: AttentionTiling;
  /** The format of the frozen weights `weight` gives as raw 2-byte bits (uint16), if any. */
  halfDtype?: HalfDtype;
  /** For a graph for rows of any length (ANY_LENGTH): the longest row it is fed, which RoPE's tables cover. */
  longest?: number;
}

/** The weight the LM head reads: it stays f32 (every token chunk reads all of it, forward and backward). */
export function headWeightName(cfg: ModelConfig): string {
  return cfg.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight';
}

const widenTables = new WeakMap<Graph, Map<HalfDtype, Tensor>>();

/**
 * Frozen 2-byte weights (raw bits, uint16; concatenated along axis 0 when several) as f32, for one
 * use: looked up in the format's 65,536-entry table, since ONNX Runtime's Node API has no bfloat16
 * tensors to feed a Cast (and its CPU MatMul has no bf16 kernel). With `dep` (the activation the
 * weight meets) the copy is made only once dep exists, so it lives from just before its use to just
 * after, and ORT's common-subexpression elimination cannot merge a forward's, a recomputation's
 * and a backward's widening into one copy kept alive between them.
 */
export function widen(parts: Tensor[], dtype: HalfDtype, dep?: Tensor): Tensor {
  const g = parts[0].graph;
  const tables = widenTables.get(g) ?? widenTables.set(g, new Map()).get(g)!;
  if (!tables.has(dtype)) tables.set(dtype, g.constant(g.float, [65536], halfToF32Table(dtype)));
  let gated = parts;
  if (dep) {
    // 0, as an int64 that exists once dep does: s < s is false for every s, NaN included.
    const s = op.slice(op.reshape(dep, [dep.size]), 0, 0, 1);
    const zero = op.cast(op.less(s, s), 'int64');
    gated = parts.map((p) => g.emit('Reshape', [p, op.add(g.ints([...p.shape]), zero)], {}, [{ shape: p.shape, dtype: p.dtype }])[0]);
  }
  const bits = gated.length > 1 ? op.concat(gated, 0) : gated[0];
  return op.gather(tables.get(dtype)!, op.cast(bits, 'int32'));
}

/**
 * x Wᵀ for frozen 2-byte weights W (stacked from `parts`), widened for the product and widened
 * again for the backward's dx = dy W, so no f32 copy is kept from one to the other.
 */
export function frozenProduct(x: Tensor, parts: Tensor[], dtype: HalfDtype): Tensor {
  const y = op.matmul(x, op.T(widen(parts, dtype, x)));
  return customGradient(y, [x], (dy) => [op.matmul(dy, widen(parts, dtype, dy))]);
}

/**
 * cos/sin tables [T, headDim] for positions 0..T−1, honouring rope_theta and rope_scaling, or for
 * `local` layers localRopeTheta without scaling (Gemma 3). With a partial rotary dimension rd
 * (Phi-3), the first rd columns rotate and the rest pass unchanged (cos 1, sin 0).
 */
export function ropeTables(cfg: ModelConfig, T: number, local = false): { cos: Float64Array; sin: Float64Array } {
  const hd = cfg.headDim;
  const rd = ropeDim(cfg);
  const theta = local && cfg.localRopeTheta !== null ? cfg.localRopeTheta : cfg.ropeTheta;
  const invFreq = Array.from({ length: rd / 2 }, (_, i) => 1 / Math.pow(theta, (2 * i) / rd));
  const s = local && cfg.localRopeTheta !== null ? null : cfg.ropeScaling;
  let magnitude = 1;
  if (s?.type === 'linear') invFreq.forEach((f, i) => (invFreq[i] = f / s.factor));
  if (s?.type === 'longrope') {
    // Phi-3's LongRoPE with its short factors: transformers takes the long ones only for sequences
    // past original_max_position_embeddings, llama.cpp for contexts past it; neither happens here.
    if (s.shortFactor.length !== rd / 2) throw new Error(`rope_scaling.short_factor has ${s.shortFactor.length} factors, not ${rd / 2}`);
    invFreq.forEach((f, i) => (invFreq[i] = f / s.shortFactor[i]));
    magnitude = s.attentionFactor;
  }
  if (s?.type === 'llama3') {
    // Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, a smooth blend between.
    const lowWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
    const highWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
    invFreq.forEach((f, i) => {
      const wavelen = (2 * Math.PI) / f;
      if (wavelen < highWavelen) return;
      if (wavelen > lowWavelen) return void (invFreq[i] = f / s.factor);
      const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
      invFreq[i] = (1 - smooth) * (f / s.factor) + smooth * f;
    });
  }
  const cos = new Float64Array(T * hd).fill(1);
  const sin = new Float64Array(T * hd);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < rd; i++) {
      const angle = t * invFreq[i % (rd / 2)]; // HF concatenates the frequencies twice
      cos[t * hd + i] = magnitude * Math.cos(angle);
      sin[t * hd + i] = magnitude * Math.sin(angle);
    }
  }
  return { cos, sin };
}

/**
 * x / √(mean(x²) + ε) · w over the last axis. Its backward is written out (like softmax's): with
 * x̂ = x·r, r = 1/√(mean(x²) + ε) and d the gradient of x̂, dx = r·(d − x̂·mean(d ⊙ x̂)), which
 * needs only [N, 1] broadcasts where the op-by-op rules materialised [N, D] expansions. The
 * backward multiplies x̂ out again from x and r: x is what a LoRA layer keeps anyway to recompute
 * the norm's output (see loraDown), so x̂ is not kept beside it.
 */
export function rmsNorm(x: Tensor, w: Tensor, eps: number): Tensor {
  const fixed = op.stopGradient(x);
  const r = op.reciprocal(op.sqrt(op.add(op.reduceMean(op.mul(fixed, fixed), [-1], true), eps)));
  const [normed] = x.graph.emit('Mul', [x, r], {}, [{ shape: x.shape, dtype: x.dtype }], ([d]) => {
    const again = op.mul(after(x, [d!]), r); // a new node: ORT's CSE would hand back the forward's x̂
    return [op.mul(r, op.sub(d!, op.mul(again, op.reduceMean(op.mul(d!, again), [-1], true)))), null];
  });
  return op.mul(normed, w);
}

/**
 * x·aᵀ, LoRA's down-projection of a frozen product's input x, whose backward reads x from
 * `again(dy)` instead of keeping it. The inputs adapted are a norm's output, the attention's
 * context and SwiGLU's: each is cheap to recompute from tensors the layer keeps anyway (the
 * residual stream, the attention output, gate and up), and with frozen weights nothing else keeps
 * them. At SmolLM2-135M's shape that is 60 of a layer's 157 MB at T = 4096 (memory estimate).
 */
export function loraDown(x: Tensor, a: Tensor, again: (dep: Tensor) => Tensor): Tensor {
  return customGradient(op.matmul(x, op.T(a)), [x, a], (dy, wanted) => [
    wanted[0] ? op.matmul(dy, a) : null,
    wanted[1] ? op.matmul(op.T(dy), again(dy)) : null,
  ]);
}

/**
 * silu(gate) ⊙ up, SwiGLU's gating, keeping only gate and up for the backward: with σ = σ(gate),
 * d gate = dy ⊙ up ⊙ σ(1 + gate(1 − σ)) and d up = dy ⊙ silu(gate), σ and silu recomputed there
 * (two cheap passes) instead of three more [N, intermediate] tensors kept per layer.
 */
export function swiglu(gate: Tensor, up: Tensor): Tensor {
  const y = op.mul(op.silu(gate), up);
  return customGradient(y, [gate, up], (dy) => {
    const gateAgain = after(gate, [dy]); // a new node, so ORT's CSE does not keep the forward's σ
    const s = op.sigmoid(gateAgain);
    const silu = op.mul(gateAgain, s);
    return [op.mul(op.mul(dy, up), op.mul(s, op.add(op.sub(gateAgain, silu), 1))), op.mul(dy, silu)];
  });
}

/**
 * HF's rotate_half RoPE on the first rd dimensions, x·cos + [−x₂, x₁, 0]·sin, computed as
 * x·cos + [x₂, x₁, x_pass]·sin± with the sign folded into the table: sin± = [−sin₁, sin₂, 0] (see
 * signedSin); the pass-through dimensions (Phi-3's partial rotary) have cos 1, sin 0.
 */
export function rope(x: Tensor, cos: Tensor, sinSigned: Tensor, rd = x.shape[x.rank - 1]): Tensor {
  const rest = x.shape[x.rank - 1] - rd;
  const [x1, x2, pass] = op.split(x, rest > 0 ? [rd / 2, rd / 2, rest] : [rd / 2, rd / 2], -1);
  return op.add(op.mul(x, cos), op.mul(op.concat(pass ? [x2, x1, pass] : [x2, x1], -1), sinSigned));
}

/** A [T, hd] sin table with the first half of each row's rd rotary columns negated, for rope(). */
function signedSin(sin: Float64Array, hd: number, rd: number): Float64Array {
  return sin.map((v, i) => (i % hd < rd / 2 ? -v : v));
}

/** The end of the decoder: final hidden states [N, D] (after the final norm) and the LM head's weight [vocab, D]. */
export interface LmHead {
  hidden: Tensor;
  weight: Tensor;
  /** Logits are c·tanh(z/c) of the products z (final_logit_softcapping); absent or null = the products. */
  softcap?: number | null;
}

/** The head's logits for hidden states h [rows, D]. */
export function headLogits(head: LmHead, h: Tensor): Tensor {
  const z = op.matmul(h, op.T(head.weight));
  return head.softcap ? op.softcap(z, head.softcap) : z;
}

/**
 * Logits [B·T, vocab] of a Llama-family decoder. The step graphs stop at llamaHidden instead and
 * apply the head in token chunks with their loss (train/loss.ts), so [N, vocab] never exists whole.
 */
export function llamaLogits(g: Graph, cfg: ModelConfig, inputs: LlamaInputs, opts: LlamaOptions): Tensor {
  const head = llamaHidden(g, cfg, inputs, opts);
  return headLogits(head, head.hidden);
}

/** The decoder up to its LM head (see LmHead). */
export function llamaHidden(g: Graph, cfg: ModelConfig, inputs: LlamaInputs, opts: LlamaOptions): LmHead {
  const [B, T] = inputs.inputIds.shape;
  const N = B * T;
  const { hiddenSize: D, numHeads: H, numKvHeads: KV, headDim: hd, rmsNormEps: eps } = cfg;
  const G = H / KV;
  const W = opts.weight;
  const halfDtype = () => {
    if (!opts.halfDtype) throw new Error('a weight came as 2-byte bits with no halfDtype to read them by');
    return opts.halfDtype;
  };
  // A weight as f32: widened where it is read when it comes as 2-byte bits.
  const read = (w: Tensor, dep: Tensor) => (w.dtype === 'uint16' ? widen([w], halfDtype(), dep) : w);
  // Each module's dropout mask, asked for once (a recomputed layer reads the same masks again).
  const masksByPath = new Map<string, Tensor | null>();
  const dropoutMask = (path: string, inF: number) => {
    if (!masksByPath.has(path)) masksByPath.set(path, opts.lora?.dropoutMask?.(path, [N, inF]) ?? null);
    return masksByPath.get(path)!;
  };

  // y_i = x W_iᵀ (+ b_i) (+ (α/r) · dropout_i(x) A_iᵀ B_iᵀ) for the projections of one input
  // (q/k/v; o; gate; up; down). Projections listed together share one MatMul over their stacked
  // weights, and so do their LoRA down-projections when no dropout gives each its own input.
  // `again` recomputes x for LoRA's backward (loraDown); without it x is kept.
  const linears = (x: Tensor, inF: number, mods: { path: string; outF: number }[], bias: boolean, again?: (dep: Tensor) => Tensor): Tensor[] => {
    const stack = (ts: Tensor[]) => (ts.length > 1 ? op.concat(ts, 0) : ts[0]);
    const split = (y: Tensor, widths: number[]) => op.split(y, widths, 1);
    const ws = mods.map((m) => W(`${m.path}.weight`, [m.outF, inF]));
    const y = ws[0].dtype === 'uint16' ? frozenProduct(x, ws, halfDtype()) : op.matmul(x, op.T(stack(ws)));
    const ys = split(y, mods.map((m) => m.outF));
    if (bias) mods.forEach((m, i) => (ys[i] = op.add(ys[i], read(W(`${m.path}.bias`, [m.outF]), ys[i]))));
    const lora = opts.lora;
    const targeted = mods.filter((m) => lora?.targets.has(m.path));
    if (!lora || targeted.length === 0) return ys;
    const r = lora.rank;
    const A = (m: { path: string }) => W(loraAName(m.path), [r, inF]);
    const masks = targeted.map((m) => dropoutMask(m.path, inF));
    const down = (input: Tensor, a: Tensor, mask: Tensor | null) => {
      const masked = (t: Tensor) => (mask ? op.mul(t, mask) : t);
      return again ? loraDown(masked(input), a, (dep) => masked(again(dep))) : op.matmul(masked(input), op.T(a));
    };
    // Scale the rank-r activations, not the [N, out] products: same math, fewer elements.
    const us = masks.every((mask) => mask === null)
      ? split(op.mul(down(x, stack(targeted.map(A)), null), lora.alpha / r), targeted.map(() => r))
      : targeted.map((m, j) => op.mul(down(x, A(m), masks[j]), lora.alpha / r));
    targeted.forEach((m, j) => {
      const i = mods.indexOf(m);
      ys[i] = op.add(ys[i], op.matmul(us[j], op.T(W(loraBName(m.path), [m.outF, r]))));
    });
    return ys;
  };

  // RoPE tables per position, [B, 1, 1, T, hd]; q's carry the scale of the attention scores
  // (1/√hd; RoPE is linear), so neither q (T·hd) nor the scores (T·T) need a separate scaling.
  // Global and local layers (Gemma 3) each have theirs, built once and shared by their layers.
  const positions = isLengthDim(T) ? opts.longest : T;
  if (positions === undefined) throw new Error('a graph for rows of any length needs the longest row it is fed (LlamaOptions.longest)');
  const ropeFor = memo((local: boolean) => {
    const tables = ropeTables(cfg, positions, local);
    const perPosition = (table: Float64Array, scale = 1) =>
      op.reshape(op.gather(g.constant(g.float, [positions, hd], table.map((v) => v * scale)), inputs.positionIds), [B, 1, 1, T, hd]);
    const sin = signedSin(tables.sin, hd, ropeDim(cfg));
    const scale = attentionScale(cfg);
    return { cosK: perPosition(tables.cos), sinK: perPosition(sin), cosQ: perPosition(tables.cos, scale), sinQ: perPosition(sin, scale) };
  });
  const planFor = memo((window: number | null) => attentionPlan(g, T, inputs.segmentIds, window, opts.attentionTiling));
  // Gemma's norms scale by 1 + w (HF's Gemma2RMSNorm: x̂ · (1 + w)).
  const norm = (t: Tensor, name: string, size: number) => {
    const w = read(W(name, [size]), t);
    return rmsNorm(t, cfg.normAddsOne ? op.add(w, 1) : w, eps);
  };
  // A LoRA input's copy for the backward, recomputed from `from` (kept for other reasons) once
  // `dep` exists; full fine-tuning keeps the input itself for its weights' gradients.
  const inputAgain = (make: (from: Tensor) => Tensor, from: Tensor) => (opts.lora ? (dep: Tensor) => make(after(from, [dep])) : undefined);

  const embed = W('model.embed_tokens.weight', [cfg.vocabSize, D]);
  const embedded = op.gather(embed, inputs.inputIds); // 2-byte bits are gathered first, then widened
  let x = op.reshape(embedded.dtype === 'uint16' ? widen([embedded], halfDtype()) : embedded, [N, D]);
  if (cfg.scaleEmbeddings) x = op.mul(x, Math.sqrt(D));

  const recomputed = opts.recompute ?? 0;
  const layer = (l: number, x: Tensor): Tensor => {
    const p = `model.layers.${l}`;
    const { cosQ, sinQ, cosK, sinK } = ropeFor(usesLocalRope(cfg, l));
    // --- attention
    const inputNorm = (t: Tensor) => norm(t, `${p}.input_layernorm.weight`, D);
    const h = inputNorm(x);
    const hAgain = inputAgain(inputNorm, x);
    const heads = (t: Tensor, groups: number) =>
      op.transpose(op.reshape(t, [B, T, KV, groups, hd]), [0, 2, 3, 1, 4]); // → [B, KV, groups, T, hd]
    // Phi-3 stores q|k|v as one qkv_proj (and its LoRA adapts that module as a whole).
    const [qFlat, kFlat, vFlat] = cfg.fusedProjections
      ? op.split(linears(h, D, [{ path: `${p}.self_attn.qkv_proj`, outF: (H + 2 * KV) * hd }], cfg.attentionBias, hAgain)[0], [H * hd, KV * hd, KV * hd], 1)
      : linears(h, D, [
          { path: `${p}.self_attn.q_proj`, outF: H * hd },
          { path: `${p}.self_attn.k_proj`, outF: KV * hd },
          { path: `${p}.self_attn.v_proj`, outF: KV * hd },
        ], cfg.attentionBias, hAgain);
    const qkNorm = (t: Tensor, which: 'q_norm' | 'k_norm') => (cfg.qkNorm ? norm(t, `${p}.self_attn.${which}.weight`, hd) : t);
    // A NoPE layer (SmolLM3) scales q itself: elsewhere q's RoPE tables carry the scale.
    const rd = ropeDim(cfg);
    const q = usesRope(cfg, l) ? rope(qkNorm(heads(qFlat, G), 'q_norm'), cosQ, sinQ, rd) : op.mul(qkNorm(heads(qFlat, G), 'q_norm'), attentionScale(cfg));
    const k = usesRope(cfg, l) ? rope(qkNorm(heads(kFlat, 1), 'k_norm'), cosK, sinK, rd) : qkNorm(heads(kFlat, 1), 'k_norm');
    const plan = planFor(layerWindow(cfg, l));
    const attention = causalAttention(q, k, heads(vFlat, 1), plan, cfg.attentionSoftcap);
    const tokenRows = (t: Tensor) => op.reshape(op.transpose(t, [0, 3, 1, 2, 4]), [N, H * hd]);
    let attended = linears(tokenRows(attention), H * hd, [{ path: `${p}.self_attn.o_proj`, outF: D }], cfg.outputBias, inputAgain(tokenRows, attention))[0];
    if (cfg.sandwichNorms) attended = norm(attended, `${p}.post_attention_layernorm.weight`, D);
    x = op.add(x, attended);
    const recomputesMlp = l >= recomputed && l < recomputed + (opts.recomputeMlp ?? 0);
    return op.add(x, recomputesMlp ? checkpoint(x, mlp(l)) : mlp(l)(x));
  };
  // --- gated MLP (SwiGLU, or GELU-tanh for Gemma): what the layer adds to x
  const mlp = (l: number) => (x: Tensor): Tensor => {
    const p = `model.layers.${l}`;
    const mlpNorm = (t: Tensor) => norm(t, `${p}.${cfg.sandwichNorms ? 'pre_feedforward_layernorm' : 'post_attention_layernorm'}.weight`, D);
    const h = mlpNorm(x);
    const hAgain = inputAgain(mlpNorm, x);
    // gate and up are two products, not one stacked: on the SmolLM2-135M shape the stacked
    // [N, 2·I] product, its split and its gradient’s concat measured 3–15% slower (q|k|v, with
    // thin k and v, runs as fast stacked as apart, in fewer nodes).
    const I = cfg.intermediateSize;
    const [gate, up] = cfg.fusedProjections // Phi-3's gate_up_proj: gate rows, then up rows
      ? op.split(linears(h, D, [{ path: `${p}.mlp.gate_up_proj`, outF: 2 * I }], cfg.mlpBias, hAgain)[0], [I, I], 1)
      : [linears(h, D, [{ path: `${p}.mlp.gate_proj`, outF: I }], cfg.mlpBias, hAgain)[0], linears(h, D, [{ path: `${p}.mlp.up_proj`, outF: I }], cfg.mlpBias, hAgain)[0]];
    const gating = (gateIn: Tensor) => (cfg.hiddenActivation === 'gelu_tanh' ? op.mul(op.geluTanh(gateIn), up) : swiglu(gateIn, up));
    let [down] = linears(gating(gate), I, [{ path: `${p}.mlp.down_proj`, outF: D }], cfg.mlpBias, inputAgain(gating, gate));
    if (cfg.sandwichNorms) down = norm(down, `${p}.post_feedforward_layernorm.weight`, D);
    return down;
  };
  // Tables and plans are built here, outside the layers (a recomputed layer must not own them).
  for (let l = 0; l < cfg.numLayers; l++) [ropeFor(usesLocalRope(cfg, l)), planFor(layerWindow(cfg, l))];
  for (let l = 0; l < cfg.numLayers; l++) x = l < recomputed ? checkpoint(x, (xIn) => layer(l, xIn)) : layer(l, x);

  const hidden = norm(x, 'model.norm.weight', D);
  const weight = cfg.tieWordEmbeddings ? embed : W('lm_head.weight', [cfg.vocabSize, D]);
  if (weight.dtype === 'uint16') throw new Error(`${headWeightName(cfg)} is read by the LM head: it must come as f32`);
  return { hidden, weight, softcap: cfg.finalSoftcap };
}

/** f with its results kept per argument. */
function memo<K, V>(f: (key: K) => V): (key: K) => V {
  const seen = new Map<K, V>();
  return (key) => (seen.has(key) ? seen.get(key)! : seen.set(key, f(key)).get(key)!);
}

/** HF weight names and shapes this model reads (the base model, without LoRA). */
export function llamaWeightShapes(cfg: ModelConfig): Map<string, number[]> {
  const { hiddenSize: D, numHeads: H, numKvHeads: KV, headDim: hd, intermediateSize: I } = cfg;
  const m = new Map<string, number[]>([['model.embed_tokens.weight', [cfg.vocabSize, D]]]);
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}`;
    m.set(`${p}.input_layernorm.weight`, [D]);
    const lin = (path: string, inF: number, outF: number, bias: boolean) => {
      m.set(`${path}.weight`, [outF, inF]);
      if (bias) m.set(`${path}.bias`, [outF]);
    };
    if (cfg.fusedProjections) lin(`${p}.self_attn.qkv_proj`, D, (H + 2 * KV) * hd, cfg.attentionBias);
    else {
      lin(`${p}.self_attn.q_proj`, D, H * hd, cfg.attentionBias);
      lin(`${p}.self_attn.k_proj`, D, KV * hd, cfg.attentionBias);
      lin(`${p}.self_attn.v_proj`, D, KV * hd, cfg.attentionBias);
    }
    lin(`${p}.self_attn.o_proj`, H * hd, D, cfg.outputBias);
    if (cfg.qkNorm) {
      m.set(`${p}.self_attn.q_norm.weight`, [hd]);
      m.set(`${p}.self_attn.k_norm.weight`, [hd]);
    }
    m.set(`${p}.post_attention_layernorm.weight`, [D]);
    if (cfg.sandwichNorms) {
      m.set(`${p}.pre_feedforward_layernorm.weight`, [D]);
      m.set(`${p}.post_feedforward_layernorm.weight`, [D]);
    }
    if (cfg.fusedProjections) lin(`${p}.mlp.gate_up_proj`, D, 2 * I, cfg.mlpBias);
    else {
      lin(`${p}.mlp.gate_proj`, D, I, cfg.mlpBias);
      lin(`${p}.mlp.up_proj`, D, I, cfg.mlpBias);
    }
    lin(`${p}.mlp.down_proj`, I, D, cfg.mlpBias);
  }
  m.set('model.norm.weight', [D]);
  if (!cfg.tieWordEmbeddings) m.set('lm_head.weight', [cfg.vocabSize, D]);
  return m;
}
