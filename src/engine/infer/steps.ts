// Runs the decoder one step at a time over a KvCache: prefill feeds the prompt (in chunks of at
// most MAX_CHUNK tokens, each padded up to a compiled length), decode feeds one token. Each (T, C)
// shape is compiled once, on first use, with every weight made resident in its session.

import { layerWindow, ropeDim, usesLocalRope, type ModelConfig } from '../models/config.ts';
import { ropeTables } from '../models/llama.ts';
import { CompiledGraph, type HostArray, type SessionSettings } from '../runtime/session.ts';
import { buildDecoderStep, stepNames, type DecoderStepShape } from './decoder.ts';
import { KvCache, capacityFor } from './kv-cache.ts';

/** Longest prefill chunk: attention within a chunk is [T, T] per head, so keep T moderate. */
export const MAX_CHUNK = 512;
const MIN_CHUNK = 16;
const HIDDEN = -1e9;

/**
 * Prefill lengths that are compiled: powers of two and 1.5× them (16, 24, 32, 48, … 384, 512), so a
 * padded prompt wastes at most a third of its step, with a dozen shapes to compile.
 */
const CHUNK_BUCKETS: number[] = [];
for (let t = MIN_CHUNK; t <= MAX_CHUNK; t *= 2) CHUNK_BUCKETS.push(t, (3 * t) / 2);
CHUNK_BUCKETS.splice(CHUNK_BUCKETS.indexOf(MAX_CHUNK) + 1);

function chunkBucket(tokens: number): number {
  if (tokens === 1) return 1;
  return CHUNK_BUCKETS.find((t) => t >= tokens) ?? MAX_CHUNK;
}

/** An unmerged LoRA adapter in the step layout (decoder.ts adapterWeights), fed per run. */
export interface StepAdapter {
  rank: number;
  weights: Map<string, Float32Array>;
}

export class DecoderSteps {
  private readonly sessions = new Map<string, Promise<CompiledGraph>>();
  /** RoPE tables [positions, rotary dim / 2]: the global layers', and the local layers' (Gemma 3). */
  private rope = { cos: new Float32Array(0), sin: new Float32Array(0), cosLocal: new Float32Array(0), sinLocal: new Float32Array(0) };
  private ropePositions = 0;
  /** The masks the step graphs read, with their windows: decoder.ts declares only those its layers use. */
  private readonly masks: [name: string, window: number | null][] = [];
  /** Whether they read the global and the local RoPE tables. */
  private readonly ropes: { global: boolean; local: boolean };

  constructor(
    readonly cfg: ModelConfig,
    private readonly weights: Map<string, Float32Array>,
    private readonly settings: SessionSettings = {},
  ) {
    const layers = Array.from({ length: cfg.numLayers }, (_, l) => l);
    if (layers.some((l) => layerWindow(cfg, l) === null)) this.masks.push([stepNames.mask, null]);
    if (layers.some((l) => layerWindow(cfg, l) !== null)) this.masks.push([stepNames.localMask, cfg.slidingWindow]);
    this.ropes = { global: layers.some((l) => !usesLocalRope(cfg, l)), local: layers.some((l) => usesLocalRope(cfg, l)) };
  }

  /**
   * The RoPE inputs for B rows of T tokens: row b's first `count` tokens at positions past… (padded
   * rows get cos = sin = 0: their k rows are zero and their outputs are never read).
   */
  private ropeFeeds(rows: { past: number; count: number }[], T: number): Record<string, HostArray> {
    const half = ropeDim(this.cfg) / 2;
    const table = (source: Float32Array) => {
      const out = new Float32Array(rows.length * T * half);
      rows.forEach(({ past, count }, b) => out.set(source.subarray(past * half, (past + count) * half), b * T * half));
      return out;
    };
    const feeds: Record<string, HostArray> = {};
    if (this.ropes.global) Object.assign(feeds, { [stepNames.cos]: table(this.rope.cos), [stepNames.sin]: table(this.rope.sin) });
    if (this.ropes.local) Object.assign(feeds, { [stepNames.cosLocal]: table(this.rope.cosLocal), [stepNames.sinLocal]: table(this.rope.sinLocal) });
    return feeds;
  }

  /** A cache for one sequence, or for `slots` sequences decoded together (decodeBatch). */
  newCache(slots = 1): KvCache {
    return new KvCache(this.cfg, slots);
  }

