// The Llama-family decoder for generation: one forward step over T new tokens that attends to C
// cached positions, as in HF's modeling_llama with a KV cache:
//   x = embed(ids)
//   for each layer:  q, k, v = rope(q), rope(k), v      from rmsnorm(x) (one fused qkv projection)
//                    x = x + o_proj(softmax(q·[K_past | k]ᵀ/√d + mask)·[V_past | v])
//                    x = x + down_proj(silu(gate) ⊙ up) from rmsnorm(x) (one fused gate|up projection)
//   logits = rmsnorm(x[last]) @ lm_head
// with the switches of ModelConfig's DecoderFeatures (Gemma's sandwich norms, q/k norms, GELU,
// scaled embeddings, soft caps, local layers with their own window mask and RoPE tables), as in
// the training graph (models/llama.ts).
// Prefill is a step with C = 0 (the whole prompt, padded to T); decode is a step with T = 1.
// The graph returns only the new rows of K and V (the caller appends them to its cache): ORT copies
// every output, so returning the whole cache each token would cost more than computing it.
//
// Shapes are static (the IR has no symbolic dims), so a step is compiled per (T, C) bucket; the
// cache capacity C doubles as generation goes on, and `mask` hides the unused slots. A step may
// also carry B sequences at once (batched decode: B rows of T = 1 over B cache slots).
//
// Weights are laid out for this graph once at load (see `inferenceWeights`): linears transposed to
// [in, out] so a one-token step is a plain GEMV in MLAS (no transposed-B packing per call), split
// into column blocks (see COLUMN_BLOCKS), and q|k|v and gate|up concatenated so each block runs
// four matmuls instead of seven.

import { attentionScale, layerWindow, ropeDim, usesLocalRope, usesRope, type ModelConfig } from '../models/config.ts';
import { Graph, type Tensor } from '../graph/ir.ts';
import * as op from '../graph/ops.ts';

/**
 * One compiled step: B sequences, each with T new tokens (padded) and C cache slots (0 = prefill
 * from scratch). Prefill is B = 1; batched decode is T = 1 over the B slots of a KvCache.
 */
export interface DecoderStepShape {
  newTokens: number;
  pastCapacity: number;
  /** B (default 1). */
  sequences?: number;
  /**
   * Rank of the unmerged LoRA path (0 or absent = none). With a rank, every linear also adds
   * (x·A)·B from per-run inputs, so many adapters can share one resident base (see adapterWeights).
   */
  loraRank?: number;
}

/** Names of the step graph's inputs and outputs (the contract with the runner). */
export const stepNames = {
  inputIds: 'input_ids', // [B·T] int64
  cos: 'rope_cos', // [B·T, rotary dim / 2] for the tokens' absolute positions (rotary dim = headDim but for Phi-3)
  sin: 'rope_sin',
  // the same for local layers with a RoPE base of their own (Gemma 3's rope_local_base_freq)
  cosLocal: 'rope_cos_local',
  sinLocal: 'rope_sin_local',
  // [B, G·T, C + T] additive, 0 = visible, −1e9 = hidden: per sequence, the [T, C + T] mask
  // repeated for each query head of a group (score rows are (head in group, token))
  mask: 'attention_mask',
  // the same for sliding-window layers, the window applied (Mistral's layers, Gemma's local ones)
  localMask: 'attention_mask_local',
  lastRow: 'last_row', // [B] int64: which of the B·T rows to take each sequence's logits from
  pastKey: (l: number) => `past_key.${l}`, // [B, kvHeads, C, headDim]
  pastValue: (l: number) => `past_value.${l}`,
  logits: 'logits', // [B, vocab]
  // [2·layers·B, kvHeads, T, headDim]: layer l's new K rows (after RoPE) for sequence b at
  // 2l·B + b, its V rows at (2l + 1)·B + b. One output, not 2·layers: each output costs a copy
  // and a JS array per step.
  newKeyValues: 'new_key_values',
};

/**
 * Every linear's [in, out] weight is stored as [blocks, in, out / blocks]: column block b is one
 * contiguous matrix. A one-token step is a GEMV that is bound by memory bandwidth; MLAS gives each
 * of the 2 intra-op threads one batch entry, so each streams its own contiguous block instead of
 * short strided rows of one matrix. Measured on SmolLM2-135M's block shapes (runs alternating):
 * 5–30% less time in the one-token matmuls; prefill (128 rows) within 2%.
 */
