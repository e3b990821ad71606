// Runs the step graphs: frozen weights resident in each session, trainable tensors and AdamW
// moments owned here in JS and swapped for the graph's outputs after every optimizer step.

import type { HostArray, SessionSettings } from '../runtime/session.ts';
import { CompiledGraph } from '../runtime/session.ts';
import { buildStepGraph, DEFAULT_ADAMW, names, type AdamWSettings, type ModelSetup, type StepKind, type StepShape } from './step.ts';
import type { Rng } from './rng.ts';

/** One micro-batch, flattened row-major: every array has rows·seqLen entries. */
export interface MicroBatch {
  inputIds: BigInt64Array;
  positionIds: BigInt64Array;
  segmentIds: BigInt64Array;
  /** Next-token targets (any valid id where the weight is 0). */
  labels: BigInt64Array;
  lossWeights: Float32Array;
}

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

export function freshOptimizerState(params: Map<string, Float32Array>): OptimizerState {
  const zeros = () => new Map([...params].map(([k, p]) => [k, new Float32Array(p.length)]));
  return { step: 0, params, m: zeros(), v: zeros() };
}

const scalar = (x: number) => Float32Array.of(x);

export class StepRunner {
  private readonly sessions = new Map<StepKind, Promise<CompiledGraph>>();

  constructor(
    readonly setup: ModelSetup,
    readonly shape: StepShape,
    /** Frozen tensors by name (base weights under LoRA); fed once per session, never copied. */
    private readonly frozen: Map<string, Float32Array>,
    public state: OptimizerState,
    private readonly adamw: AdamWSettings = DEFAULT_ADAMW,
    private readonly settings: SessionSettings = {},
  ) {}

  private session(kind: StepKind): Promise<CompiledGraph> {
    let s = this.sessions.get(kind);
    if (!s) {
      s = CompiledGraph.compile(buildStepGraph(this.setup, this.shape, kind, this.adamw), this.settings).then((c) => {
        for (const [name, data] of this.frozen) c.setResident(name, data);
        return c;
      });
      this.sessions.set(kind, s);
    }
    return s;
  }

  private batchFeeds(b: MicroBatch): Record<string, HostArray> {
    return {
      input_ids: b.inputIds,
      position_ids: b.positionIds,
      segment_ids: b.segmentIds,
      labels: b.labels,
      loss_weights: b.lossWeights,
    };
  }

  /** Inverted-dropout masks for the LoRA inputs (0 or 1/(1−p)), drawn from `rng`. */
  private dropoutFeeds(rng: Rng | undefined): Record<string, HostArray> {
    const lora = this.setup.lora;
    if (!lora || lora.dropout <= 0) return {};
    if (!rng) throw new Error('LoRA dropout needs an rng');
    const N = this.shape.rows * this.shape.seqLen;
    const keep = 1 / (1 - lora.dropout);
    const feeds: Record<string, HostArray> = {};
    for (const t of lora.targets) {
      const mask = new Float32Array(N * t.inFeatures);
      for (let i = 0; i < mask.length; i++) mask[i] = rng.next() < lora.dropout ? 0 : keep;
      feeds[names.dropout(t.path)] = mask;
    }
    return feeds;
  }

  private optimizerFeeds(lr: number): Record<string, HostArray> {
    const t = this.state.step + 1;
    const feeds: Record<string, HostArray> = {
      lr: scalar(lr),
      bias_correction1: scalar(1 / (1 - Math.pow(this.adamw.beta1, t))),
      bias_correction2: scalar(1 / (1 - Math.pow(this.adamw.beta2, t))),
    };
    for (const n of this.setup.trainable) {
      feeds[names.m(n)] = this.state.m.get(n)!;
      feeds[names.v(n)] = this.state.v.get(n)!;
    }
    return feeds;
  }

  private takeUpdate(out: Record<string, HostArray>): number {
    for (const n of this.setup.trainable) {
      this.state.params.set(n, out[names.newParam(n)] as Float32Array);
      this.state.m.set(n, out[names.newM(n)] as Float32Array);
      this.state.v.set(n, out[names.newV(n)] as Float32Array);
    }
    this.state.step += 1;
    return (out.grad_norm as Float32Array)[0];
  }

  /**
   * One optimizer step over `micro` (gradient accumulation when there are several).
   * The loss is normalised by the total loss weight of all micro-batches together.
   */
  async step(micro: MicroBatch[], lr: number, rng?: Rng, signal?: AbortSignal): Promise<StepResult> {
    const weightSum = micro.reduce((s, b) => s + b.lossWeights.reduce((a, w) => a + w, 0), 0);
    const common = { inv_total_weight: scalar(weightSum > 0 ? 1 / weightSum : 0), ...Object.fromEntries(this.state.params) };
    const sums: LossSums = { lossSum: 0, weightSum, correct: 0, counted: 0 };
    const add = (out: Record<string, HostArray>) => {
      sums.lossSum += (out.loss_sum as Float32Array)[0];
      sums.correct += (out.correct as Float32Array)[0];
      sums.counted += (out.counted as Float32Array)[0];
    };

    if (micro.length === 1) {
      const s = await this.session('update');
      const out = await s.run({ ...common, ...this.batchFeeds(micro[0]), ...this.dropoutFeeds(rng), ...this.optimizerFeeds(lr) });
      add(out);
      return { ...sums, gradNorm: this.takeUpdate(out) };
    }

    const acc = await this.session('accumulate');
    let grads: Record<string, HostArray> = {};
    for (const n of this.setup.trainable) grads[names.gradIn(n)] = new Float32Array(this.state.params.get(n)!.length);
    for (const b of micro) {
      signal?.throwIfAborted(); // a long accumulation stops between micro-batches, state untouched
      const out = await acc.run({ ...common, ...grads, ...this.batchFeeds(b), ...this.dropoutFeeds(rng) });
      add(out);
      grads = Object.fromEntries(this.setup.trainable.map((n) => [names.gradIn(n), out[names.grad(n)]]));
    }
    const apply = await this.session('apply');
    const applyFeeds: Record<string, HostArray> = { ...Object.fromEntries(this.state.params), ...this.optimizerFeeds(lr) };
    for (const n of this.setup.trainable) applyFeeds[names.grad(n)] = grads[names.gradIn(n)];
    return { ...sums, gradNorm: this.takeUpdate(await apply.run(applyFeeds)) };
  }

  /** Loss sums over `batches` with the current weights (no dropout, no update). */
  async evaluate(batches: MicroBatch[]): Promise<LossSums> {
    const s = await this.session('eval');
    const sums: LossSums = { lossSum: 0, weightSum: 0, correct: 0, counted: 0 };
    for (const b of batches) {
      const out = await s.run({ ...Object.fromEntries(this.state.params), ...this.batchFeeds(b) }, ['loss_sum', 'correct', 'counted']);
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
