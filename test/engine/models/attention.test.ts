// The tiled causal attention op: its forward against attention written out directly, and its own
// backward against finite differences (f64), over tilings that split T unevenly, several key
// chunks per query block (online softmax), probabilities kept or recomputed, packed segments or
// none (unpacked rows), a sliding window and GQA.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Graph, type Tensor } from '../../../src/engine/graph/ir.ts';
import { CompiledGraph } from '../../../src/engine/runtime/session.ts';
import { attentionPlan, causalAttention, defaultTiling, type AttentionTiling } from '../../../src/engine/models/attention.ts';
import { gradCheck, randn, rng } from '../graph/gradcheck.ts';

interface Case {
  B: number;
  KV: number;
  G: number;
  T: number;
  hd: number;
  window: number | null;
  segments: number[]; // [B·T]
  tiling: AttentionTiling;
}

const oneSegment = (B: number, T: number) => new Array(B * T).fill(1);

/** softmax over visible keys of q·k, times v, straight from the definition: [B, KV, G, T, hd]. */
function reference(c: Case, q: Float64Array, k: Float64Array, v: Float64Array): Float64Array {
  const { B, KV, G, T, hd } = c;
  const out = new Float64Array(B * KV * G * T * hd);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < KV; h++)
      for (let gi = 0; gi < G; gi++)
        for (let i = 0; i < T; i++) {
          const qAt = (((b * KV + h) * G + gi) * T + i) * hd;
          const visible = Array.from({ length: T }, (_, j) => j <= i && c.segments[b * T + j] === c.segments[b * T + i] && (!c.window || i - j < c.window));
          const s = visible.map((vis, j) => {
            if (!vis) return -Infinity;
            let dot = 0;
            for (let d = 0; d < hd; d++) dot += q[qAt + d] * k[((b * KV + h) * T + j) * hd + d];
            return dot;
          });
          const m = Math.max(...s);
          const e = s.map((x) => Math.exp(x - m));
          const z = e.reduce((a, x) => a + x, 0);
          for (let d = 0; d < hd; d++) out[qAt + d] = e.reduce((a, p, j) => a + (p / z) * v[((b * KV + h) * T + j) * hd + d], 0);
        }
  return out;
}

const cases: Record<string, Case> = {
  'T = 7 in blocks of 3, one key chunk each': { B: 1, KV: 1, G: 1, T: 7, hd: 4, window: null, segments: oneSegment(1, 7), tiling: { queryBlock: 3, keyBlock: 8, keepProbabilities: false } },
  'T = 9, keys in chunks of 2 (online softmax), GQA, two rows with packed segments': {
    B: 2, KV: 2, G: 2, T: 9, hd: 3, window: null,
    segments: [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2],
    tiling: { queryBlock: 4, keyBlock: 2, keepProbabilities: false },
  },
  'T = 10, sliding window 3, segments, keys in chunks of 3': {
    B: 1, KV: 1, G: 3, T: 10, hd: 2, window: 3,
    segments: [1, 1, 1, 1, 2, 2, 2, 2, 2, 2],
    tiling: { queryBlock: 3, keyBlock: 3, keepProbabilities: true },
  },
  'T = 7 in blocks of 3, probabilities kept': { B: 1, KV: 1, G: 2, T: 7, hd: 3, window: null, segments: [1, 1, 2, 2, 2, 2, 2], tiling: { queryBlock: 3, keyBlock: 8, keepProbabilities: true } },
  'T = 13 in blocks of 2, keys in chunks of 8, 4, 2 and 1 (few widths), window 11, segments': {
    B: 1, KV: 1, G: 2, T: 13, hd: 2, window: 11,
    segments: [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2],
    tiling: { queryBlock: 2, keyBlock: 8, keepProbabilities: false },
  },
  'T = 11 in blocks of 2, keys in chunks of 2 (long T’s tiles: every block’s keys in chunks as wide as it), GQA, segments': {
    B: 1, KV: 2, G: 2, T: 11, hd: 2, window: null,
    segments: [1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2],
    tiling: { queryBlock: 2, keyBlock: 2, keepProbabilities: false },
  },
  'one block (T = 5, tiles larger than T), window 2': { B: 1, KV: 2, G: 1, T: 5, hd: 2, window: 2, segments: oneSegment(1, 5), tiling: { queryBlock: 16, keyBlock: 16, keepProbabilities: true } },
};

