// The DPO objective (Rafailov et al. 2023) as a step-graph objective:
//   loss = −log σ(β·((log π(c) − log π_ref(c)) − (log π(r) − log π_ref(r))))
// A DPO micro-batch holds P pairs as 2P rows of one sequence each: rows 0..P−1 the chosen
// sequences, rows P..2P−1 the rejected ones in the same order. loss_weights mark the response
// tokens, so a row's sequence log-prob is Σ_t w_t · log p(label_t). Reference log-probs come in
// as inputs (computed once per example from the frozen base: see dpo.ts), and padding pairs have
// pair weight 0. Like the supervised loss, the loss is a *sum* over pairs; the runner seeds the
// gradient with 1 / (pairs in the whole step), so accumulated micro-batches give the batch mean.

import type { Graph, Tensor } from '../graph/ir.ts';
import * as op from '../graph/ops.ts';
import type { LmHead } from '../models/llama.ts';
import type { StepObjective } from './step.ts';
import { tokenScores } from './loss.ts';

/**
 * log σ(z), stable for any z: min(z, 0) − log(1 + exp(−|z|)), written with `where` so that no
 * branch ever sees exp of a large positive number. Its gradient, σ(−z), comes out of the rules of
 * the ops it is made of (checked against finite differences in test/engine/train/dpo.test.ts).
 */
export function logSigmoid(z: Tensor): Tensor {
  const g = z.graph;
  const zero = g.scalar(0);
  const negative = op.less(z, zero);
  const minusAbs = op.where(negative, z, op.neg(z));
  const minZero = op.where(negative, z, zero);
  return op.sub(minZero, op.log(op.add(op.exp(minusAbs), 1)));
}

/** Graph input and output names of the DPO objective. */
export const dpoNames = {
  refChosen: 'ref_chosen_logps',
  refRejected: 'ref_rejected_logps',
  pairWeights: 'pair_weights',
  /** [2P] sequence log-probs of every row under the graph's weights (the reference pass reads these). */
  logps: 'sequence_logps',
};

/** Sequence log-probs [2P] of the rows: Σ_t w_t · log p(label_t) (the head runs on the completions' tokens only). */
export function sequenceLogps(head: LmHead, labels: Tensor, weights: Tensor, rows: number): Tensor {
  const { nll } = tokenScores(head, labels, weights);
  const [N] = labels.shape;
  return op.reduceSum(op.reshape(op.neg(op.mul(nll, weights)), [rows, N / rows]), [1]);
}

export interface DpoTerms {
  /** Σ pair weight · −log σ(margin): what the step differentiates. */
  lossSum: Tensor;
  /** β·(log π − log π_ref) per pair [P], chosen and rejected. */
  chosenReward: Tensor;
  rejectedReward: Tensor;
}

/** The DPO loss of P pairs from sequence log-probs [2P] (chosen rows first) and the reference [P]. */
export function dpoTerms(logps: Tensor, refChosen: Tensor, refRejected: Tensor, pairWeights: Tensor, beta: number): DpoTerms {
  const [P] = refChosen.shape;
  const chosenReward = op.mul(op.sub(op.slice(logps, 0, 0, P), refChosen), beta);
  const rejectedReward = op.mul(op.sub(op.slice(logps, 0, P, 2 * P), refRejected), beta);
  const lossSum = op.sumAll(op.mul(op.neg(logSigmoid(op.sub(chosenReward, rejectedReward))), pairWeights));
  return { lossSum, chosenReward, rejectedReward };
}

/**
 * Outputs: loss_sum (Σ pair weight · loss), rewards_chosen_sum and rewards_rejected_sum
 * (Σ pair weight · β·(log π − log π_ref)), correct (pairs whose chosen reward beats the rejected
 * one), counted (Σ pair weights), and sequence_logps.
 */
export function dpoObjective(beta: number, pairs: number): StepObjective {
  return (g: Graph, head, labels, lossWeights) => {
    const logps = sequenceLogps(head, labels, lossWeights, 2 * pairs);
    const w = g.input(dpoNames.pairWeights, [pairs]);
    const t = dpoTerms(logps, g.input(dpoNames.refChosen, [pairs]), g.input(dpoNames.refRejected, [pairs]), w, beta);
    g.output(dpoNames.logps, logps);
    g.output('loss_sum', t.lossSum);
    g.output('rewards_chosen_sum', op.sumAll(op.mul(op.stopGradient(t.chosenReward), w)));
    g.output('rewards_rejected_sum', op.sumAll(op.mul(op.stopGradient(t.rejectedReward), w)));
    const margin = op.sub(t.chosenReward, t.rejectedReward);
    g.output('correct', op.sumAll(op.mul(op.cast(op.greater(margin, g.scalar(0)), g.float), w)));
    g.output('counted', op.sumAll(w));
    return t.lossSum;
  };
}
