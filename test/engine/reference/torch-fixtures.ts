// Reference values written by scripts/torch-reference.py (PyTorch, float64; see its header), and
// the comparison the reference tests share.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadHfModel } from '../../../src/engine/io/hf-model.ts';
import { readSafetensors } from '../../../src/engine/io/safetensors.ts';
import type { ModelConfig } from '../../../src/engine/models/config.ts';
import { modelSetup } from '../../../src/engine/train/setup.ts';
import { names, type ModelSetup } from '../../../src/engine/train/step.ts';
import type { MicroBatch } from '../../../src/engine/train/runner.ts';

const ROOT = join(import.meta.dirname, '..', '..', '..');
export const FIXTURES = join(ROOT, 'test', 'fixtures', 'torch');

interface BatchJson {
  rows: number;
  seqLen: number;
  input_ids: number[][];
  position_ids: number[][];
  segment_ids: number[][];
  labels: number[][];
  loss_weights: number[][];
}

interface CaseJson {
  model: string;
  mode: 'full' | 'lora';
  batch: BatchJson;
  loss: number;
  lora?: { rank: number; alpha: number; dropout: number; targetModules: string[] };
}

export interface AdamWJson {
  settings: { beta1: number; beta2: number; eps: number; weightDecay: number; maxGradNorm: number };
  shapes: Record<string, number[]>;
  lrs: number[];
  gradNorms: number[];
}

export const manifest = JSON.parse(readFileSync(join(FIXTURES, 'manifest.json'), 'utf8')) as {
  cases: Record<string, CaseJson>;
  adamw: AdamWJson;
};

export const CASES = Object.keys(manifest.cases);

export interface TorchCase {
  cfg: ModelConfig;
  /** The engine's description of what trains (LoRA: packed, as the runner uses it). */
  setup: ModelSetup;
  /** Base weights, frozen under LoRA. */
  base: Map<string, Float32Array>;
  /** Trainable tensors by name: the LoRA weights torch used, or the base weights themselves. */
  params: Map<string, Float32Array>;
  batch: MicroBatch;
  /** LoRA's inverted-dropout masks [rows·seqLen, in] torch used, as the step graphs' feeds (none without dropout). */
  dropoutFeeds: Record<string, Float32Array>;
  shape: { rows: number; seqLen: number };
  /** Σ w·nll / Σ w. */
  loss: number;
  /** [rows·seqLen, vocab]. */
  logits: Float32Array;
  grads: Map<string, Float32Array>;
}

/** Fixture tensors named `prefix:name`, by name. */
export function prefixed(tensors: Map<string, { data: Float32Array }>, prefix: string): Map<string, Float32Array> {
  return new Map([...tensors].filter(([n]) => n.startsWith(`${prefix}:`)).map(([n, t]) => [n.slice(prefix.length + 1), t.data]));
}

export function loadCase(key: string): TorchCase {
  const c = manifest.cases[key];
  const model = loadHfModel(join(ROOT, c.model));
  const base = new Map([...model.weights].map(([n, t]) => [n, t.data]));
  const setup = modelSetup(model.config, c.lora ?? null);
  const { tensors } = readSafetensors(join(FIXTURES, `${key}.safetensors`));
  const params = c.lora ? prefixed(tensors, 'lora') : base;
  const grads = prefixed(tensors, 'grad');
  assert.deepEqual([...grads.keys()].sort(), [...setup.trainable].sort(), 'the fixture has a gradient for every trainable tensor');
  const flat = (rows: number[][]) => rows.flat();
  const ints = (rows: number[][]) => BigInt64Array.from(flat(rows), BigInt);
  const b = c.batch;
  return {
    cfg: model.config,
    setup,
    base,
    params,
    batch: {
      inputIds: ints(b.input_ids),
      positionIds: ints(b.position_ids),
      segmentIds: ints(b.segment_ids),
      labels: ints(b.labels),
      lossWeights: Float32Array.from(flat(b.loss_weights)),
    },
    dropoutFeeds: Object.fromEntries([...prefixed(tensors, 'dropout')].map(([path, m]) => [names.dropout(path), m])),
    shape: { rows: b.rows, seqLen: b.seqLen },
    loss: c.loss,
    logits: tensors.get('logits')!.data,
    grads,
  };
}

/** Rows [from, to) of a case's batch and of its dropout masks: a micro-batch of it. */
export function rowsOf(c: TorchCase, from: number, to: number): { batch: MicroBatch; dropoutFeeds: Record<string, Float32Array> } {
  const T = c.shape.seqLen;
  const s = <A extends BigInt64Array | Float32Array>(a: A, width = 1) => a.slice(from * T * width, to * T * width) as A;
  const b = c.batch;
  const N = c.shape.rows * T;
  return {
    batch: { inputIds: s(b.inputIds), positionIds: s(b.positionIds), segmentIds: s(b.segmentIds), labels: s(b.labels), lossWeights: s(b.lossWeights) },
    dropoutFeeds: Object.fromEntries(Object.entries(c.dropoutFeeds).map(([n, m]) => [n, s(m, m.length / N)])),
  };
}

/**
 * Asserts |actual − expected| ≤ tol · max|expected| elementwise: errors measured against the
 * tensor's scale, since a rounding error in a sum is relative to its largest terms, not to an
 * element that happens to cancel to near zero. Returns the worst error on that scale.
 */
export function assertClose(name: string, actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number): number {
  assert.equal(actual.length, expected.length, `${name}: length`);
  let scale = 0;
  for (let i = 0; i < expected.length; i++) scale = Math.max(scale, Math.abs(expected[i]));
  assert.ok(scale > 0, `${name}: the reference is all zeros, so it checks nothing`);
  let worst = 0;
  let at = 0;
  for (let i = 0; i < expected.length; i++) {
    const err = Math.abs(actual[i] - expected[i]) / scale;
    if (!(err <= worst)) [worst, at] = [err, i]; // also catches NaN
  }
  assert.ok(worst <= tol, `${name}[${at}]: ${actual[at]} vs ${expected[at]} (error ${worst.toExponential(2)} of max |x| ${scale.toExponential(2)}, tolerance ${tol})`);
  return worst;
}