  /**
   * Feeds `tokens` at the next positions of the cache's slot `slot`; returns the logits after the
   * last of them.
   */
  async forward(cache: KvCache, tokens: ArrayLike<number>, adapter?: StepAdapter, slot = 0): Promise<Float32Array> {
    if (tokens.length === 0) throw new Error('forward: no tokens');
    let logits: Float32Array | null = null;
    for (let at = 0; at < tokens.length; at += MAX_CHUNK) {
      const chunk = Array.from(tokens).slice(at, at + MAX_CHUNK);
      logits = await this.step(cache, slot, chunk, adapter);
    }
    return logits!;
  }

  /** One sequence's step over (a slot of) the cache: the prompt's chunks, or a single token. */
  private async step(cache: KvCache, slot: number, tokens: number[], adapter: StepAdapter | undefined): Promise<Float32Array> {
    const count = tokens.length;
    const T = chunkBucket(count);
    const past = cache.lengths[slot];
    // Prefill from scratch needs no cache inputs; otherwise the cache must already hold `past`.
    if (past > 0) cache.reserve(past);
    const C = past === 0 ? 0 : cache.capacity;
    const session = await this.session({ newTokens: T, pastCapacity: C, loraRank: adapter?.rank ?? 0 });
    const group = this.cfg.numHeads / this.cfg.numKvHeads;
    this.ensureRope(past + T);

    const inputIds = new BigInt64Array(T);
    for (let i = 0; i < count; i++) inputIds[i] = BigInt(tokens[i]);
    const feeds: Record<string, HostArray> = {
      [stepNames.inputIds]: inputIds,
      [stepNames.lastRow]: BigInt64Array.of(BigInt(count - 1)),
      ...this.ropeFeeds([{ past, count }], T),
    };
    for (const [name, window] of this.masks) {
      const mask = new Float32Array(group * T * (C + T));
      this.fillMask(mask, T, C, past, count, group, window);
      feeds[name] = mask;
    }
    for (let l = 0; l < this.cfg.numLayers && C > 0; l++) {
      feeds[stepNames.pastKey(l)] = cache.slotKeys(l, slot);
      feeds[stepNames.pastValue(l)] = cache.slotValues(l, slot);
    }
    // Adapter tensors are per-run inputs: ORT reads them in place, so switching adapters is free.
    if (adapter) for (const [name, data] of adapter.weights) feeds[name] = data;
    const out = await session.run(feeds);
    cache.append(slot, out[stepNames.newKeyValues] as Float32Array, 1, T, 0, count);
    return out[stepNames.logits] as Float32Array;
  }

  /**
   * One decode step for the first B = tokens.length slots of the cache at once: `tokens[slot]` is
   * the token to feed to that slot's sequence, or null for a slot with nothing to do (its row is
   * computed and thrown away). The weights are read once for all of them, which is what makes a
   * memory-bound decode step cost about the same for several sequences as for one. Returns each
   * fed slot's logits.
   */
  async decodeBatch(cache: KvCache, tokens: (number | null)[], adapter?: StepAdapter): Promise<(Float32Array | null)[]> {
    const B = tokens.length;
    if (B > cache.slots) throw new Error(`decodeBatch: ${B} tokens for ${cache.slots} slots`);
    cache.reserve(Math.max(1, ...cache.lengths));
    const C = cache.capacity;
    const session = await this.session({ newTokens: 1, pastCapacity: C, sequences: B, loraRank: adapter?.rank ?? 0 });
    const group = this.cfg.numHeads / this.cfg.numKvHeads;
    this.ensureRope(Math.max(...cache.lengths.slice(0, B)) + 1);
    const inputIds = BigInt64Array.from(tokens, (token) => BigInt(token ?? 0));
    const rows = tokens.map((token, b) => ({ past: cache.lengths[b], count: token === null ? 0 : 1 }));
    const feeds: Record<string, HostArray> = {
      [stepNames.inputIds]: inputIds,
      [stepNames.lastRow]: BigInt64Array.from({ length: B }, (_, b) => BigInt(b)),
      ...this.ropeFeeds(rows, 1),
    };
    const maskSize = group * (C + 1);
    for (const [name, window] of this.masks) {
      const mask = new Float32Array(B * maskSize);
      rows.forEach(({ past, count }, b) => this.fillMask(mask.subarray(b * maskSize, (b + 1) * maskSize), 1, C, past, count, group, window));
      feeds[name] = mask;
    }
    for (let l = 0; l < this.cfg.numLayers; l++) {
      feeds[stepNames.pastKey(l)] = cache.slotKeys(l, 0, B);
      feeds[stepNames.pastValue(l)] = cache.slotValues(l, 0, B);
    }
    if (adapter) for (const [name, data] of adapter.weights) feeds[name] = data;
    const out = await session.run(feeds);
    const kv = out[stepNames.newKeyValues] as Float32Array;
    const logits = out[stepNames.logits] as Float32Array;
    const V = this.cfg.vocabSize;
    return tokens.map((token, b) => {
      if (token === null) return null;
      cache.append(b, kv, B, 1, b, 1);
      return logits.subarray(b * V, (b + 1) * V);
    });
  }

