// Concurrent generations of one model decode together: each holds a slot of a shared KvCache,
// asks for its next logits with `next(token)`, and the tokens that arrive in the same turn of the
// event loop go through one batched decode step (DecoderSteps.decodeBatch), so the weights are
// read once per step for all of them instead of once per generation.
//
// Off by default (InferenceOptions.batchDecode): with weights fed as inputs, ORT's CPU MatMul
// repacks the weights for every multi-row product, so today a batched step costs about as much
// as its sequences' single steps. It pays once weights are prepacked (or the GEMM is ours).
//
// Slots are handed out lowest first, so the busy ones form a prefix and a step covers slots
// [0, B) with B as small as it can be. A lone request takes the single-sequence step (a GEMV,
// cheaper than a batch of one with idle rows). Every step — prefill or decode — runs in turn, so
// the cache is never changed while a step that reads it is in flight.

import type { KvCache } from './kv-cache.ts';
import type { DecoderSteps, StepAdapter } from './steps.ts';

/** One generation's view of the model: prefill its prompt, then feed one token at a time. */
export interface Sequence {
  /** Logits after the prompt. */
  prefill(promptIds: number[]): Promise<Float32Array>;
  /** Logits after one more token. */
  next(token: number): Promise<Float32Array>;
  /** Gives the slot back (the sequence is done). */
  release(): void;
}

/** Sequences each with their own single-slot cache: no batching. */
export function soloSequence(steps: DecoderSteps, adapter?: StepAdapter): Sequence {
  const cache = steps.newCache();
  return {
    prefill: (promptIds) => steps.forward(cache, promptIds, adapter),
    next: (token) => steps.forward(cache, [token], adapter),
    release: () => {},
  };
}

interface Pending {
  token: number;
  resolve: (logits: Float32Array) => void;
  reject: (error: unknown) => void;
}

export class DecodeBatcher {
  private cache: KvCache | null = null;
  private readonly busy: boolean[];
  private readonly pending = new Map<number, Pending>();
  private flushScheduled = false;
  /** The step in flight (steps run one after another). */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly steps: DecoderSteps,
    readonly slots: number,
    private readonly adapter?: StepAdapter,
  ) {
    this.busy = new Array<boolean>(slots).fill(false);
  }

  /** A sequence in the lowest free slot. Callers bound concurrency to `slots` (the model's gate). */
  open(): Sequence {
    const slot = this.busy.indexOf(false);
    if (slot < 0) throw new Error('decode batcher: no free slot (more generations than slots)');
    this.busy[slot] = true;
    this.cache ??= this.steps.newCache(this.slots);
    const cache = this.cache;
    cache.clear(slot);
    return {
      prefill: (promptIds) => this.inTurn(() => this.steps.forward(cache, promptIds, this.adapter, slot)),
      next: (token) =>
        new Promise<Float32Array>((resolve, reject) => {
          this.pending.set(slot, { token, resolve, reject });
          this.scheduleFlush();
        }),
      release: () => {
        this.busy[slot] = false;
        // An idle model keeps no cache: memory is held only while something generates. (After the
        // steps in flight, and only if no generation took a slot meanwhile.)
        if (!this.busy.includes(true)) void this.inTurn(async () => void (this.busy.includes(true) || (this.cache = null)));
      },
    };
  }

  private inTurn<T>(step: () => Promise<T>): Promise<T> {
    const result = this.queue.then(step);
    this.queue = result.catch(() => {});
    return result;
  }

  /** Waits one turn of the event loop so that every generation ready to decode joins the step. */
  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      const batch = new Map(this.pending);
      this.pending.clear();
      if (batch.size > 0) void this.inTurn(() => this.decode(batch));
    });
  }

  private async decode(batch: Map<number, Pending>): Promise<void> {
    const cache = this.cache!;
    try {
      if (batch.size === 1) {
        const [[slot, request]] = batch;
        request.resolve(await this.steps.forward(cache, [request.token], this.adapter, slot));
        return;
      }
      const B = Math.max(...batch.keys()) + 1;
      const tokens = Array.from({ length: B }, (_, slot) => batch.get(slot)?.token ?? null);
      const logits = await this.steps.decodeBatch(cache, tokens, this.adapter);
      for (const [slot, request] of batch) request.resolve(logits[slot]!); // disjoint rows of one output

    } catch (error) {
      for (const request of batch.values()) request.reject(error);
    }
  }
}