export const COLUMN_BLOCKS = 2;
const blocksFor = (outF: number) => (outF % COLUMN_BLOCKS === 0 ? COLUMN_BLOCKS : 1);
/** The stored shape of a linear's weight. */
const blockedShape = (inF: number, outF: number) => [blocksFor(outF), inF, outF / blocksFor(outF)];

/** Weight names of the inference layout (distinct from HF names: these are fused and transposed). */
export const inferenceWeightNames = {
  embed: 'embed', // [vocab, D]
  lmHead: 'lm_head_t', // [D, vocab] (blocked, as are the four linears of each layer)
  finalNorm: 'norm', // [D]
  attnNorm: (l: number) => `layers.${l}.attn_norm`, // [D]
  // q_norm (× the scores' scale) for each of the H query heads, then k_norm for each of the KV heads:
  // [(H + KV)·hd], applied to the rows of q|k after one weightless per-head RMSNorm
  qkNorm: (l: number) => `layers.${l}.qk_norm`,
  attnPostNorm: (l: number) => `layers.${l}.attn_post_norm`, // [D], with sandwich norms
  mlpPostNorm: (l: number) => `layers.${l}.mlp_post_norm`, // [D], with sandwich norms
  qkv: (l: number) => `layers.${l}.qkv_t`, // [D, (H + 2·KV)·hd]
  qkvBias: (l: number) => `layers.${l}.qkv_bias`, // [(H + 2·KV)·hd]
  o: (l: number) => `layers.${l}.o_t`, // [H·hd, D]
  oBias: (l: number) => `layers.${l}.o_bias`,
  mlpNorm: (l: number) => `layers.${l}.mlp_norm`,
  gateUp: (l: number) => `layers.${l}.gate_up_t`, // [D, 2·I]
  gateUpBias: (l: number) => `layers.${l}.gate_up_bias`,
  down: (l: number) => `layers.${l}.down_t`, // [I, D]
  downBias: (l: number) => `layers.${l}.down_bias`,
};

/** The weights the step graph reads, with their shapes (biases only where the config has them). */
export function inferenceWeightShapes(cfg: ModelConfig): Map<string, number[]> {
  const { hiddenSize: D, numHeads: H, numKvHeads: KV, headDim: hd, intermediateSize: I, vocabSize: V } = cfg;
  const n = inferenceWeightNames;
  const qkvWidth = (H + 2 * KV) * hd;
  const shapes = new Map<string, number[]>([[n.embed, [V, D]], [n.lmHead, blockedShape(D, V)], [n.finalNorm, [D]]]);
  for (let l = 0; l < cfg.numLayers; l++) {
    shapes.set(n.attnNorm(l), [D]);
    if (cfg.qkNorm) shapes.set(n.qkNorm(l), [(H + KV) * hd]);
    if (cfg.sandwichNorms) {
      shapes.set(n.attnPostNorm(l), [D]);
      shapes.set(n.mlpPostNorm(l), [D]);
    }
    shapes.set(n.qkv(l), blockedShape(D, qkvWidth));
    if (cfg.attentionBias) shapes.set(n.qkvBias(l), [qkvWidth]);
    shapes.set(n.o(l), blockedShape(H * hd, D));
    if (cfg.outputBias) shapes.set(n.oBias(l), [D]);
    shapes.set(n.mlpNorm(l), [D]);
    shapes.set(n.gateUp(l), blockedShape(D, 2 * I));
    if (cfg.mlpBias) shapes.set(n.gateUpBias(l), [2 * I]);
    shapes.set(n.down(l), blockedShape(I, D));
    if (cfg.mlpBias) shapes.set(n.downBias(l), [D]);
  }
  return shapes;
}

/**
 * Several [out_k, in] matrices → one [in, Σ out_k] matrix (their outputs side by side), stored in
 * column blocks (blockedShape).
 */
