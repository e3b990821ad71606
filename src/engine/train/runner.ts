// Runs the step graphs: frozen weights resident in each session, trainable tensors and AdamW
// moments owned here in JS. The graphs return gradients; AdamW updates the state in place.

import type { HostArray, SessionSettings } from '../runtime/session.ts';
import { CompiledGraph } from '../runtime/session.ts';
import { buildStepGraph, names, trainableSlots, type ModelSetup, type Slot, type StepKind, type StepObjective, type StepShape } from './step.ts';
import { adamwStep, DEFAULT_ADAMW, type AdamWSettings, type AdamWTensor } from './adamw.ts';
import type { SeededRandom } from '../data/random.ts';

/** One micro-batch, flattened row-major: every array has rows·seqLen entries. */
export interface MicroBatch {
  /** Its rows × seqLen when they are not the runner's own shape (each shape compiles its own graphs). */
  shape?: StepShape;
  inputIds: BigInt64Array;
  positionIds: BigInt64Array;
  segmentIds: BigInt64Array;
  /** Next-token targets (any valid id where the weight is 0). */
  labels: BigInt64Array;
  lossWeights: Float32Array;
}

/** What a runner trains. It updates the arrays in place: copy any you need to keep as they are. */
export interface OptimizerState {
  /** Optimizer steps taken so far. */
  step: number;
  params: Map<string, Float32Array>;
  m: Map<string, Float32Array>;
  v: Map<string, Float32Array>;
}

export interface LossSums {
  lossSum: number;
  weightSum: number;
  correct: number;
  counted: number;
}

export interface StepResult extends LossSums {
  gradNorm: number;
}

/** A frozen tensor's values: f32, or 2-byte floats' raw bits (ModelSetup.frozenDtype). */
export type FrozenValues = Float32Array | Uint16Array;

export function freshOptimizerState(params: Map<string, Float32Array>): OptimizerState {
  const zeros = () => new Map([...params].map(([k, p]) => [k, new Float32Array(p.length)]));
  return { step: 0, params, m: zeros(), v: zeros() };
}

const scalar = (x: number) => Float32Array.of(x);

/** The flat vector of a packed slot: the members' own memory when they are consecutive views of one buffer. */
function pack(slot: Slot, tensors: Map<string, Float32Array>): Float32Array {
  if (!slot.members) return tensors.get(slot.name)!;
  const parts = slot.members.map((n) => tensors.get(n)!);
  const first = parts[0];
  let at = first.byteOffset;
  const contiguous = parts.every((p) => p.buffer === first.buffer && p.byteOffset === at && ((at += p.byteLength), true));
  const total = parts.reduce((a, p) => a + p.length, 0);
  if (contiguous) return new Float32Array(first.buffer, first.byteOffset, total);
  const flat = new Float32Array(total);
  let k = 0;
  for (const p of parts) flat.set(p, (k += p.length) - p.length);
  return flat;
}

/** Views of a slot's flat vector, one per member (the slot itself when it is one tensor). */
function members(slot: Slot, flat: Float32Array, lengthOf: (n: string) => number): [string, Float32Array][] {
  if (!slot.members) return [[slot.name, flat]];
  let k = 0;
  return slot.members.map((n) => [n, flat.subarray(k, (k += lengthOf(n)))]);
}

/** A micro-batch as the step graphs' data inputs. */
export function microBatchFeeds(b: MicroBatch): Record<string, HostArray> {
  return {
    input_ids: b.inputIds,
    position_ids: b.positionIds,
    segment_ids: b.segmentIds,
    labels: b.labels,
    loss_weights: b.lossWeights,
  };
}

/** The step graph of `kind` at `shape`, compiled: ORT holds the calling thread meanwhile. */
export async function compileStep(setup: ModelSetup, shape: StepShape, kind: StepKind, settings: SessionSettings = {}, objective?: StepObjective): Promise<CompiledGraph> {
  return CompiledGraph.compile(buildStepGraph(setup, shape, kind, objective), settings);
}

const shapeKey = (kind: StepKind, s: StepShape) => (s.anyLength ? `${kind} any length` : `${kind} ${s.rows}×${s.seqLen}${s.packs === false ? ' unpacked' : ''}`);

export class StepRunner {
  /** By kind and shape: a job whose steps have a few row lengths keeps a few sessions. */
  private readonly sessions = new Map<string, Promise<CompiledGraph>>();
  protected readonly slots: Slot[];

  constructor(
    readonly setup: ModelSetup,
    readonly shape: StepShape,
    /** Frozen tensors by name (base weights under LoRA; 2-byte bits under setup.frozenDtype); fed once per session, never copied. */
    private readonly frozen: Map<string, FrozenValues>,
    public state: OptimizerState,
    private readonly adamw: AdamWSettings = DEFAULT_ADAMW,
    private readonly settings: SessionSettings = {},
    /** What the step graphs minimise (default: supervised cross-entropy; see dpo.ts). */
    private readonly objective?: StepObjective,
  ) {
    this.slots = trainableSlots(setup);
    // A packed slot's members become views of one flat vector, so feeding it copies nothing.
    for (const s of this.slots) {
      if (s.members) for (const [n, view] of members(s, pack(s, state.params), (n) => state.params.get(n)!.length)) state.params.set(n, view);
    }
  }

  protected paramFeeds(): Record<string, HostArray> {
    return Object.fromEntries(this.slots.map((s) => [s.name, pack(s, this.state.params)]));
  }

  protected session(kind: StepKind, shape: StepShape = this.shape): Promise<CompiledGraph> {
    const key = shapeKey(kind, shape);
    if (!this.sessions.has(key)) this.adopt(kind, shape, compileStep(this.setup, shape, kind, this.settings, this.objective));
    return this.sessions.get(key)!;
  }