  /**
   * One sequence's additive mask [T, C + T] into `mask`, repeated for each of the `group` query
   * heads that share a k/v head (the graph's score rows are (head in group, token)). Query i
   * (position past + i) sees cached slots j < past and new tokens k ≤ i, within the sliding
   * `window` if not null. A padded row sees only itself, so its softmax stays finite.
   */
  private fillMask(mask: Float32Array, T: number, C: number, past: number, count: number, group: number, window: number | null): void {
    const width = C + T;
    mask.fill(HIDDEN);
    for (let i = 0; i < T; i++) {
      const row = i * width;
      if (i >= count) {
        mask[row + C + i] = 0;
        continue;
      }
      const position = past + i;
      const oldest = window ? Math.max(0, position - window + 1) : 0;
      for (let j = oldest; j < past; j++) mask[row + j] = 0;
      for (let k = Math.max(0, oldest - past); k <= i; k++) mask[row + C + k] = 0;
    }
    for (let head = 1; head < group; head++) mask.copyWithin(head * T * width, 0, T * width);
  }

  private ensureRope(positions: number): void {
    if (positions <= this.ropePositions) return;
    let n = Math.max(256, this.ropePositions);
    while (n < positions) n *= 2;
    // ropeTables repeats the rd/2 angles twice per row (HF's layout); RotaryEmbedding wants one copy.
    const hd = this.cfg.headDim;
    const half = ropeDim(this.cfg) / 2;
    const halves = (table: Float64Array) => Float32Array.from({ length: n * half }, (_, j) => table[Math.floor(j / half) * hd + (j % half)]);
    const global = ropeTables(this.cfg, n);
    const local = this.ropes.local ? ropeTables(this.cfg, n, true) : null;
    this.rope = {
      cos: halves(global.cos),
      sin: halves(global.sin),
      cosLocal: local ? halves(local.cos) : new Float32Array(0),
      sinLocal: local ? halves(local.sin) : new Float32Array(0),
    };
    this.ropePositions = n;
  }

  private session(shape: DecoderStepShape): Promise<CompiledGraph> {
    const key = `${shape.sequences && shape.sequences > 1 ? `${shape.sequences}*` : ''}${shape.newTokens}x${shape.pastCapacity}${shape.loraRank ? `r${shape.loraRank}` : ''}`;
    let session = this.sessions.get(key);
    if (!session) {
      session = (async () => {
        const compiled = await CompiledGraph.compile(buildDecoderStep(this.cfg, shape), this.settings);
        for (const [name, data] of this.weights) compiled.setResident(name, data);
        return compiled;
      })();
      this.sessions.set(key, session);
      session.catch(() => this.sessions.delete(key));
    }
    return session;
  }

  /**
   * Compiles ahead of time the shapes that generations up to `positions` long will use: every
   * prefill bucket and every decode capacity (about 0.3 s each on SmolLM2-135M), so that no request
   * pays for a compile in its time to first token.
   */
  async warmup(positions: number, loraRank = 0, batchSlots = 1): Promise<void> {
    for (const T of CHUNK_BUCKETS) await this.session({ newTokens: T, pastCapacity: 0, loraRank });
    for (let C = capacityFor(1); C < 2 * positions; C *= 2) {
      // Batched decode steps (B = 2 … batchSlots sequences) too, when generations share steps.
      for (let B = 1; B <= batchSlots; B++) await this.session({ newTokens: 1, pastCapacity: C, sequences: B, loraRank });
      if (C >= positions) break;
    }
  }

  /** Compiled (T, C) shapes so far, e.g. for a benchmark's warm-up. */
  get compiledShapes(): string[] {
    return [...this.sessions.keys()];
  }

  async release(): Promise<void> {
    const sessions = [...this.sessions.values()];
    this.sessions.clear();
    for (const s of sessions) await (await s).release();
  }
}