function fusedTransposed(parts: { w: Float32Array; outF: number }[], inF: number): Float32Array {
  const width = parts.reduce((s, p) => s + p.outF, 0);
  const blockWidth = width / blocksFor(width);
  const t = new Float32Array(inF * width);
  let col = 0;
  for (const { w, outF } of parts) {
    for (let o = 0; o < outF; o++) {
      const c = col + o;
      const at = Math.floor(c / blockWidth) * inF * blockWidth + (c % blockWidth);
      const row = o * inF;
      for (let i = 0; i < inF; i++) t[at + i * blockWidth] = w[row + i];
    }
    col += outF;
  }
  return t;
}

const transposed = (w: Float32Array, outF: number, inF: number) => fusedTransposed([{ w, outF }], inF);

function scaled(w: Float32Array, s: number): Float32Array {
  return w.map((v) => v * s);
}

/** Consecutive blocks of `rows` rows (of `cols` columns each) of a row-major matrix, as views. */
function rowBlocks(w: Float32Array, rows: number[], cols: number): Float32Array[] {
  let at = 0;
  return rows.map((r) => w.subarray(at, (at += r * cols)));
}

function concatenated(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
  let at = 0;
  for (const p of parts) out.set(p, (at += p.length) - p.length);
  return out;
}

/**
 * HF weights (names as in llamaWeightShapes, LoRA already merged) → the inference layout.
 * `take` is called once per HF name; it may drop its own reference so that the HF copy can be
 * collected as each layer is converted (peak memory ≈ one layer above the model).
 */
