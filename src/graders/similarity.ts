// text_similarity metrics, each a number in [0, 1], following the reference implementations OpenAI's
// graders are described with (the Python packages named in each comment):
//
// - fuzzy_match: rapidfuzz `fuzz.ratio` / 100: normalised Indel similarity over characters,
//   2·LCS(a, b) / (|a| + |b|) (1 for two empty strings).
// - bleu: sacrebleu `sentence_bleu` / 100: clipped n-gram precisions n = 1…4, geometric mean, brevity
//   penalty exp(1 − r/c) when the candidate is shorter; "exp" smoothing (an n-gram order with no match
//   counts 1/(2^k · total) for its k-th such order) and effective order (orders the candidate is too
//   short to have are left out), so that a short sentence is not 0 by construction. Tokens: sacrebleu's
//   13a tokenizer, case kept.
// - gleu: Google-BLEU (Wu et al. 2016; nltk `sentence_gleu`): all 1…4-grams of both texts,
//   min(matches / candidate n-grams, matches / reference n-grams). 13a tokens, as for bleu.
// - meteor: METEOR (Banerjee & Lavie 2005; nltk `meteor_score` parameters α = 0.9, β = 3, γ = 0.5):
//   unigram alignment, Fmean = P·R / (α·P + (1 − α)·R), penalty γ·(chunks / matches)^β,
//   score Fmean·(1 − penalty). Exact (lower-cased) matching only: the stem and WordNet-synonym stages
//   need NLP resources tuneforge does not ship. The alignment prefers continuing the current chunk
//   (fewer chunks than nltk's first-match greedy in texts with repeated words).
// - rouge_1 … rouge_5: rouge-score `rouge{n}` F-measure: n-gram overlap (clipped counts),
//   F1 of overlap/candidate and overlap/reference. rouge_l: `rougeL` F-measure from the longest common
//   subsequence. Tokens as rouge-score: lower-cased, every run of characters other than letters and
//   digits is a separator, no stemming.
// - cosine: cosine similarity of two embedding vectors (the embedding itself comes from elsewhere).

export const EVALUATION_METRICS = [
  'cosine',
  'fuzzy_match',
  'bleu',
  'gleu',
  'meteor',
  'rouge_1',
  'rouge_2',
  'rouge_3',
  'rouge_4',
  'rouge_5',
  'rouge_l',
] as const;
export type EvaluationMetric = (typeof EVALUATION_METRICS)[number];

// ------------------------------------------------------------------------------------ tokenizers

/**
 * sacrebleu's 13a tokenizer (mteval-v13a): ASCII punctuation other than ' . , - becomes its own
 * token; a period or comma does too unless it sits between digits (3.5, 1,000); a dash after a
 * digit is split (2-3). Case is kept; apostrophes stay inside words.
 */
