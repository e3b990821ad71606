// The graphs and sessions of a reinforcement step.
//
// Policy gradient with a KL penalty needs no new backward rule: at the parameters θ the samples
// were drawn with, the gradient of
//   J(θ) = (1/G) Σ_i (1/T_i) Σ_t [ −A_i · log π_θ(y_t) + β · KL_t(θ) ],
//   KL_t = r_t − log r_t − 1,  r_t = π_ref(y_t) / π_θ(y_t)          (k3 estimator, Schulman 2020)
// is that of the weighted NLL  (1/G) Σ_i Σ_t w_t · nll_t(θ)  with constant per-token weights
//   w_t = (A_i + β · (r_t − 1)) / T_i,
// because ∂KL_t/∂nll_t = r_t − 1 and ∂(−A log π)/∂nll = A. So the supervised step graphs
// (step.ts: weighted NLL, backward, clip, AdamW) do the update; this file adds one forward-only
// graph that scores per-token log-probabilities (policy and reference) to compute r_t, and a runner
// that feeds 1/G as the normaliser instead of 1/Σw (signed weights can sum to ~0).
//
// LoRA dropout is off in these graphs: the ratio r_t and the on-policy gradient are of the
// policy that sampled, which has no dropout.

import { Graph, type Tensor } from '../graph/ir.ts';
import * as op from '../graph/ops.ts';
import { llamaLogits } from '../models/llama.ts';
import { CompiledGraph, type HostArray, type SessionSettings } from '../runtime/session.ts';
import type { MicroBatch, OptimizerState } from './runner.ts';
import { buildStepGraph, DEFAULT_ADAMW, names, trainableSlots, type AdamWSettings, type ModelSetup, type Slot, type StepShape } from './step.ts';

const sizeOf = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/** The setup with LoRA dropout switched off (see the header). */
export function withoutDropout(setup: ModelSetup): ModelSetup {
  return setup.lora && setup.lora.dropout > 0 ? { ...setup, lora: { ...setup.lora, dropout: 0 } } : setup;
}

/**
 * Forward only: for each position, nll = −log p(label) and hit = [label is the argmax], both [N].
 * Trainable tensors are inputs (slots), so the same session scores the policy (current tensors)
 * and, under LoRA, the reference (zero adapter).
 */
export function buildTokenScoreGraph(setup: ModelSetup, shape: StepShape): Graph {
  const g = new Graph(setup.float ?? 'float32');
  const shapeOf = (n: string) => setup.shapes.get(n)!;
  const slots = trainableSlots(setup);
  const tensors = new Map<string, Tensor>();
  for (const s of slots) {
    const input = g.input(s.name, s.shape);
    if (!s.members) tensors.set(s.name, input);
    else {
      const parts = op.split(input, s.members.map((n) => sizeOf(shapeOf(n))));
      s.members.forEach((n, j) => tensors.set(n, op.reshape(parts[j], shapeOf(n))));
    }
  }
  const { rows: B, seqLen: T } = shape;
  const N = B * T;
  const inputs = {
    inputIds: g.input('input_ids', [B, T], 'int64'),
    positionIds: g.input('position_ids', [B, T], 'int64'),
    segmentIds: g.input('segment_ids', [B, T], 'int64'),
  };
  const labels = g.input('labels', [N], 'int64');
  const weight = (name: string, s: number[]) => {
    if (!tensors.has(name)) tensors.set(name, g.input(name, s));
    return tensors.get(name)!;
  };
  const lora = setup.lora;
  const logits = llamaLogits(g, setup.cfg, inputs, {
    weight,
    lora: lora ? { ...lora, targets: new Set(lora.targets.map((t) => t.path)) } : undefined,
  });
  const { nll } = op.softmaxCrossEntropy(logits, labels);
  g.output('nll', nll);
  const picked = op.gatherElements(logits, op.reshape(labels, [N, 1]), 1);
  const max = g.emit('ReduceMax', [logits, g.ints([1])], { keepdims: 1 }, [{ shape: [N, 1], dtype: g.float }])[0];
  g.output('hit', op.reshape(op.cast(op.not(op.less(picked, max)), g.float), [N]));
  return g;
}

/** The flat vector of a packed slot (a copy unless the members are consecutive views of one buffer). */
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

function unpack(slot: Slot, flat: Float32Array, into: Map<string, Float32Array>): void {
  if (!slot.members) return void into.set(slot.name, flat);
  let k = 0;
  for (const n of slot.members) {
    const len = into.get(n)!.length;
    into.set(n, flat.subarray(k, (k += len)));
  }
}

const scalar = (x: number) => Float32Array.of(x);

/** Per-token scores of one micro-batch. */
export interface TokenScores {
  nll: Float32Array;
  hit: Float32Array;
}

/**
 * Sessions of a reinforcement job: token scoring, and the supervised update graphs driven with
 * signed per-token weights and a fed normaliser. (Like runner.ts StepRunner, which normalises by
 * Σ weights; kept separate so the supervised runner stays as it is.)
 */
export class RftStepRunner {
  private readonly sessions = new Map<string, Promise<CompiledGraph>>();
  private readonly slots: Slot[];
  readonly setup: ModelSetup;