export function inferenceWeights(cfg: ModelConfig, take: (hfName: string) => Float32Array): Map<string, Float32Array> {
  const { hiddenSize: D, numHeads: H, numKvHeads: KV, headDim: hd, intermediateSize: I, vocabSize: V } = cfg;
  const n = inferenceWeightNames;
  const out = new Map<string, Float32Array>();
  const embed = take('model.embed_tokens.weight');
  out.set(n.embed, embed);
  // Gemma's (1 + w) norms are stored as 1 + w: the same kernel then serves every architecture.
  const norm = (name: string) => (cfg.normAddsOne ? take(name).map((v) => 1 + v) : take(name));
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}`;
    const a = `${p}.self_attn`;
    const m = `${p}.mlp`;
    out.set(n.attnNorm(l), norm(`${p}.input_layernorm.weight`));
    const qScale = qProjectionScale(cfg);
    if (cfg.qkNorm) {
      const [qNorm, kNorm] = [scaled(norm(`${a}.q_norm.weight`), attentionScale(cfg)), norm(`${a}.k_norm.weight`)];
      out.set(n.qkNorm(l), concatenated([...Array<Float32Array>(H).fill(qNorm), ...Array<Float32Array>(KV).fill(kNorm)]));
    }
    // q, k and v ([rows, D] each, or bias vectors with D = 1): their own tensors, or the row blocks
    // of Phi-3's fused qkv_proj.
    const qkv = (kind: 'weight' | 'bias', cols: number) =>
      cfg.fusedProjections ? rowBlocks(take(`${a}.qkv_proj.${kind}`), [H * hd, KV * hd, KV * hd], cols) : (['q_proj', 'k_proj', 'v_proj'] as const).map((x) => take(`${a}.${x}.${kind}`));
    const [qW, kW, vW] = qkv('weight', D);
    out.set(n.qkv(l), fusedTransposed([
      { w: scaled(qW, qScale), outF: H * hd },
      { w: kW, outF: KV * hd },
      { w: vW, outF: KV * hd },
    ], D));
    if (cfg.attentionBias) {
      const [qB, kB, vB] = qkv('bias', 1);
      out.set(n.qkvBias(l), concatenated([scaled(qB, qScale), kB, vB]));
    }
    out.set(n.o(l), transposed(take(`${a}.o_proj.weight`), D, H * hd));
    if (cfg.outputBias) out.set(n.oBias(l), take(`${a}.o_proj.bias`));
    if (cfg.sandwichNorms) {
      out.set(n.attnPostNorm(l), norm(`${p}.post_attention_layernorm.weight`));
      out.set(n.mlpNorm(l), norm(`${p}.pre_feedforward_layernorm.weight`));
      out.set(n.mlpPostNorm(l), norm(`${p}.post_feedforward_layernorm.weight`));
    } else out.set(n.mlpNorm(l), norm(`${p}.post_attention_layernorm.weight`));
    // Phi-3's gate_up_proj already holds gate's rows, then up's: the layout of the fused pair.
    out.set(n.gateUp(l), cfg.fusedProjections
      ? transposed(take(`${m}.gate_up_proj.weight`), 2 * I, D)
      : fusedTransposed([{ w: take(`${m}.gate_proj.weight`), outF: I }, { w: take(`${m}.up_proj.weight`), outF: I }], D));
    if (cfg.mlpBias) out.set(n.gateUpBias(l), cfg.fusedProjections ? take(`${m}.gate_up_proj.bias`) : concatenated([take(`${m}.gate_proj.bias`), take(`${m}.up_proj.bias`)]));
    out.set(n.down(l), transposed(take(`${m}.down_proj.weight`), D, I));
    if (cfg.mlpBias) out.set(n.downBias(l), take(`${m}.down_proj.bias`));
  }
  out.set(n.finalNorm, norm('model.norm.weight'));
  // A tied head is stored a second time, transposed: the GEMV over [D, V] is the largest matmul of
  // a small model's decode step, and the transposed-B path would repack it every token.
  out.set(n.lmHead, transposed(cfg.tieWordEmbeddings ? embed : take('lm_head.weight'), V, D));
  return out;
}

/**
 * The scale of the attention scores, folded into q_proj's rows (RoPE is linear, so rope(s·q) =
 * s·rope(q)); with q/k norms it goes into q_norm's weight instead (the norm would undo it), and
 * q_proj keeps 1.
 */
function qProjectionScale(cfg: ModelConfig): number {
  return cfg.qkNorm ? 1 : attentionScale(cfg);
}

/** The four linears of a block as the step graph computes them, with the HF modules fused into each. */
function blockLinears(cfg: ModelConfig, l: number) {
  const { hiddenSize: D, numHeads: H, numKvHeads: KV, headDim: hd, intermediateSize: I } = cfg;
  const n = inferenceWeightNames;
  const a = `model.layers.${l}.self_attn`;
  const m = `model.layers.${l}.mlp`;
  // scaledRows: a fused qkv_proj (Phi-3) takes q's scale on its first H·hd rows only.
  const qkvParts: { path: string; outF: number; scale: number; scaledRows?: number }[] = cfg.fusedProjections
    ? [{ path: `${a}.qkv_proj`, outF: (H + 2 * KV) * hd, scale: qProjectionScale(cfg), scaledRows: H * hd }]
    : [{ path: `${a}.q_proj`, outF: H * hd, scale: qProjectionScale(cfg) }, { path: `${a}.k_proj`, outF: KV * hd, scale: 1 }, { path: `${a}.v_proj`, outF: KV * hd, scale: 1 }];
  const gateUpParts = cfg.fusedProjections
    ? [{ path: `${m}.gate_up_proj`, outF: 2 * I, scale: 1 }]
    : [{ path: `${m}.gate_proj`, outF: I, scale: 1 }, { path: `${m}.up_proj`, outF: I, scale: 1 }];
  return [
    { name: n.qkv(l), inF: D, parts: qkvParts },
    { name: n.o(l), inF: H * hd, parts: [{ path: `${a}.o_proj`, outF: D, scale: 1 }] },
    { name: n.gateUp(l), inF: D, parts: gateUpParts },
    { name: n.down(l), inF: I, parts: [{ path: `${m}.down_proj`, outF: D, scale: 1 }] },
  ];
}

export const loraInputNames = { a: (linear: string) => `${linear}.lora_a`, b: (linear: string) => `${linear}.lora_b` };

/** Shapes of the unmerged LoRA inputs at rank R: per fused linear with k parts, A [in, k·R], B [k·R, Σ out]. */
export function adapterWeightShapes(cfg: ModelConfig, R: number): Map<string, number[]> {
  const shapes = new Map<string, number[]>();
  for (let l = 0; l < cfg.numLayers; l++) {
    for (const { name, inF, parts } of blockLinears(cfg, l)) {
      shapes.set(loraInputNames.a(name), [inF, parts.length * R]);
      shapes.set(loraInputNames.b(name), [parts.length * R, parts.reduce((s, p) => s + p.outF, 0)]);
    }
  }
  return shapes;
}

/**
 * A LoRA adapter (module path → A [r, in], B [out, r]) in the step graph's layout at rank R ≥ r:
 * for a fused linear, the parts' A matrices side by side (transposed) and their B matrices on a
 * block diagonal, so (x·A)·B = [x·A_qᵀ·B_qᵀ | x·A_kᵀ·B_kᵀ | …]. `scale(r)` (α/r) and q's 1/√d are
 * folded into B. Modules the adapter leaves alone, and ranks below R, are zero blocks: exact, and
 * every adapter of rank ≤ R runs in the same compiled step.
 */
export function adapterWeights(
  cfg: ModelConfig,
  pairs: Map<string, { A: { shape: number[]; data: Float32Array }; B: { shape: number[]; data: Float32Array } }>,
  scale: (rank: number) => number,
  R: number,
): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  const used = new Set<string>();
  for (let l = 0; l < cfg.numLayers; l++) {
    for (const { name, inF, parts } of blockLinears(cfg, l)) {
      const width = parts.reduce((s, p) => s + p.outF, 0);
      const k = parts.length * R;
      const A = new Float32Array(inF * k); // [in, k·R]
      const B = new Float32Array(k * width); // [k·R, width]
      let col = 0;
      parts.forEach((part, j) => {
        const pair = pairs.get(part.path);
        if (pair) {
          used.add(part.path);
          const r = pair.A.shape[0];
          if (r > R) throw new Error(`LoRA rank ${r} of ${part.path} exceeds the step's rank ${R}`);
          if (pair.A.shape[1] !== inF || pair.B.shape[0] !== part.outF || pair.B.shape[1] !== r) {
            throw new Error(`LoRA ${part.path}: A [${pair.A.shape}] / B [${pair.B.shape}] do not fit [${part.outF}, ${inF}]`);
          }
          for (let q = 0; q < r; q++) {
            for (let i = 0; i < inF; i++) A[i * k + j * R + q] = pair.A.data[q * inF + i];
            const s = scale(r) * part.scale;
            const rows = part.scaledRows ?? part.outF;
            for (let o = 0; o < part.outF; o++) B[(j * R + q) * width + col + o] = pair.B.data[o * r + q] * (o < rows ? s : scale(r));
          }
        }
        col += part.outF;
      });
      out.set(loraInputNames.a(name), A);
      out.set(loraInputNames.b(name), B);
    }
  }
  const unknown = [...pairs.keys()].filter((p) => !used.has(p));
  if (unknown.length) throw new Error(`LoRA modules not in this model: ${unknown.slice(0, 3).join(', ')}`);
  return out;
}