export function bleuTokens(text: string): string[] {
  let t = ` ${text.replace(/<skipped>/g, '').replace(/-\n/g, '').replace(/\n/g, ' ')} `;
  t = t.replace(/([{-~[-` -&(-+:-@/])/g, ' $1 ');
  t = t.replace(/([^0-9])([.,])/g, '$1 $2 ');
  t = t.replace(/([.,])([^0-9])/g, ' $1 $2');
  t = t.replace(/([0-9])(-)/g, '$1 $2 ');
  return t.split(/\s+/).filter(Boolean);
}

/** rouge-score's tokenizer: lower-cased runs of letters and digits. */
export function rougeTokens(text: string): string[] {
  return text.toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? [];
}

function ngramCounts(tokens: string[], n: number): Map<string, number> {
  const counts = new Map<string, number>();
  for (let i = 0; i + n <= tokens.length; i++) {
    const key = tokens.slice(i, i + n).join('\u0000');
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return counts;
}

/** Σ over candidate n-grams of min(count in candidate, count in reference). */
function clippedMatches(candidate: Map<string, number>, reference: Map<string, number>): number {
  let matches = 0;
  for (const [gram, count] of candidate) matches += Math.min(count, reference.get(gram) ?? 0);
  return matches;
}

/** Papineni's modified n-gram precision as [matches, total]. */
export function modifiedPrecision(candidate: string[], reference: string[], n: number): [number, number] {
  const c = ngramCounts(candidate, n);
  return [clippedMatches(c, ngramCounts(reference, n)), Math.max(0, candidate.length - n + 1)];
}

// -------------------------------------------------------------------------------------- metrics

function lcsLength<T>(a: ArrayLike<T>, b: ArrayLike<T>): number {
  if (a.length === 0 || b.length === 0) return 0;
  let prev = new Uint32Array(b.length + 1);
  let cur = new Uint32Array(b.length + 1);
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      cur[j] = a[i - 1] === b[j - 1] ? prev[j - 1] + 1 : Math.max(prev[j], cur[j - 1]);
    }
    [prev, cur] = [cur, prev];
  }
  return prev[b.length];
}

export function fuzzyMatch(input: string, reference: string): number {
  const a = Array.from(input);
  const b = Array.from(reference);
  if (a.length + b.length === 0) return 1;
  return (2 * lcsLength(a, b)) / (a.length + b.length);
}

export function bleu(input: string, reference: string, maxOrder = 4): number {
  const hyp = bleuTokens(input);
  const ref = bleuTokens(reference);
  if (hyp.length === 0) return 0;
  let logSum = 0;
  let order = 0;
  let smooth = 1;
  for (let n = 1; n <= maxOrder; n++) {
    const [matches, total] = modifiedPrecision(hyp, ref, n);
    if (total === 0) break; // effective order
    order = n;
    let p: number;
    if (matches === 0) {
      smooth *= 2;
      p = 1 / (smooth * total);
    } else p = matches / total;
    logSum += Math.log(p);
  }
  const bp = hyp.length < ref.length ? Math.exp(1 - ref.length / hyp.length) : 1;
  return Math.min(1, bp * Math.exp(logSum / order));
}

export function gleu(input: string, reference: string, minOrder = 1, maxOrder = 4): number {
  const hyp = bleuTokens(input);
  const ref = bleuTokens(reference);
  let matches = 0;
  let hypTotal = 0;
  let refTotal = 0;
  for (let n = minOrder; n <= maxOrder; n++) {
    const h = ngramCounts(hyp, n);
    matches += clippedMatches(h, ngramCounts(ref, n));
    hypTotal += Math.max(0, hyp.length - n + 1);
    refTotal += Math.max(0, ref.length - n + 1);
  }
  if (hypTotal === 0 || refTotal === 0) return 0;
  return Math.min(matches / hypTotal, matches / refTotal);
}

/** METEOR with exact matching; returns the score and its parts (for tests). */
export function meteorDetails(input: string, reference: string, alpha = 0.9, beta = 3, gamma = 0.5) {
  const hyp = bleuTokens(input.toLowerCase());
  const ref = bleuTokens(reference.toLowerCase());
  const used = new Array<boolean>(ref.length).fill(false);
  const alignment: [number, number][] = [];
  let previous = -2;
  for (let i = 0; i < hyp.length; i++) {
    let j = -1;
    if (previous >= -1 && previous + 1 < ref.length && !used[previous + 1] && ref[previous + 1] === hyp[i] && alignment.length > 0 && alignment[alignment.length - 1][0] === i - 1) {
      j = previous + 1;
    } else {
      j = ref.findIndex((w, k) => !used[k] && w === hyp[i]);
    }
    if (j >= 0) {
      used[j] = true;
      alignment.push([i, j]);
      previous = j;
    }
  }
  const matches = alignment.length;
  if (matches === 0) return { score: 0, precision: 0, recall: 0, fmean: 0, chunks: 0, penalty: 0 };
  let chunks = 1;
  for (let k = 1; k < alignment.length; k++) {
    const [i0, j0] = alignment[k - 1];
    const [i1, j1] = alignment[k];
    if (!(i1 === i0 + 1 && j1 === j0 + 1)) chunks++;
  }
  const precision = matches / hyp.length;
  const recall = matches / ref.length;
  const fmean = (precision * recall) / (alpha * precision + (1 - alpha) * recall);
  const penalty = gamma * (chunks / matches) ** beta;
  return { score: fmean * (1 - penalty), precision, recall, fmean, chunks, penalty };
}

export const meteor = (input: string, reference: string) => meteorDetails(input, reference).score;

const f1 = (p: number, r: number) => (p + r === 0 ? 0 : (2 * p * r) / (p + r));

export function rougeN(input: string, reference: string, n: number): number {
  const hyp = rougeTokens(input);
  const ref = rougeTokens(reference);
  const h = ngramCounts(hyp, n);
  const r = ngramCounts(ref, n);
  const hypTotal = Math.max(0, hyp.length - n + 1);
  const refTotal = Math.max(0, ref.length - n + 1);
  if (hypTotal === 0 || refTotal === 0) return 0;
  const overlap = clippedMatches(h, r);
  return f1(overlap / hypTotal, overlap / refTotal);
}

export function rougeL(input: string, reference: string): number {
  const hyp = rougeTokens(input);
  const ref = rougeTokens(reference);
  if (hyp.length === 0 || ref.length === 0) return 0;
  const lcs = lcsLength(hyp, ref);
  return f1(lcs / hyp.length, lcs / ref.length);
}

export function cosineSimilarity(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length || a.length === 0) throw new Error(`cosine: vectors of different or zero length (${a.length}, ${b.length})`);
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  if (na === 0 || nb === 0) return 0;
  return dot / Math.sqrt(na * nb);
}

/** Every metric but cosine (which needs embeddings), by name. */
export function textSimilarity(metric: Exclude<EvaluationMetric, 'cosine'>, input: string, reference: string): number {
  switch (metric) {
    case 'fuzzy_match':
      return fuzzyMatch(input, reference);
    case 'bleu':
      return bleu(input, reference);
    case 'gleu':
      return gleu(input, reference);
    case 'meteor':
      return meteor(input, reference);
    case 'rouge_l':
      return rougeL(input, reference);
    default:
      return rougeN(input, reference, Number(metric.slice('rouge_'.length)));
  }
}