  /** Runs `kind` at `shape` with `compiled`, compileStep's graph of them (started before this runner existed). */
  adopt(kind: StepKind, shape: StepShape, compiled: Promise<CompiledGraph>): void {
    this.sessions.set(
      shapeKey(kind, shape),
      compiled.then((c) => {
        for (const [name, data] of this.frozen) c.setResident(name, data);
        return c;
      }),
    );
  }

  protected batchFeeds(b: MicroBatch): Record<string, HostArray> {
    return microBatchFeeds(b);
  }

  /**
   * Inverted-dropout masks for the LoRA inputs (0 or 1/(1−p)), drawn from `rng`. Drawing a fresh
   * [N, in] mask per module would cost ~300M random numbers a step on a 30-layer model; instead
   * one pool of twice the largest mask is drawn and each module reads a window at its own random
   * offset (a zero-copy view). Every mask is i.i.d. Bernoulli; masks of two modules at the same
   * position come from different pool entries, so they are independent too.
   */
  protected dropoutFeeds(rng: SeededRandom | undefined, shape: StepShape = this.shape): Record<string, HostArray> {
    const lora = this.setup.lora;
    if (!lora || lora.dropout <= 0) return {};
    if (!rng) throw new Error('LoRA dropout needs an rng');
    const N = shape.rows * shape.seqLen;
    const keep = 1 / (1 - lora.dropout);
    const largest = N * Math.max(...lora.targets.map((t) => t.inFeatures));
    const pool = new Float32Array(2 * largest);
    for (let i = 0; i < pool.length; i++) pool[i] = rng.next() < lora.dropout ? 0 : keep;
    const feeds: Record<string, HostArray> = {};
    for (const t of lora.targets) {
      const offset = Math.floor(rng.next() * (pool.length - N * t.inFeatures + 1));
      feeds[names.dropout(t.path)] = pool.subarray(offset, offset + N * t.inFeatures);
    }
    return feeds;
  }

  /**
   * One optimizer step over `micro` (gradient accumulation when there are several): the gradient
   * of Σ loss · `invNormaliser`, then AdamW. Each micro-batch is fed through `batchFeeds`, with
   * dropout masks from `rng`; `onOutput` sees its outputs (loss terms). Returns the gradient norm
   * before clipping. An abort between micro-batches leaves the state untouched.
   */
  protected async optimizerStep(
    micro: MicroBatch[],
    invNormaliser: number,
    lr: number,
    rng: SeededRandom | undefined,
    onOutput: (out: Record<string, HostArray>) => void,
    signal?: AbortSignal,
  ): Promise<number> {
    const common = { inv_total_weight: scalar(invNormaliser), ...this.paramFeeds() };
    let out: Record<string, HostArray> = {};
    for (const [i, b] of micro.entries()) {
      if (i > 0) signal?.throwIfAborted();
      const gradIn = i === 0 ? {} : Object.fromEntries(this.slots.map((s) => [names.gradIn(s.name), out[names.grad(s.name)]]));
      const session = await this.session(i === 0 ? 'gradient' : 'accumulate', b.shape);
      out = await session.run({ ...common, ...gradIn, ...this.batchFeeds(b), ...this.dropoutFeeds(rng, b.shape) });
      onOutput(out);
    }
    const { params, m, v } = this.state;
    const tensors: AdamWTensor[] = this.slots.flatMap((s) =>
      members(s, out[names.grad(s.name)] as Float32Array, (n) => params.get(n)!.length).map(([n, grad]) => ({
        param: params.get(n)!,
        m: m.get(n)!,
        v: v.get(n)!,
        grad,
        decay: this.setup.shapes.get(n)!.length >= 2,
      })),
    );
    const norm = await adamwStep(tensors, (out.grad_norm_sq as Float32Array)[0], this.state.step + 1, lr, this.adamw);
    this.state.step += 1;
    return norm;
  }

  /**
   * One optimizer step over `micro` (gradient accumulation when there are several).
   * The loss is normalised by the total loss weight of all micro-batches together.
   */
  async step(micro: MicroBatch[], lr: number, rng?: SeededRandom, signal?: AbortSignal): Promise<StepResult> {
    const weightSum = micro.reduce((s, b) => s + b.lossWeights.reduce((a, w) => a + w, 0), 0);
    const sums: LossSums = { lossSum: 0, weightSum, correct: 0, counted: 0 };
    const gradNorm = await this.optimizerStep(micro, weightSum > 0 ? 1 / weightSum : 0, lr, rng, (out) => {
      sums.lossSum += (out.loss_sum as Float32Array)[0];
      sums.correct += (out.correct as Float32Array)[0];
      sums.counted += (out.counted as Float32Array)[0];
    }, signal);
    return { ...sums, gradNorm };
  }

  /** Loss sums over `batches` with the current weights (no dropout, no update). */
  async evaluate(batches: MicroBatch[]): Promise<LossSums> {
    const sums: LossSums = { lossSum: 0, weightSum: 0, correct: 0, counted: 0 };
    for (const b of batches) {
      const s = await this.session('eval', b.shape);
      const out = await s.run({ ...this.paramFeeds(), ...this.batchFeeds(b) }, ['loss_sum', 'correct', 'counted']);
      sums.lossSum += (out.loss_sum as Float32Array)[0];
      sums.weightSum += b.lossWeights.reduce((a, w) => a + w, 0);
      sums.correct += (out.correct as Float32Array)[0];
      sums.counted += (out.counted as Float32Array)[0];
    }
    return sums;
  }

  async release(): Promise<void> {
    for (const s of this.sessions.values()) await (await s).release();
    this.sessions.clear();
  }
}