/**
 * RMSNorm as one ORT kernel: SimplifiedLayerNormalization computes x / √(mean(x²) + ε) · w, the
 * same as llama.ts's rmsNorm, whose eight elementwise nodes cost more than their math at T = 1.
 */
function rmsNormKernel(x: Tensor, weight: Tensor, eps: number): Tensor {
  return x.graph.emit('SimplifiedLayerNormalization', [x, weight], { axis: -1, epsilon: { f: eps } }, [{ shape: x.shape, dtype: x.dtype }])[0];
}

/**
 * RoPE with HF's rotate_half convention (com.microsoft.RotaryEmbedding, interleaved = 0) on
 * x [1, T, heads·hd]: one node instead of llama.ts's slice/neg/concat/mul/add. Row t of
 * cos/sin [T, rd/2] holds the angles of token t's absolute position, so position_ids are 0..T−1.
 * Only each head's first rd dimensions rotate (all of them but for Phi-3's partial rotary).
 */
function ropeKernel(x: Tensor, positions: Tensor, cos: Tensor, sin: Tensor, heads: number, rd: number): Tensor {
  return x.graph.emit('RotaryEmbedding', [x, positions, cos, sin], { interleaved: 0, num_heads: heads, rotary_embedding_dim: rd }, [{ shape: x.shape, dtype: x.dtype }], undefined, 'com.microsoft')[0];
}

/** A reshape of a reshape is one reshape of the original (fewer nodes: each costs µs per step). */
function reshape(x: Tensor, shape: number[]): Tensor {
  const inner = x.producer;
  return op.reshape(inner?.opType === 'Reshape' && inner.inputs[0] ? inner.inputs[0] : x, shape);
}

