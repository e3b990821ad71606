// The training-step graphs, one ONNX graph (and ORT session) per kind, built once per job (see
// StepKind). Frozen weights are plain inputs the runner keeps resident; only trainable tensors,
// their AdamW moments and the batch cross the boundary. Gradients are of Σ w·nll / W_batch with
// W_batch fed per step, so the micro-batches of an accumulated step sum to the batch mean.

import { Graph, type FloatType, type Tensor } from '../graph/ir.ts';
import * as op from '../graph/ops.ts';
import { gradients } from '../graph/autodiff.ts';
import type { ModelConfig } from '../models/config.ts';
import { llamaLogits } from '../models/llama.ts';
import type { LoraModule, LoraSpec } from '../models/lora.ts';
import { crossEntropyTerms } from './loss.ts';

export interface StepShape {
  /** Rows (sequences) per micro-batch. */
  rows: number;
  seqLen: number;
}

export interface AdamWSettings {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Clip the global gradient norm to this (0 = no clipping). */
  maxGradNorm: number;
}

export const DEFAULT_ADAMW: AdamWSettings = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.0, maxGradNorm: 1.0 };

export interface ModelSetup {
  cfg: ModelConfig;
  /** name → shape of every tensor the model reads (base weights and LoRA tensors). */
  shapes: Map<string, number[]>;
  /** Names of the trainable tensors (LoRA A/B, or every base weight for full fine-tuning). */
  trainable: string[];
  lora: (LoraSpec & { targets: LoraModule[] }) | null;
  /**
   * Feed the trainable tensors (and their gradients and moments) as one flat vector. For LoRA's
   * hundreds of small tensors this turns ~14 optimizer nodes per tensor into ~14 in all, and
   * hundreds of feeds and outputs into a few.
   */
  packed?: boolean;
  float?: FloatType;
}

/** A graph-level trainable input: one tensor, or (packed) all of them as a flat vector. */
export interface Slot {
  name: string;
  shape: number[];
  /** The trainable tensors packed into this slot, in order (absent when it is one tensor). */
  members?: string[];
  /** Decoupled weight decay applies (matrices only, like HF's Trainer: no biases or norms). */
  decay: boolean;
}

const sizeOf = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

export function trainableSlots(setup: ModelSetup): Slot[] {
  const shapeOf = (n: string) => setup.shapes.get(n)!;
  if (!setup.packed) return setup.trainable.map((n) => ({ name: n, shape: shapeOf(n), decay: shapeOf(n).length >= 2 }));
  if (!setup.trainable.every((n) => shapeOf(n).length >= 2)) throw new Error('packed trainables must all be matrices');
  const total = setup.trainable.reduce((a, n) => a + sizeOf(shapeOf(n)), 0);
  return [{ name: 'trainable', shape: [total], members: setup.trainable, decay: true }];
}

/**
 * update:     forward + backward + clip + AdamW in one graph (a step of one micro-batch).
 * accumulate: forward + backward; outputs grad_in + this micro-batch's gradient.
 * apply:      clip + AdamW only, on accumulated gradients (ends a multi-micro-batch step).
 * eval:       forward + loss terms.
 */
export type StepKind = 'update' | 'accumulate' | 'apply' | 'eval';
/** Graph input/output names, shared by the builders and the runner. */
export const names = {
  grad: (n: string) => `grad:${n}`,
  gradIn: (n: string) => `grad_in:${n}`,
  m: (n: string) => `m:${n}`,
  v: (n: string) => `v:${n}`,
  newParam: (n: string) => `new:${n}`,
  newM: (n: string) => `new_m:${n}`,
  newV: (n: string) => `new_v:${n}`,
  dropout: (path: string) => `dropout:${path}`,
};

/**
 * What a step graph minimises, given the model's logits [N, vocab] and the batch's labels and loss
 * weights [N]: adds its own inputs and outputs to `g` and returns the summed loss to differentiate
 * (the runner seeds it with `inv_total_weight`). Default: supervised cross-entropy; DPO has its own.
 */
export type StepObjective = (g: Graph, logits: Tensor, labels: Tensor, lossWeights: Tensor, kind: StepKind) => Tensor;

export const supervisedObjective: StepObjective = (g, logits, labels, lossWeights) => {
  const terms = crossEntropyTerms(logits, labels, lossWeights);
  g.output('loss_sum', terms.weightedNll);
  g.output('correct', terms.correct);
  g.output('counted', terms.counted);
  return terms.weightedNll;
};

