// node-llama-cpp (llama.cpp's prebuilt CPU binary) as the independent reference for our forwards:
// greedy tokens, and the log-probabilities of its most likely tokens at every position compared
// with ours, so a small error cannot hide behind the argmax.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { LlamaContext, LlamaContextOptions, LlamaModel } from 'node-llama-cpp';
import type { InferenceModel } from '../../../src/engine/infer/model.ts';
import { logProbabilities } from '../../../src/engine/infer/sampling.ts';

let llamaCpp: Promise<Awaited<ReturnType<typeof import('node-llama-cpp').getLlama>>> | null = null;
test.after(async () => {
  if (llamaCpp) await (await llamaCpp).dispose();
});

export type LlamaCppContextOptions = Omit<LlamaContextOptions, 'contextSize' | 'batchSize' | 'threads'>;

/** Runs `use` on a node-llama-cpp context over the GGUF `file`, disposed afterwards. */
export async function withLlamaCpp<T>(
  file: string,
  contextOptions: LlamaCppContextOptions,
  use: (model: LlamaModel, context: LlamaContext) => Promise<T>,
): Promise<T> {
  // gpu: false and build: 'never': the prebuilt CPU binary or an error, never a download or a compile.
  llamaCpp ??= import('node-llama-cpp').then(({ getLlama }) => getLlama({ gpu: false, build: 'never', progressLogs: false, logLevel: 'error' as never }));
  const llama = await llamaCpp;
  const model = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
  // One thread: llama.cpp's worker threads spin while they wait, which crawls on a busy 2-core machine.
  const context = await model.createContext({ contextSize: 256, batchSize: 256, threads: 1, ...contextOptions });
  try {
    return await use(model, context);
  } finally {
    await context.dispose();
    await model.dispose();
  }
}

/** Greedy tokens of node-llama-cpp (its default context: f16 KV cache) for each prompt, and its tokenization of `text`. */
export async function llamaCppGreedy(file: string, prompts: number[][], maxTokens: number[], eos: number[], text?: string) {
  return withLlamaCpp(file, {}, async (model, context) => {
    const outputs: number[][] = [];
    for (const [i, prompt] of prompts.entries()) {
      const sequence = context.getSequence();
      const got: number[] = [];
      // yieldEogToken: llama.cpp otherwise ends silently at <|im_end|>, where ours returns it.
      for await (const token of sequence.evaluate(prompt as never[], { temperature: 0, yieldEogToken: true })) {
        got.push(Number(token));
        if (got.length >= maxTokens[i] || eos.includes(Number(token))) break;
      }
      sequence.dispose();
      outputs.push(got);
    }
    return { outputs, tokenized: text === undefined ? [] : model.tokenize(text, true).map(Number) };
  });
}

/**
 * llama.cpp as an f32 reference: flash attention off and an f32 KV cache. By default it keeps K and V
 * in f16 (and flash attention rounds Q to f16 too), which moves log-probabilities by up to ~1e-2 here.
 */
export const F32_LLAMA_CPP: LlamaCppContextOptions = { flashAttention: false, experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32' };
/**
 * Both sides compute in f32 and differ only in summation order and exp/SiLU approximations: the
 * log-probabilities below agree within 3e-5. Scaling one layer's weights by 1.01 moves them by more
 * than 1e-3 (tested below), a 10× too small RMSNorm epsilon by 2e-2.
 */
export const LOGPROB_TOLERANCE = 1e-4;
/** Tokens compared at each position: llama.cpp's most likely ones. */
export const TOP_K = 8;

/** For each position i of `ids`: llama.cpp's TOP_K most likely next tokens after ids[0..i], with their log-probabilities. */
export async function llamaCppTopLogprobs(file: string, ids: number[]): Promise<[token: number, logprob: number][][]> {
  return withLlamaCpp(file, F32_LLAMA_CPP, async (_model, context) => {
    const sequence = context.getSequence();
    // With no sampling options llama.cpp picks greedily and `probabilities` is the softmax of the raw logits.
    const results = await sequence.controlledEvaluate(ids.map((id) => [id as never, { generateNext: { probabilities: true } }]));
    return ids.map((_, i) => [...results[i]!.next.probabilities!].slice(0, TOP_K).map(([token, p]) => [Number(token), Math.log(p)]));
  });
}

/** Our log-probabilities of the next token after each prefix ids[0..i]. */
export async function ourLogprobs(model: InferenceModel, ids: number[]): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  for (let i = 0; i < ids.length; i++) out.push(logProbabilities(await model.nextTokenLogits(ids.slice(0, i + 1))));
  return out;
}

/** The largest difference between llama.cpp's top log-probabilities and ours for the same tokens, and where. */
export function largestLogprobGap(ours: Float32Array[], theirs: [number, number][][]) {
  let gap = { value: 0, position: -1, token: -1 };
  theirs.forEach((top, position) => {
    for (const [token, logprob] of top) {
      const value = Math.abs(ours[position][token] - logprob);
      if (!(value <= gap.value)) gap = { value, position, token }; // NaN counts as the largest
    }
  });
  return gap;
}

/** The largest log-probability gap over each prompt followed by our greedy continuation of it
 * (its last token dropped: nothing follows it), so positions deep into generation count too. */
export async function logprobGapToLlamaCpp(file: string, model: InferenceModel, prompts: number[][], continuations: number[][]) {
  let worst = { value: 0, position: -1, token: -1, prompt: -1 };
  for (const [prompt, promptIds] of prompts.entries()) {
    const ids = [...promptIds, ...continuations[prompt].slice(0, -1)];
    const theirs = await llamaCppTopLogprobs(file, ids);
    const gap = largestLogprobGap(await ourLogprobs(model, ids), theirs);
    if (!(gap.value <= worst.value)) worst = { ...gap, prompt };
  }
  return worst;
}

export async function assertLogprobsMatchLlamaCpp(file: string, model: InferenceModel, prompts: number[][], continuations: number[][]) {
  const gap = await logprobGapToLlamaCpp(file, model, prompts, continuations);
  assert.ok(gap.value <= LOGPROB_TOLERANCE, `prompt ${gap.prompt}: log-probability of token ${gap.token} after position ${gap.position} differs from llama.cpp's by ${gap.value}`);
}