/** Splits the last axis of x into parts of the given sizes (one node, forward only). */
function split(x: Tensor, sizes: number[]): Tensor[] {
  const axis = x.rank - 1;
  return x.graph.emit('Split', [x, x.graph.ints(sizes)], { axis }, sizes.map((n) => ({ shape: [...x.shape.slice(0, axis), n], dtype: x.dtype })));
}

/**
 * A transpose that only moves size-1 axes keeps the memory order: emit it as a reshape (free).
 * In a decode step (T = 1) every head/token transpose is of this kind.
 */
function permute(x: Tensor, perm: number[]): Tensor {
  const moved = perm.filter((axis) => x.shape[axis] !== 1);
  const kept = moved.every((axis, i) => i === 0 || moved[i - 1] < axis);
  return kept ? reshape(x, perm.map((axis) => x.shape[axis])) : op.transpose(x, perm);
}

/** The step graph for one (T, C) bucket. All weights are graph inputs (fed once, kept resident). */
export function buildDecoderStep(cfg: ModelConfig, shape: DecoderStepShape): Graph {
  const { newTokens: T, pastCapacity: C } = shape;
  const B = shape.sequences ?? 1;
  const N = B * T; // rows of every activation
  const { hiddenSize: D, numHeads: H, numKvHeads: KV, headDim: hd, intermediateSize: I, rmsNormEps: eps } = cfg;
  const rd = ropeDim(cfg);
  const G = H / KV; // query heads per key/value head
  const g = new Graph('float32');
  const shapes = inferenceWeightShapes(cfg);
  const W = (name: string) => g.inputs.find((t) => t.name === name) ?? g.input(name, shapes.get(name)!);
  const Wopt = (name: string) => (shapes.has(name) ? W(name) : null);
  const n = inferenceWeightNames;
  const s = stepNames;

  const R = shape.loraRank ?? 0;
  const loraShapes = R > 0 ? adapterWeightShapes(cfg, R) : null;
  // x [rows, in] · a blocked weight [blocks, in, out / blocks] → [rows, out]
  const blockedMatmul = (x: Tensor, weight: string): Tensor => {
    const y = op.matmul(x, W(weight)); // [blocks, rows, out / blocks]
    const [blocks, rows, width] = y.shape;
    return reshape(permute(y, [1, 0, 2]), [rows, blocks * width]);
  };
  // y = x·W (+ b) (+ (x·A)·B, the adapter's low-rank update, when the step has a LoRA rank)
  const linear = (x: Tensor, weight: string, bias: string): Tensor => {
    let y = blockedMatmul(x, weight);
    const b = Wopt(bias);
    if (b) y = op.add(y, b);
    if (loraShapes) {
      const [a, bName] = [loraInputNames.a(weight), loraInputNames.b(weight)];
      y = op.add(y, op.matmul(op.matmul(x, g.input(a, loraShapes.get(a)!)), g.input(bName, loraShapes.get(bName)!)));
    }
    return y;
  };

  const inputIds = g.input(s.inputIds, [N], 'int64');
  // Inputs on first use: a step declares only the tables and masks its layers read.
  const input = (name: string, shape: number[]) => g.inputs.find((t) => t.name === name) ?? g.input(name, shape);
  const ropeInputs = (local: boolean) =>
    local ? [input(s.cosLocal, [N, rd / 2]), input(s.sinLocal, [N, rd / 2])] : [input(s.cos, [N, rd / 2]), input(s.sin, [N, rd / 2])];
  const rows = g.constant('int64', [1, N], Array.from({ length: N }, (_, t) => t));
  // [B, 1, G·T, C + T]: broadcasts over KV
  const maskFor = (windowed: boolean) => reshape(input(windowed ? s.localMask : s.mask, [B, G * T, C + T]), [B, 1, G * T, C + T]);
  const lastRow = g.input(s.lastRow, [B], 'int64');
  const ones = cfg.qkNorm ? g.constant(g.float, [hd], new Array(hd).fill(1)) : null;

  const newKeyValues: Tensor[] = [];
  let x = op.gather(W(n.embed), inputIds); // [B·T, D]
  if (cfg.scaleEmbeddings) x = op.mul(x, Math.sqrt(D));
  for (let l = 0; l < cfg.numLayers; l++) {
    // --- attention over [cached | new] positions
    const h = rmsNormKernel(x, W(n.attnNorm(l)), eps);
    const qkv = linear(h, n.qkv(l), n.qkvBias(l)); // [B·T, (H + 2·KV)·hd]; q pre-scaled (qProjectionScale)
    // q and k share head size and positions, so one RotaryEmbedding ropes both (as H + KV heads).
    let [qk, vRows] = split(qkv, [(H + KV) * hd, KV * hd]);
    if (ones) qk = op.mul(reshape(rmsNormKernel(reshape(qk, [N * (H + KV), hd]), ones, eps), [N, (H + KV) * hd]), W(n.qkNorm(l)));
    if (usesRope(cfg, l)) {
      const [cos, sin] = ropeInputs(usesLocalRope(cfg, l));
      qk = reshape(ropeKernel(reshape(qk, [1, N, (H + KV) * hd]), rows, cos, sin, H + KV, rd), [N, (H + KV) * hd]);
    } // else a NoPE layer (SmolLM3)
    const [qRows, kRows] = split(qk, [H * hd, KV * hd]);
    // q as [B, KV, G·T, hd]: the G query heads sharing a k/v head are stacked as rows, so GQA is
    // one batched matmul per (sequence, k/v head) with no repeat of K or V.
    const q = reshape(permute(reshape(qRows, [B, T, KV, G, hd]), [0, 2, 3, 1, 4]), [B, KV, G * T, hd]);
    const heads = (t: Tensor) => permute(reshape(t, [B, T, KV, hd]), [0, 2, 1, 3]); // [B, KV, T, hd]
    const k = heads(kRows);
    const v = heads(vRows);
    newKeyValues.push(k, v);

    // Scores against the cache and against the new tokens are computed apart and joined (small:
    // [B, KV, G·T, C + T]) rather than concatenating K itself, which would copy the whole cache.
    const pastKey = C > 0 ? g.input(s.pastKey(l), [B, KV, C, hd]) : null;
    const pastValue = C > 0 ? g.input(s.pastValue(l), [B, KV, C, hd]) : null;
    const newScores = op.matmul(q, op.T(k)); // [B, KV, G·T, T]
    const scores = pastKey ? op.concat([op.matmul(q, op.T(pastKey)), newScores], 3) : newScores;
    const capped = cfg.attentionSoftcap === null ? scores : op.softcap(scores, cfg.attentionSoftcap);
    const probs = op.softmax(op.add(capped, maskFor(layerWindow(cfg, l) !== null))); // [B, KV, G·T, C + T]
    let context: Tensor; // [B, KV, G·T, hd]
    if (pastValue) {
      const [pastProbs, newProbs] = split(probs, [C, T]);
      context = op.add(op.matmul(pastProbs, pastValue), op.matmul(newProbs, v));
    } else context = op.matmul(probs, v);
    const merged = reshape(permute(reshape(context, [B, KV, G, T, hd]), [0, 3, 1, 2, 4]), [N, H * hd]);
    const attended = linear(merged, n.o(l), n.oBias(l));
    x = op.add(x, cfg.sandwichNorms ? rmsNormKernel(attended, W(n.attnPostNorm(l)), eps) : attended);

    // --- gated MLP (SwiGLU, or GELU-tanh for Gemma)
    const h2 = rmsNormKernel(x, W(n.mlpNorm(l)), eps);
    const gateUp = linear(h2, n.gateUp(l), n.gateUpBias(l)); // [B·T, 2·I]
    const [gate, up] = split(gateUp, [I, I]);
    const gated = op.mul(cfg.hiddenActivation === 'gelu_tanh' ? op.geluTanh(gate) : op.silu(gate), up);
    const down = linear(gated, n.down(l), n.downBias(l));
    x = op.add(x, cfg.sandwichNorms ? rmsNormKernel(down, W(n.mlpPostNorm(l)), eps) : down);
  }

  // Only each sequence's last real token's logits are needed to pick its next token.
  const last = op.gather(x, lastRow); // [B, D]
  const logits = blockedMatmul(rmsNormKernel(last, W(n.finalNorm), eps), n.lmHead);
  g.output(s.logits, cfg.finalSoftcap === null ? logits : op.softcap(logits, cfg.finalSoftcap));
  g.output(s.newKeyValues, op.concat(newKeyValues, 0));
  return g;
}
