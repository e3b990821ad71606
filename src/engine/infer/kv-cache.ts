// The key/value cache of one sequence: per layer, K and V as [kvHeads, capacity, headDim] in JS
// memory, fed to each step as inputs (ORT reads inputs in place, so feeding it costs nothing).
// Capacity grows by doubling; a step compiled for capacity C sees every slot and the attention
// mask hides those at or beyond `length`.

import type { ModelConfig } from '../models/config.ts';

/** Smallest capacity bucket holding `positions` (powers of two from 64: few compiled steps). */
export function capacityFor(positions: number): number {
  let c = 64;
  while (c < positions) c *= 2;
  return c;
}

export class KvCache {
  /** Positions filled so far (the prompt and every generated token fed back). */
  length = 0;
  capacity = 0;
  keys: Float32Array[] = [];
  values: Float32Array[] = [];
  private readonly kvHeads: number;
  private readonly headDim: number;

  constructor(private readonly cfg: ModelConfig) {
    this.kvHeads = cfg.numKvHeads;
    this.headDim = cfg.headDim;
  }

  /** Makes room for `positions` filled slots, re-laying the rows of each head into bigger arrays. */
  reserve(positions: number): void {
    if (positions <= this.capacity) return;
    const capacity = capacityFor(positions);
    const grow = (old: Float32Array | undefined) => {
      const next = new Float32Array(this.kvHeads * capacity * this.headDim);
      if (old) {
        const rows = this.length * this.headDim;
        for (let h = 0; h < this.kvHeads; h++) {
          next.set(old.subarray(h * this.capacity * this.headDim, h * this.capacity * this.headDim + rows), h * capacity * this.headDim);
        }
      }
      return next;
    };
    for (let l = 0; l < this.cfg.numLayers; l++) {
      this.keys[l] = grow(this.keys[l]);
      this.values[l] = grow(this.values[l]);
    }
    this.capacity = capacity;
  }

  /**
   * Appends the first `count` of the rows a step computed: `newKeys[l]` is [kvHeads, T, headDim]
   * for the step's T (padded) tokens.
   */
  append(newKeys: Float32Array[], newValues: Float32Array[], stepTokens: number, count: number): void {
    this.reserve(this.length + count);
    const hd = this.headDim;
    for (let l = 0; l < this.cfg.numLayers; l++) {
      for (let h = 0; h < this.kvHeads; h++) {
        const from = h * stepTokens * hd;
        const to = (h * this.capacity + this.length) * hd;
        this.keys[l].set(newKeys[l].subarray(from, from + count * hd), to);
        this.values[l].set(newValues[l].subarray(from, from + count * hd), to);
      }
    }
    this.length += count;
  }

  /** Bytes held (for memory bounds and reports). */
  get bytes(): number {
    return 2 * this.cfg.numLayers * this.kvHeads * this.capacity * this.headDim * 4;
  }
}