const inputs = (c: Case) => [
  { name: 'q', shape: [c.B, c.KV, c.G, c.T, c.hd] },
  { name: 'k', shape: [c.B, c.KV, 1, c.T, c.hd] },
  { name: 'v', shape: [c.B, c.KV, 1, c.T, c.hd] },
  { name: 'segments', shape: [c.B, c.T], dtype: 'int64' as const, data: BigInt64Array.from(c.segments.map(BigInt)) },
];

// Each case also without segment ids (rows that do not pack: causal masks only), against one segment a row.
const variants = Object.entries(cases).flatMap(([name, c]) => [
  { name, c, packed: true },
  { name: `${name}, unpacked`, c: { ...c, segments: oneSegment(c.B, c.T) }, packed: false },
]);

for (const { name, c, packed } of variants) {
  const plan = (seg: Tensor) => attentionPlan(seg.graph, c.T, packed ? seg : null, c.window, c.tiling);
  test(`attention forward = softmax(q·kᵀ + mask)·v: ${name}`, async () => {
    const g = new Graph('float64');
    const [q, k, v, seg] = inputs(c).map((s) => g.input(s.name, s.shape, s.dtype ?? 'float64'));
    g.output('o', causalAttention(q, k, v, plan(seg)));
    const s = await CompiledGraph.compile(g, { intraOpNumThreads: 1 });
    const r = rng(5);
    const [qd, kd, vd] = [q, k, v].map((t) => randn(t.size, r, 2));
    const o = (await s.run({ q: qd, k: kd, v: vd, segments: BigInt64Array.from(c.segments.map(BigInt)) })).o as Float64Array;
    const want = reference(c, qd, kd, vd);
    want.forEach((x, i) => assert.ok(Math.abs(o[i] - x) < 1e-12, `o[${i}] = ${o[i]}, want ${x}`));
    await s.release();
  });

  test(`attention backward = finite differences (f64): ${name}`, async () => {
    await gradCheck(inputs(c), (q, k, v, seg) => causalAttention(q, k, v, plan(seg)), { maxProbes: 30 });
  });
}

test('unpacked plan: no mask on tiles entirely in the past, the causal mask alone on the diagonal, the window mask where a tile crosses its edge', () => {
  const g = new Graph('float64');
  const masks = (window: number | null) =>
    attentionPlan(g, 11, null, window, { queryBlock: 2, keyBlock: 2, keepProbabilities: false }).blocks.flatMap((b) =>
      b.keys.map((k) => ({ diagonal: k.end - 1 > b.start, masked: k.visible !== null, op: k.visible?.producer?.opType })),
    );
  for (const m of masks(null)) assert.deepEqual([m.masked, m.op], m.diagonal ? [true, 'Less'] : [false, undefined]);
  assert.ok(masks(2).some((m) => !m.diagonal && m.op === 'Greater'));
});

test('default tiling: as before up to T = 4096; longer T in at most 8 query blocks (up to 16384), tiles of at most 2048² scores and 4 widths (ORT reuses a freed buffer only for one of the same size), covering each block’s keys once', () => {
  assert.deepEqual(defaultTiling(512), { queryBlock: 128, keyBlock: 4096, keepProbabilities: true });
  assert.deepEqual(defaultTiling(4096), { queryBlock: 512, keyBlock: 4096, keepProbabilities: false });
  for (const T of [4096, 5000, 8192, 16384, 20000]) {
    const g = new Graph();
    const plan = attentionPlan(g, T, g.input('segments', [1, T], 'int64'), null);
    if (T <= 16384) assert.ok(plan.blocks.length <= 8, `T = ${T}: ${plan.blocks.length} query blocks`);
    const tiles = plan.blocks.flatMap((b) => b.keys.map((k) => (b.end - b.start) * (k.end - k.start)));
    assert.ok(Math.max(...tiles) <= 2048 * 2048, `T = ${T}: a tile of ${Math.max(...tiles)} scores`);
    const widths = new Set(plan.blocks.flatMap((b) => b.keys.map((k) => k.end - k.start)));
    assert.ok(widths.size <= (T % 512 === 0 ? 4 : 5), `T = ${T}: widths ${[...widths]}`);
    for (const b of plan.blocks) {
      assert.equal(b.keys[0].start, 0);
      b.keys.forEach((k, i) => assert.equal(k.start, i === 0 ? 0 : b.keys[i - 1].end));
      assert.equal(b.keys.at(-1)!.end, b.end);
    }
  }
});
