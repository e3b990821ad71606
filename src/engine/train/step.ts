// The training-step graphs, one ONNX graph (and ORT session) per kind, built once per job (see
// StepKind). Frozen weights are plain inputs the runner keeps resident; only trainable tensors,
// the batch and the gradients cross the boundary (AdamW runs on the host, see adamw.ts).
// Gradients are of Σ w·nll / W_batch with W_batch fed per step, so the micro-batches of an
// accumulated step sum to the batch mean.

import { ANY_LENGTH, Graph, type FloatType, type Tensor } from '../graph/ir.ts';
import * as op from '../graph/ops.ts';
import { gradients } from '../graph/autodiff.ts';
import type { ModelConfig } from '../models/config.ts';
import { headWeightName, llamaHidden, type LmHead, llamaInputs } from '../models/llama.ts';
import { oneTile } from '../models/attention.ts';
import type { HalfDtype } from '../io/safetensors.ts';
import type { LoraModule, LoraSpec } from '../models/lora.ts';
import { crossEntropyTerms, headChunkRows } from './loss.ts';

export interface StepShape {
  /** Rows (sequences) per micro-batch. */
  rows: number;
  seqLen: number;
  /**
   * Whether a row may pack several examples (default): attention then masks by segment. False:
   * one example per row, padding at its end; the graph masks causally only and has no
   * segment_ids input (see attentionPlan), and computes the same loss and gradients.
   */
  packs?: boolean;
  /**
   * One unpacked row of any length up to anyLengthLimit, seqLen being this micro-batch's: every
   * such micro-batch runs one graph built for any length (ANY_LENGTH in graph/ir.ts), so a job
   * whose steps are single examples compiles once and pads nothing.
   */
  anyLength?: boolean;
}

/**
 * The longest row a graph for any length takes: its attention is one tile (probabilities kept,
 * [heads·T, T] a layer) and its head one chunk of logits (headChunkRows), which bound it; longer
 * rows run fixed-length graphs, whose compile their rows' length amortises.
 */
export function anyLengthLimit(cfg: ModelConfig): number {
  return Math.min(512, headChunkRows(cfg.vocabSize));
}

export interface ModelSetup {
  cfg: ModelConfig;
  /** name → shape of every tensor the model reads (base weights and LoRA tensors). */
  shapes: Map<string, number[]>;
  /** Names of the trainable tensors (LoRA A/B, or every base weight for full fine-tuning). */
  trainable: string[];
  lora: (LoraSpec & { targets: LoraModule[] }) | null;
  /**
   * Feed the trainable tensors, and output their gradients, as one flat vector: for LoRA's
   * hundreds of small tensors, one feed and one output instead of hundreds.
   */
  packed?: boolean;
  float?: FloatType;
  /** How many decoder layers (the first ones) recompute their activations in the backward instead of keeping them (llama.ts; default 0). */
  recompute?: number;
  /** How many decoder layers after those recompute only their MLP (llama.ts; default 0). */
  recomputeMlp?: number;
  /**
   * The frozen weights' stored 2-byte format: they are fed as raw bits (uint16 inputs, half of f32's
   * memory) and widened inside the graph where read (see halfFrozen). Absent: f32.
   */
  frozenDtype?: HalfDtype;
}

/** The frozen tensors fed as 2-byte bits under setup.frozenDtype: all but the LM head's weight. */
export function halfFrozen(setup: ModelSetup): Set<string> {
  if (!setup.frozenDtype) return new Set();
  const trainable = new Set(setup.trainable);
  const head = headWeightName(setup.cfg);
  return new Set([...setup.shapes.keys()].filter((n) => !trainable.has(n) && n !== head));
}

/** A graph-level trainable input: one tensor, or (packed) all of them as a flat vector. */
export interface Slot {
  name: string;
  shape: number[];
  /** The trainable tensors packed into this slot, in order (absent when it is one tensor). */
  members?: string[];
}

const sizeOf = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

export function trainableSlots(setup: ModelSetup): Slot[] {
  const shapeOf = (n: string) => setup.shapes.get(n)!;
  if (!setup.packed) return setup.trainable.map((n) => ({ name: n, shape: shapeOf(n) }));
  const total = setup.trainable.reduce((a, n) => a + sizeOf(shapeOf(n)), 0);
  return [{ name: 'trainable', shape: [total], members: setup.trainable }];
}

/**
 * gradient:   forward + backward; outputs this micro-batch's gradient of every slot.
 * accumulate: the same, plus grad_in: outputs grad_in + this micro-batch's gradient.
 * eval:       forward + loss terms.
 * Both training kinds also output `grad_norm_sq`, the squared global norm of what they output.
 */