  constructor(
    setup: ModelSetup,
    readonly shape: StepShape,
    private readonly frozen: Map<string, Float32Array>,
    public state: OptimizerState,
    private readonly adamw: AdamWSettings = DEFAULT_ADAMW,
    private readonly settings: SessionSettings = {},
  ) {
    this.setup = withoutDropout(setup);
    this.slots = trainableSlots(this.setup);
  }

  private session(kind: 'score' | 'update' | 'accumulate' | 'apply'): Promise<CompiledGraph> {
    let s = this.sessions.get(kind);
    if (!s) {
      const graph = kind === 'score' ? buildTokenScoreGraph(this.setup, this.shape) : buildStepGraph(this.setup, this.shape, kind, this.adamw);
      s = CompiledGraph.compile(graph, this.settings).then((c) => {
        for (const [name, data] of this.frozen) c.setResident(name, data);
        return c;
      });
      this.sessions.set(kind, s);
    }
    return s;
  }

  private paramFeeds(params: Map<string, Float32Array>): Record<string, HostArray> {
    return Object.fromEntries(this.slots.map((s) => [s.name, pack(s, params)]));
  }

  private static batchFeeds(b: MicroBatch): Record<string, HostArray> {
    return { input_ids: b.inputIds, position_ids: b.positionIds, segment_ids: b.segmentIds, labels: b.labels, loss_weights: b.lossWeights };
  }

  /** Per-token nll and argmax hits of `batch` under `params` (default: the current trainable tensors). */
  async score(batch: MicroBatch, params: Map<string, Float32Array> = this.state.params): Promise<TokenScores> {
    const s = await this.session('score');
    const out = await s.run({ ...this.paramFeeds(params), ...RftStepRunner.batchFeeds(batch) });
    return { nll: out.nll as Float32Array, hit: out.hit as Float32Array };
  }

  private optimizerFeeds(lr: number): Record<string, HostArray> {
    const t = this.state.step + 1;
    const feeds: Record<string, HostArray> = {
      lr: scalar(lr),
      bias_correction1: scalar(1 / (1 - Math.pow(this.adamw.beta1, t))),
      bias_correction2: scalar(1 / (1 - Math.pow(this.adamw.beta2, t))),
    };
    for (const s of this.slots) {
      feeds[names.m(s.name)] = pack(s, this.state.m);
      feeds[names.v(s.name)] = pack(s, this.state.v);
    }
    return feeds;
  }

  private takeUpdate(out: Record<string, HostArray>): number {
    for (const s of this.slots) {
      unpack(s, out[names.newParam(s.name)] as Float32Array, this.state.params);
      unpack(s, out[names.newM(s.name)] as Float32Array, this.state.m);
      unpack(s, out[names.newV(s.name)] as Float32Array, this.state.v);
    }
    this.state.step += 1;
    return (out.grad_norm as Float32Array)[0];
  }

  /**
   * One optimizer step on Σ w·nll · invNormaliser over the micro-batches (their lossWeights are the
   * signed per-token weights). Returns the gradient norm before clipping.
   */
  async step(micro: MicroBatch[], invNormaliser: number, lr: number, signal?: AbortSignal): Promise<number> {
    const common = { inv_total_weight: scalar(invNormaliser), ...this.paramFeeds(this.state.params) };
    if (micro.length === 1) {
      const s = await this.session('update');
      return this.takeUpdate(await s.run({ ...common, ...RftStepRunner.batchFeeds(micro[0]), ...this.optimizerFeeds(lr) }));
    }
    const acc = await this.session('accumulate');
    let grads: Record<string, HostArray> = {};
    for (const s of this.slots) grads[names.gradIn(s.name)] = new Float32Array(sizeOf(s.shape));
    for (const b of micro) {
      signal?.throwIfAborted();
      const out = await acc.run({ ...common, ...grads, ...RftStepRunner.batchFeeds(b) });
      grads = Object.fromEntries(this.slots.map((s) => [names.gradIn(s.name), out[names.grad(s.name)]]));
    }
    const apply = await this.session('apply');
    const feeds: Record<string, HostArray> = { ...this.paramFeeds(this.state.params), ...this.optimizerFeeds(lr) };
    for (const s of this.slots) feeds[names.grad(s.name)] = grads[names.gradIn(s.name)];
    return this.takeUpdate(await apply.run(feeds));
  }

  /** Gradient of Σ w·nll · invNormaliser for one micro-batch (tests: checks against finite differences). */
  async gradient(batch: MicroBatch, invNormaliser: number): Promise<Record<string, Float32Array>> {
    const acc = await this.session('accumulate');
    const feeds: Record<string, HostArray> = { inv_total_weight: scalar(invNormaliser), ...this.paramFeeds(this.state.params), ...RftStepRunner.batchFeeds(batch) };
    for (const s of this.slots) feeds[names.gradIn(s.name)] = new Float32Array(sizeOf(s.shape));
    const out = await acc.run(feeds);
    return Object.fromEntries(this.slots.map((s) => [s.name, out[names.grad(s.name)] as Float32Array]));
  }

  async release(): Promise<void> {
    for (const s of this.sessions.values()) await (await s).release();
    this.sessions.clear();
  }
}
