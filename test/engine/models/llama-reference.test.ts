// The Llama graph against an independent plain-loop implementation of HF's modeling_llama
// (repeat_kv, rotate_half, causal softmax), in float64: checks head ordering under GQA, the RoPE
// convention, biases and tying, which finite differences cannot (they only check gradients).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Graph, type Tensor } from '../../../src/engine/graph/ir.ts';
import { CompiledGraph } from '../../../src/engine/runtime/session.ts';
import { llamaLogits, ropeTables } from '../../../src/engine/models/llama.ts';
import type { ModelConfig } from '../../../src/engine/models/config.ts';
import { randomWeights, tinyConfig } from './llama-fixtures.ts';

type W = Map<string, Float64Array | Float32Array>;

/** y[o] = Σ_i x[i]·W[o][i] (+ b[o]) for each row of x. */
function linear(x: number[][], w: ArrayLike<number>, outF: number, b?: ArrayLike<number>): number[][] {
  return x.map((row) => Array.from({ length: outF }, (_, o) => row.reduce((s, xi, i) => s + xi * w[o * row.length + i], b ? b[o] : 0)));
}
const rms = (x: number[][], w: ArrayLike<number>, eps: number) =>
  x.map((row) => {
    const r = 1 / Math.sqrt(row.reduce((s, v) => s + v * v, 0) / row.length + eps);
    return row.map((v, i) => v * r * w[i]);
  });

function reference(cfg: ModelConfig, w: W, ids: number[]): number[][] {
  const { hiddenSize: D, numHeads: H, numKvHeads: KV, headDim: hd } = cfg;
  const T = ids.length;
  const { cos, sin } = ropeTables(cfg, T);
  const emb = w.get('model.embed_tokens.weight')!;
  let x = ids.map((id) => Array.from(emb.subarray(id * D, (id + 1) * D)));
  const rope = (v: number[], t: number) =>
    v.map((vi, i) => vi * cos[t * hd + i] + (i < hd / 2 ? -v[i + hd / 2] : v[i - hd / 2]) * sin[t * hd + i]);
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}`;
    const h = rms(x, w.get(`${p}.input_layernorm.weight`)!, cfg.rmsNormEps);
    const proj = (name: string, outF: number) => linear(h, w.get(`${p}.self_attn.${name}.weight`)!, outF, w.get(`${p}.self_attn.${name}.bias`));
    const q = proj('q_proj', H * hd), k = proj('k_proj', KV * hd), v = proj('v_proj', KV * hd);
    const out = Array.from({ length: T }, () => new Array(H * hd).fill(0));
    for (let head = 0; head < H; head++) {
      const kvHead = Math.floor(head / (H / KV)); // repeat_kv
      const qh = q.map((row, t) => rope(row.slice(head * hd, (head + 1) * hd), t));
      const kh = k.map((row, t) => rope(row.slice(kvHead * hd, (kvHead + 1) * hd), t));
      for (let i = 0; i < T; i++) {
        const s = Array.from({ length: i + 1 }, (_, j) => qh[i].reduce((a, qi, d) => a + qi * kh[j][d], 0) / Math.sqrt(hd));
        const m = Math.max(...s);
        const e = s.map((z) => Math.exp(z - m));
        const z = e.reduce((a, b) => a + b, 0);
        for (let j = 0; j <= i; j++) for (let d = 0; d < hd; d++) out[i][head * hd + d] += (e[j] / z) * v[j][kvHead * hd + d];
      }
    }
    const o = linear(out, w.get(`${p}.self_attn.o_proj.weight`)!, D);
    x = x.map((row, t) => row.map((xi, i) => xi + o[t][i]));
    const h2 = rms(x, w.get(`${p}.post_attention_layernorm.weight`)!, cfg.rmsNormEps);
    const gate = linear(h2, w.get(`${p}.mlp.gate_proj.weight`)!, cfg.intermediateSize);
    const up = linear(h2, w.get(`${p}.mlp.up_proj.weight`)!, cfg.intermediateSize);
    const act = gate.map((row, t) => row.map((g, i) => (g / (1 + Math.exp(-g))) * up[t][i]));
    const down = linear(act, w.get(`${p}.mlp.down_proj.weight`)!, D);
    x = x.map((row, t) => row.map((xi, i) => xi + down[t][i]));
  }
  const head = cfg.tieWordEmbeddings ? emb : w.get('lm_head.weight')!;
  return linear(rms(x, w.get('model.norm.weight')!, cfg.rmsNormEps), head, cfg.vocabSize);
}

async function compare(cfg: ModelConfig) {
  const ids = [3, 17, 5, 29, 8, 11, 2];
  const T = ids.length;
  const g = new Graph('float64');
  const inputs = { inputIds: g.input('ids', [1, T], 'int64'), positionIds: g.input('pos', [1, T], 'int64'), segmentIds: g.input('seg', [1, T], 'int64') };
  const ws = new Map<string, Tensor>();
  g.output('logits', llamaLogits(g, cfg, inputs, { weight: (n, s) => ws.get(n) ?? ws.set(n, g.input(n, s)).get(n)! }));
  const s = await CompiledGraph.compile(g, { intraOpNumThreads: 1 });
  const w = randomWeights(cfg, 21);
  const out = (await s.run({
    ids: BigInt64Array.from(ids.map(BigInt)), pos: BigInt64Array.from(ids.map((_, i) => BigInt(i))), seg: new BigInt64Array(T).fill(1n), ...Object.fromEntries(w),
  })).logits as Float64Array;
  const expected = reference(cfg, w, ids);
  for (let t = 0; t < T; t++) for (let v = 0; v < cfg.vocabSize; v++) {
    assert.ok(Math.abs(out[t * cfg.vocabSize + v] - expected[t][v]) < 1e-9, `logit [${t}, ${v}]: ${out[t * cfg.vocabSize + v]} vs ${expected[t][v]}`);
  }
  await s.release();
}

test('Llama logits (GQA 4:2, tied) match a plain-loop HF reference', () => compare(tinyConfig()));

test('Qwen2-style logits (qkv bias, GQA 4:1, untied, Llama-3 rope scaling) match the reference', () =>
  compare(tinyConfig({
    architecture: 'qwen2', attentionBias: true, numKvHeads: 1, tieWordEmbeddings: false,
    ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 4 },
  })));