export type StepKind = 'gradient' | 'accumulate' | 'eval';
/** Graph input/output names, shared by the builders and the runner. */
export const names = {
  grad: (n: string) => `grad:${n}`,
  gradIn: (n: string) => `grad_in:${n}`,
  dropout: (path: string) => `dropout:${path}`,
};

/**
 * What a step graph minimises, given the model's head (final hidden states and head weight: the
 * objective applies it in token chunks, see loss.ts) and the batch's labels and loss weights [N]:
 * adds its own inputs and outputs to `g` and returns the summed loss to differentiate (the runner
 * seeds it with `inv_total_weight`). Default: supervised cross-entropy; DPO has its own.
 */
export type StepObjective = (g: Graph, head: LmHead, labels: Tensor, lossWeights: Tensor, kind: StepKind) => Tensor;

export const supervisedObjective: StepObjective = (g, head, labels, lossWeights) => {
  const terms = crossEntropyTerms(head, labels, lossWeights);
  g.output('loss_sum', terms.weightedNll);
  g.output('correct', terms.correct);
  g.output('counted', terms.counted);
  return terms.weightedNll;
};

/** With `atLongest`, an any-length shape is built at its seqLen instead (what the memory estimate runs on paper). */
export function buildStepGraph(setup: ModelSetup, shape: StepShape, kind: StepKind, objective: StepObjective = supervisedObjective, atLongest = false): Graph {
  const g = new Graph(setup.float ?? 'float32');
  const shapeOf = (n: string) => setup.shapes.get(n)!;
  const slots = trainableSlots(setup);
  const slotInputs = slots.map((s) => g.input(s.name, s.shape));

  const B = shape.rows;
  const T = shape.anyLength && !atLongest ? ANY_LENGTH : shape.seqLen;
  if (shape.anyLength && (B !== 1 || shape.packs || shape.seqLen > anyLengthLimit(setup.cfg))) {
    throw new Error(`a graph for any length takes one unpacked row of at most ${anyLengthLimit(setup.cfg)} tokens, not ${B} × ${shape.seqLen}`);
  }
  const N = B * T;
  const inputs = llamaInputs(g, B, T, !shape.anyLength && (shape.packs ?? true));
  const labels = g.input('labels', [N], 'int64');
  const lossWeights = g.input('loss_weights', [N]);

  const tensors = new Map<string, Tensor>();
  slots.forEach((s, i) => {
    if (!s.members) return void tensors.set(s.name, slotInputs[i]);
    const parts = op.split(slotInputs[i], s.members.map((n) => sizeOf(shapeOf(n))));
    s.members.forEach((n, j) => tensors.set(n, op.reshape(parts[j], shapeOf(n))));
  });
  const half = halfFrozen(setup);
  const weight = (name: string, s: number[]) => {
    if (!tensors.has(name)) tensors.set(name, g.input(name, s, half.has(name) ? 'uint16' : g.float));
    return tensors.get(name)!;
  };
  const lora = setup.lora;
  const dropout = kind !== 'eval' && lora && lora.dropout > 0;
  const head = llamaHidden(g, setup.cfg, inputs, {
    weight,
    lora: lora
      ? {
          ...lora,
          targets: new Set(lora.targets.map((t) => t.path)),
          dropoutMask: dropout ? (path, s) => g.input(names.dropout(path), s) : undefined,
        }
      : undefined,
    recompute: kind === 'eval' ? 0 : setup.recompute,
    recomputeMlp: kind === 'eval' ? 0 : setup.recomputeMlp,
    halfDtype: setup.frozenDtype,
    // Built at its longest row for the estimate, the graph for any length keeps its one tile.
    ...(shape.anyLength ? { attentionTiling: oneTile(T), longest: anyLengthLimit(setup.cfg) } : {}),
  });
  const lossSum = objective(g, head, labels, lossWeights, kind);
  if (kind === 'eval') return g;

  const invTotalWeight = g.input('inv_total_weight', []);
  const grads = gradients(lossSum, slotInputs, invTotalWeight).map((d, i) => {
    if (!d) throw new Error(`${slots[i].name} does not affect the loss`);
    return d;
  });
  const outs = slots.map((s, i) => g.output(names.grad(s.name), kind === 'accumulate' ? op.add(g.input(names.gradIn(s.name), s.shape), grads[i]) : grads[i]));
  g.output('grad_norm_sq', outs.map(op.sumSquares).reduce((a, b) => op.add(a, b)));
  return g;
}
