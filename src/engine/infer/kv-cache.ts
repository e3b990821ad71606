// The key/value cache: per layer, K and V as [slots, kvHeads, capacity, headDim] in JS memory,
// fed to each step as inputs (ORT reads inputs in place, so feeding it costs nothing). A slot holds
// one sequence; a cache of several slots lets one batched decode step serve several generations
// (each slot's region is contiguous, so a single-sequence step reads it as a view, without a copy).
// Capacity grows by doubling for all slots at once; a step compiled for capacity C sees every
// slot position and the attention mask hides those at or beyond the slot's length.

import type { ModelConfig } from '../models/config.ts';

/** Smallest capacity bucket holding `positions` (powers of two from 64: few compiled steps). */
export function capacityFor(positions: number): number {
  let c = 64;
  while (c < positions) c *= 2;
  return c;
}

export class KvCache {
  /** Positions filled in each slot (its prompt and every generated token fed back). */
  readonly lengths: number[];
  capacity = 0;
  keys: Float32Array[] = [];
  values: Float32Array[] = [];
  private readonly kvHeads: number;
  private readonly headDim: number;

  constructor(private readonly cfg: ModelConfig, readonly slots = 1) {
    this.kvHeads = cfg.numKvHeads;
    this.headDim = cfg.headDim;
    this.lengths = new Array<number>(slots).fill(0);
  }

  /** The length of slot 0 (a single-sequence cache). */
  get length(): number {
    return this.lengths[0];
  }

  /** Floats of one slot in one layer's K (or V). */
  private get slotSize(): number {
    return this.kvHeads * this.capacity * this.headDim;
  }

  /** Makes room for `positions` filled slots, re-laying the rows of each head into bigger arrays. */
  reserve(positions: number): void {
    if (positions <= this.capacity) return;
    const capacity = capacityFor(positions);
    const hd = this.headDim;
    const grow = (old: Float32Array | undefined) => {
      const next = new Float32Array(this.slots * this.kvHeads * capacity * hd);
      if (old) {
        for (let s = 0; s < this.slots; s++) {
          for (let h = 0; h < this.kvHeads; h++) {
            const from = (s * this.kvHeads + h) * this.capacity * hd;
            next.set(old.subarray(from, from + this.lengths[s] * hd), (s * this.kvHeads + h) * capacity * hd);
          }
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

  /** K of layer l for slots [slot, slot + count) as [count, kvHeads, capacity, headDim] (a view). */
  slotKeys(l: number, slot: number, count = 1): Float32Array {
    return this.keys[l].subarray(slot * this.slotSize, (slot + count) * this.slotSize);
  }

  slotValues(l: number, slot: number, count = 1): Float32Array {
    return this.values[l].subarray(slot * this.slotSize, (slot + count) * this.slotSize);
  }

  /**
   * Appends to `slot` the first `count` rows that a step computed for one of its sequences:
   * `newKeyValues` is the step's [2·layers·B, kvHeads, T, headDim] output and `sequence` which of
   * its B sequences (decoder.ts stepNames.newKeyValues).
   */
  append(slot: number, newKeyValues: Float32Array, B: number, T: number, sequence: number, count: number): void {
    this.reserve(this.lengths[slot] + count);
    const hd = this.headDim;
    const block = this.kvHeads * T * hd; // one sequence's rows of one layer's K or V
    for (let l = 0; l < this.cfg.numLayers; l++) {
      const keyFrom = (2 * l * B + sequence) * block;
      const valueFrom = ((2 * l + 1) * B + sequence) * block;
      for (let h = 0; h < this.kvHeads; h++) {
        const to = ((slot * this.kvHeads + h) * this.capacity + this.lengths[slot]) * hd;
        this.keys[l].set(newKeyValues.subarray(keyFrom + h * T * hd, keyFrom + (h * T + count) * hd), to);
        this.values[l].set(newKeyValues.subarray(valueFrom + h * T * hd, valueFrom + (h * T + count) * hd), to);
      }
    }
    this.lengths[slot] += count;
  }

  /** Forgets a slot's sequence (the slot can take a new one). */
  clear(slot: number): void {
    this.lengths[slot] = 0;
  }

  /** Bytes held (for memory bounds and reports). */
  get bytes(): number {
    return 2 * this.cfg.numLayers * this.slots * this.kvHeads * this.capacity * this.headDim * 4;
  }
}