export function buildStepGraph(setup: ModelSetup, shape: StepShape, kind: StepKind, adamw = DEFAULT_ADAMW, objective: StepObjective = supervisedObjective): Graph {
  const g = new Graph(setup.float ?? 'float32');
  const shapeOf = (n: string) => setup.shapes.get(n)!;
  const slots = trainableSlots(setup);
  const slotInputs = slots.map((s) => g.input(s.name, s.shape));
  if (kind === 'apply') {
    clipAndAdamW(g, slots, slotInputs, slots.map((s) => g.input(names.grad(s.name), s.shape)), adamw);
    return g;
  }

  const { rows: B, seqLen: T } = shape;
  const N = B * T;
  const inputs = {
    inputIds: g.input('input_ids', [B, T], 'int64'),
    positionIds: g.input('position_ids', [B, T], 'int64'),
    segmentIds: g.input('segment_ids', [B, T], 'int64'),
  };
  const labels = g.input('labels', [N], 'int64');
  const lossWeights = g.input('loss_weights', [N]);

  const tensors = new Map<string, Tensor>();
  slots.forEach((s, i) => {
    if (!s.members) return void tensors.set(s.name, slotInputs[i]);
    const parts = op.split(slotInputs[i], s.members.map((n) => sizeOf(shapeOf(n))));
    s.members.forEach((n, j) => tensors.set(n, op.reshape(parts[j], shapeOf(n))));
  });
  const weight = (name: string, s: number[]) => {
    if (!tensors.has(name)) tensors.set(name, g.input(name, s));
    return tensors.get(name)!;
  };
  const lora = setup.lora;
  const dropout = kind !== 'eval' && lora && lora.dropout > 0;
  const logits = llamaLogits(g, setup.cfg, inputs, {
    weight,
    lora: lora
      ? {
          ...lora,
          targets: new Set(lora.targets.map((t) => t.path)),
          dropoutMask: dropout ? (path, s) => g.input(names.dropout(path), s) : undefined,
        }
      : undefined,
  });
  const lossSum = objective(g, logits, labels, lossWeights, kind);
  if (kind === 'eval') return g;

  const invTotalWeight = g.input('inv_total_weight', []);
  const grads = gradients(lossSum, slotInputs, invTotalWeight).map((d, i) => {
    if (!d) throw new Error(`${slots[i].name} does not affect the loss`);
    return d;
  });
  if (kind === 'accumulate') {
    slots.forEach((s, i) => g.output(names.grad(s.name), op.add(g.input(names.gradIn(s.name), s.shape), grads[i])));
  } else {
    clipAndAdamW(g, slots, slotInputs, grads, adamw);
  }
  return g;
}

function clipAndAdamW(g: Graph, slots: Slot[], params: Tensor[], grads: Tensor[], adamw: AdamWSettings): void {
  // For full fine-tuning every pass below is one sweep over all weights, so the math is arranged
  // for few passes: d² serves both the norm and v, and clipping and the bias corrections become
  // scalar factors (13 passes per tensor instead of 17).
  const squares = grads.map((d) => op.mul(d, d));
  const norm = op.sqrt(squares.map((d2) => op.sumAll(d2)).reduce((a, b) => op.add(a, b)));
  g.output('grad_norm', norm);
  // Global-norm clipping (torch.nn.utils.clip_grad_norm_: coef = max_norm / (norm + 1e-6), capped at 1).
  const coef = adamw.maxGradNorm > 0 ? op.min(g.scalar(1), op.div(g.scalar(adamw.maxGradNorm), op.add(norm, 1e-6))) : g.scalar(1);

  // AdamW (Loshchilov & Hutter; torch.optim.AdamW) on the clipped gradient c·d:
  //   m' = β1·m + ((1−β1)·c)·d        v' = β2·v + ((1−β2)·c²)·d²
  //   p' = p·(1 − lr·wd) − lr·bc1·m' / (√(v'·bc2) + ε) = p·(1 − lr·wd) − s·m' / (√v' + ε/√bc2),
  //   s = lr·bc1/√bc2, with bc_i = 1/(1−β_i^t). lr and bc_i are fed per step: the schedule lives in JS.
  const lr = g.input('lr', []);
  const bc1 = g.input('bias_correction1', []);
  const sqrtBc2 = op.sqrt(g.input('bias_correction2', []));
  const mScale = op.mul(coef, 1 - adamw.beta1);
  const vScale = op.mul(op.mul(coef, coef), 1 - adamw.beta2);
  const stepSize = op.div(op.mul(lr, bc1), sqrtBc2);
  const eps = op.div(g.scalar(adamw.eps), sqrtBc2);
  slots.forEach(({ name, decay }, i) => {
    const p = params[i];
    const m = op.add(op.mul(g.input(names.m(name), p.shape), adamw.beta1), op.mul(grads[i], mScale));
    const v = op.add(op.mul(g.input(names.v(name), p.shape), adamw.beta2), op.mul(squares[i], vScale));
    const decayed = adamw.weightDecay > 0 && decay ? op.mul(p, op.sub(g.scalar(1), op.mul(lr, adamw.weightDecay))) : p;
    g.output(names.newParam(name), op.sub(decayed, op.mul(op.div(m, op.add(op.sqrt(v), eps)), stepSize)));
    g.output(names.newM(name), m);
    g.output(names.newV(name), v);
  });
}
