// The graphs and sessions of a reinforcement step.
//
// Policy gradient with a KL penalty needs no new backward rule: at the parameters θ the samples
// were drawn with, the gradient of
//   J(θ) = (1/G) Σ_i (1/T_i) Σ_t [ −A_i · log π_θ(y_t) + β · KL_t(θ) ],
//   KL_t = r_t − log r_t − 1,  r_t = π_ref(y_t) / π_θ(y_t)          (k3 estimator, Schulman 2020)
// is that of the weighted NLL  (1/G) Σ_i Σ_t w_t · nll_t(θ)  with constant per-token weights
//   w_t = (A_i + β · (r_t − 1)) / T_i,
// because ∂KL_t/∂nll_t = r_t − 1 and ∂(−A log π)/∂nll = A. So the supervised step graphs
// (step.ts: weighted NLL and its gradient) and the runner's AdamW do the update. This file adds
// the per-token scores (the 'eval' graph of the RFT objective: nll and argmax hit at every
// position, for the policy and the reference, to compute r_t), and a StepRunner whose update is
// normalised by a fed 1/G instead of 1/Σw (signed weights can sum to ~0).
//
// LoRA dropout is off in these graphs: the ratio r_t and the on-policy gradient are of the
// policy that sampled, which has no dropout.

import type { Graph, Tensor } from '../graph/ir.ts';
import * as op from '../graph/ops.ts';
import type { LmHead } from '../models/llama.ts';
import type { HostArray, SessionSettings } from '../runtime/session.ts';
import { tokenScores } from './loss.ts';
import { StepRunner, type MicroBatch, type OptimizerState } from './runner.ts';
import { buildStepGraph, supervisedObjective, type ModelSetup, type StepObjective, type StepShape } from './step.ts';
import { DEFAULT_ADAMW, type AdamWSettings } from './adamw.ts';

/** The setup with LoRA dropout switched off (see the header). */
export function withoutDropout(setup: ModelSetup): ModelSetup {
  return setup.lora && setup.lora.dropout > 0 ? { ...setup, lora: { ...setup.lora, dropout: 0 } } : setup;
}

/**
 * Training kinds: the supervised weighted NLL (the weights carry advantages and the KL term).
 * 'eval': per position nll = −log p(label) and hit = [label is the argmax], both [N].
 */
export const rftStepObjective: StepObjective = (g: Graph, head: LmHead, labels: Tensor, lossWeights: Tensor, kind) => {
  if (kind !== 'eval') return supervisedObjective(g, head, labels, lossWeights, kind);
  const { nll, hit } = tokenScores(head, labels);
  g.output('nll', nll);
  g.output('hit', hit);
  return op.sumAll(op.mul(nll, lossWeights));
};

/** Forward only: per-token nll and hit (trainable tensors are inputs, so it scores any parameters). */
export function buildTokenScoreGraph(setup: ModelSetup, shape: StepShape): Graph {
  return buildStepGraph(withoutDropout(setup), shape, 'eval', rftStepObjective);
}

/** Per-token scores of one micro-batch, as values (loss.ts's TokenScores are the graph's tensors). */
export interface TokenScoreValues {
  nll: Float32Array;
  hit: Float32Array;
}

export class RftStepRunner extends StepRunner {
  constructor(setup: ModelSetup, shape: StepShape, frozen: Map<string, Float32Array>, state: OptimizerState, adamw: AdamWSettings = DEFAULT_ADAMW, settings: SessionSettings = {}) {
    super(withoutDropout(setup), shape, frozen, state, adamw, settings, rftStepObjective);
  }

  /** Trainable-tensor feeds for `params` (the current state's by default). */
  private feedsOf(params: Map<string, Float32Array>): Record<string, HostArray> {
    const current = this.state.params;
    this.state.params = params;
    try {
      return this.paramFeeds();
    } finally {
      this.state.params = current;
    }
  }

  /** Per-token nll and argmax hits of `batch` under `params` (default: the current trainable tensors). */
  async score(batch: MicroBatch, params: Map<string, Float32Array> = this.state.params): Promise<TokenScoreValues> {
    const s = await this.session('eval');
    const out = await s.run({ ...this.feedsOf(params), ...this.batchFeeds(batch) }, ['nll', 'hit']);
    return { nll: out.nll as Float32Array, hit: out.hit as Float32Array };
  }

  /**
   * One optimizer step on Σ w·nll · invNormaliser over the micro-batches (their lossWeights are the
   * signed per-token weights). Returns the gradient norm before clipping.
   */
  async policyStep(micro: MicroBatch[], invNormaliser: number, lr: number, signal?: AbortSignal): Promise<number> {
    return this.optimizerStep(micro, invNormaliser, lr, undefined, () => {}, signal); // no dropout (see the header)
  }
}
