// The numbers of a reinforcement step, in plain JS: group-normalised advantages, and the per-token
// weights that turn the supervised weighted-NLL graph into the policy-gradient + KL objective (see
// rft-step.ts for why the weights give the exact gradient).

/**
 * Rewards of consecutive groups of `groupSize` samples (the completions of one prompt) →
 * (r − mean) / std within each group. A group whose rewards are all equal has nothing to learn
 * from: its advantages are 0.
 */
export function groupAdvantages(rewards: readonly number[], groupSize: number): number[] {
  if (groupSize < 1 || rewards.length % groupSize !== 0) throw new Error(`${rewards.length} rewards do not form groups of ${groupSize}`);
  const out: number[] = [];
  for (let at = 0; at < rewards.length; at += groupSize) {
    const group = rewards.slice(at, at + groupSize);
    const mean = group.reduce((a, b) => a + b, 0) / groupSize;
    const std = Math.sqrt(group.reduce((a, r) => a + (r - mean) ** 2, 0) / groupSize);
    for (const r of group) out.push(std > 1e-8 ? (r - mean) / std : 0);
  }
  return out;
}

/** Mean and (population) standard deviation. */
export function meanStd(xs: readonly number[]): { mean: number; std: number } {
  if (xs.length === 0) return { mean: 0, std: 0 };
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  return { mean, std: Math.sqrt(xs.reduce((a, x) => a + (x - mean) ** 2, 0) / xs.length) };
}

/** log(π_ref/π) is clipped to ±this before exp, so one unlikely token cannot blow up the KL term. */
const MAX_LOG_RATIO = 10;

export interface RftTokenTerms {
  /** Per position: (A_i + β·(r_t − 1)) / T_i for completion tokens, 0 elsewhere. */
  weights: Float32Array;
  /** Per sample i: Σ_t nll_t / T_i and Σ_t KL_t / T_i over the positions given. */
  nllMean: Float64Array;
  klMean: Float64Array;
}

/**
 * Per-token weights of one micro-batch.
 * sampleAt[p]: the sample whose completion token is predicted at position p, or −1.
 * tokens[i]: T_i, completion tokens of sample i (all micro-batches together).
 * nllPolicy/nllRef: −log π(y) and −log π_ref(y) at each position.
 * nllMean/klMean accumulate into `into` when given (a sample may span micro-batches only by rows).
 */
export function rftTokenTerms(
  sampleAt: Int32Array,
  tokens: readonly number[],
  advantages: readonly number[],
  nllPolicy: ArrayLike<number>,
  nllRef: ArrayLike<number>,
  beta: number,
  into?: { nllMean: Float64Array; klMean: Float64Array },
): RftTokenTerms {
  const weights = new Float32Array(sampleAt.length);
  const nllMean = into?.nllMean ?? new Float64Array(tokens.length);
  const klMean = into?.klMean ?? new Float64Array(tokens.length);
  for (let p = 0; p < sampleAt.length; p++) {
    const i = sampleAt[p];
    if (i < 0) continue;
    const logRatio = Math.max(-MAX_LOG_RATIO, Math.min(MAX_LOG_RATIO, nllPolicy[p] - nllRef[p])); // log(π_ref/π)
    const r = Math.exp(logRatio);
    weights[p] = (advantages[i] + beta * (r - 1)) / tokens[i];
    nllMean[i] += nllPolicy[p] / tokens[i];
    klMean[i] += (r - logRatio - 1) / tokens[i];
  }
  return { weights, nllMean, klMean };
}

/** J = (1/G) Σ_i [A_i · mean_t nll + β · mean_t KL]: the value whose gradient the weights give. */
export function rftObjective(advantages: readonly number[], nllMean: ArrayLike<number>, klMean: ArrayLike<number>, beta: number): number {
  const G = advantages.length;
  let j = 0;
  for (let i = 0; i < G; i++) j += advantages[i] * nllMean[i] + beta * klMean[i];
  return G > 0 ? j / G : 0;
}
