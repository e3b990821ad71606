// Choosing the next token from logits, as OpenAI documents its parameters:
//   presence/frequency penalties:  l[j] −= count[j]·frequency + (count[j] > 0)·presence
//     (counts over the tokens generated so far, not the prompt);
//   temperature 0 is greedy (argmax, lowest id on ties), otherwise softmax(l / temperature);
//   top_p keeps the smallest set of most likely tokens whose probability reaches top_p.
// One draw from a SeededRandom per sampled token, so a seed fixes the whole output.

import type { SeededRandom } from '../data/random.ts';

export interface SamplingSettings {
  temperature: number;
  topP: number;
  presencePenalty: number;
  frequencyPenalty: number;
}

/** Subtracts the OpenAI presence/frequency penalties in place. */
export function applyPenalties(logits: Float32Array, counts: Map<number, number>, presence: number, frequency: number): void {
  if (presence === 0 && frequency === 0) return;
  for (const [id, count] of counts) logits[id] -= count * frequency + (count > 0 ? presence : 0);
}

export function indexOfMax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

/** log softmax(logits), in f64 for the sum. */
export function logProbabilities(logits: Float32Array): Float32Array {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max);
  const logZ = max + Math.log(sum);
  const out = new Float32Array(logits.length);
  for (let i = 0; i < logits.length; i++) out[i] = logits[i] - logZ;
  return out;
}

/** Indices of the k largest values, largest first (ties: lower index first). O(V·k), k ≤ ~20. */
export function topIndices(values: ArrayLike<number>, k: number): number[] {
  const top: number[] = [];
  for (let i = 0; i < values.length; i++) {
    if (top.length === k && values[i] <= values[top[k - 1]]) continue;
    let at = top.length < k ? top.length : k - 1;
    while (at > 0 && values[top[at - 1]] < values[i]) at--;
    top.splice(at, 0, i);
    if (top.length > k) top.pop();
  }
  return top;
}

/** Picks the next token from (already penalised) logits. */
export function sampleToken(logits: Float32Array, settings: SamplingSettings, rng: SeededRandom): number {
  if (settings.temperature <= 0) return indexOfMax(logits);
  const max = logits[indexOfMax(logits)];
  const probs = new Float64Array(logits.length);
  let total = 0;
  for (let i = 0; i < logits.length; i++) total += probs[i] = Math.exp((logits[i] - max) / settings.temperature);

  if (settings.topP < 1) {
    const keep = nucleus(probs, settings.topP * total);
    let mass = 0;
    for (let i = 0; i < probs.length; i++) if (keep(i)) mass += probs[i];
    let u = rng.next() * mass;
    let last = -1;
    for (let i = 0; i < probs.length; i++) {
      if (!keep(i) || probs[i] === 0) continue;
      last = i;
      if ((u -= probs[i]) < 0) return i;
    }
    return last;
  }

  let u = rng.next() * total;
  for (let i = 0; i < probs.length; i++) if ((u -= probs[i]) < 0) return i;
  return indexOfMax(logits); // only reachable through rounding at the very end (and never a −∞ token)
}

/**
 * The top-p nucleus of unnormalised probabilities: the most likely tokens whose mass first reaches
 * `target` (ties at the edge broken by lower id). Sorting all V probabilities per token would be
 * the slowest part of a decode step, so: halve a threshold τ from the largest probability until
 * {p ≥ τ} holds enough mass (few passes when the distribution is peaked), sort just those values
 * (a native numeric sort), and read off the cutoff probability.
 */
function nucleus(probs: Float64Array, target: number): (i: number) => boolean {
  let threshold = 1; // the largest unnormalised probability is exp(0) = 1
  let count = 0;
  for (;;) {
    let mass = 0;
    count = 0;
    for (let i = 0; i < probs.length; i++) if (probs[i] >= threshold) { mass += probs[i]; count++; }
    if (mass >= target || threshold === 0) break;
    threshold = threshold < 1e-30 ? 0 : threshold / 2;
  }
  const candidates = new Float64Array(count);
  for (let i = 0, j = 0; i < probs.length; i++) if (probs[i] >= threshold) candidates[j++] = probs[i];
  candidates.sort(); // ascending
  let mass = 0;
  let taken = 0;
  while (taken < count && mass < target) mass += candidates[count - 1 - taken++];
  const cutoff = candidates[count - taken];
  // Everything above the cutoff is in; of the tokens equal to it, only as many as were taken.
  let above = 0;
  for (let j = count - 1; j >= 0 && candidates[j] > cutoff; j--) above++;
  let tiesLeft = taken - above;
  const inNucleus = new Uint8Array(probs.length);
  for (let i = 0; i < probs.length; i++) {
    if (probs[i] > cutoff || (probs[i] === cutoff && tiesLeft-- > 0)) inNucleus[i] = 1;
  }
  return (i) => inNucleus[i] === 1;
}
