// The generation loop: prefill the prompt, then one decode step per token until EOS, a stop
// string, max_tokens or the context length. Plain data in and out, so that a worker thread can
// carry requests and results unchanged (see thread.ts).

import { randomInt } from 'node:crypto';
import type { HfTokenizer } from '../data/tokenizer.ts';
import { SeededRandom } from '../data/random.ts';
import { applyPenalties, logProbabilities, sampleToken, topIndices } from './sampling.ts';
import type { DecoderSteps, StepAdapter } from './steps.ts';
import { soloSequence, type Sequence } from './batcher.ts';
import { IncrementalDecoder, StopStrings, tokenText } from './text.ts';
import { createTokenConstraint, type ConstraintSpec } from './constraints/index.ts';
import { EngineError } from '../errors.ts';

export interface GenerateOptions {
  /** Most tokens to generate (default: up to the context length). */
  maxTokens?: number;
  /** 0 = greedy. Default 1. */
  temperature?: number;
  /** Nucleus sampling mass. Default 1 (off). */
  topP?: number;
  /** Same seed, same prompt, same options → same output. Default: a random seed. */
  seed?: number;
  /** Up to 4 strings in OpenAI; generation ends before the first one and it is not returned. */
  stop?: string[];
  presencePenalty?: number;
  frequencyPenalty?: number;
  /** OpenAI's logit_bias: token id → value (−100…100) added to its logit before sampling. */
  logitBias?: Record<number, number>;
  /** Report the log-probability of each generated token (under the model's raw distribution). */
  logprobs?: boolean;
  /** With logprobs: the k most likely alternatives at each position (0–20). */
  topLogprobs?: number;
  /** Ends generation within one token; the promise then rejects with the signal's reason. */
  signal?: AbortSignal;
  /**
   * Constrained decoding (e.g. JSON, constraints/): tokens that would break the constraint are
   * masked out before sampling. Plain data, so it crosses to the worker thread.
   */
  constraint?: ConstraintSpec;
}

export interface TopLogprob {
  token: string;
  tokenId: number;
  logprob: number;
  bytes: number[];
}

export interface TokenLogprob extends TopLogprob {
  topLogprobs: TopLogprob[];
}

export type FinishReason = 'stop' | 'length';

export interface TokenInfo {
  /** The generated token (EOS included, when that is what ended generation). */
  tokenId: number;
  /** 0-based index among the generated tokens. */
  index: number;
  logprob?: TokenLogprob;
  /** Set on the last call: why generation ended. */
  finishReason?: FinishReason;
}

/**
 * Called once per generated token. `textDelta` is the text this token adds; it may be '' (a
 * character spread over tokens, or text held back while it might begin a stop string); the last
 * call carries whatever was still held back.
 */
export type OnToken = (textDelta: string, info: TokenInfo) => void;

export interface GenerationResult {
  /** Generated ids, including the EOS token that ended generation (not the prompt). */
  tokenIds: number[];
  /** The generated text, without EOS, special tokens, or the stop string. */
  text: string;
  finishReason: FinishReason;
  promptTokens: number;
  /** = tokenIds.length. */
  completionTokens: number;
  logprobs?: TokenLogprob[];
}

export interface GenerationContext {
  steps: DecoderSteps;
  tokenizer: HfTokenizer;
  eosTokenIds: number[];
  contextLength: number;
  /** An unmerged LoRA adapter to run with (shared-base serving). */
  adapter?: StepAdapter;
  /** Where a generation's decode steps run: a slot of a DecodeBatcher, or (default) its own cache. */
  openSequence?: () => Sequence;
}

function abortError(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('generation aborted', 'AbortError');
}

/** Lets other requests, abort messages and timers run between tokens (session.run is synchronous). */
const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

export async function generate(
  context: GenerationContext,
  promptIds: number[],
  options: GenerateOptions = {},
  onToken?: OnToken,
): Promise<GenerationResult> {
  const sequence = context.openSequence?.() ?? soloSequence(context.steps, context.adapter);
  try {
    return await generateIn(sequence, context, promptIds, options, onToken);
  } finally {
    sequence.release();
  }
}

async function generateIn(
  sequence: Sequence,
  context: GenerationContext,
  promptIds: number[],
  options: GenerateOptions,
  onToken: OnToken | undefined,
): Promise<GenerationResult> {
  const { steps, tokenizer } = context;
  const vocabSize = steps.cfg.vocabSize;
  if (promptIds.length === 0) throw new EngineError('invalid_prompt', 'generate: the prompt is empty');
  for (const id of promptIds) {
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) throw new EngineError('invalid_prompt', `generate: token id ${id} is outside the vocabulary`);
  }
  if (promptIds.length >= context.contextLength) {
    throw new EngineError('invalid_prompt', `generate: the prompt has ${promptIds.length} tokens; this model's context is ${context.contextLength}`);
  }
  const maxTokens = Math.min(options.maxTokens ?? Infinity, context.contextLength - promptIds.length);
  if (!(maxTokens >= 1)) throw new EngineError('invalid_generate_options', 'generate: maxTokens must be at least 1');
  const sampling = {
    temperature: options.temperature ?? 1,
    topP: options.topP ?? 1,
    presencePenalty: options.presencePenalty ?? 0,
    frequencyPenalty: options.frequencyPenalty ?? 0,
  };
  const logitBias = Object.entries(options.logitBias ?? {}).map(([id, bias]) => {
    const tokenId = Number(id);
    if (!Number.isInteger(tokenId) || tokenId < 0 || tokenId >= vocabSize) throw new EngineError('invalid_generate_options', `generate: logit_bias token ${id} is outside the vocabulary`);
    return [tokenId, Math.max(-100, Math.min(100, bias))] as const;
  });
  const topLogprobs = Math.max(0, Math.min(20, options.topLogprobs ?? 0));
  const wantLogprobs = options.logprobs === true || topLogprobs > 0;
  const rng = new SeededRandom(options.seed ?? randomInt(2 ** 32));
  const eos = new Set(context.eosTokenIds);
  const signal = options.signal;
  const constraint = options.constraint ? createTokenConstraint(options.constraint, tokenizer, context.eosTokenIds) : null;

  const decoder = new IncrementalDecoder(tokenizer, promptIds);
  const stops = new StopStrings(options.stop ?? []);
  const counts = new Map<number, number>();
  const tokenIds: number[] = [];
  const logprobs: TokenLogprob[] = [];
  let text = '';

  if (signal?.aborted) throw abortError(signal);
  let logits = await sequence.prefill(promptIds);
  for (;;) {
    await nextTurn();
    if (signal?.aborted) throw abortError(signal);

    let logprob: TokenLogprob | undefined;
    const logp = wantLogprobs ? logProbabilities(logits) : null;
    for (const [id, bias] of logitBias) logits[id] += bias;
    applyPenalties(logits, counts, sampling.presencePenalty, sampling.frequencyPenalty);
    constraint?.mask(logits, maxTokens - tokenIds.length);
    const id = sampleToken(logits, sampling, rng);
    constraint?.accept(id);
    tokenIds.push(id);
    counts.set(id, (counts.get(id) ?? 0) + 1);
    if (logp) {
      const describe = (tokenId: number): TopLogprob => ({ ...tokenText(tokenizer, tokenId), tokenId, logprob: logp[tokenId] });
      logprob = { ...describe(id), topLogprobs: topIndices(logp, topLogprobs).map(describe) };
      logprobs.push(logprob);
    }

    let finishReason: FinishReason | undefined;
    let delta: string;
    if (eos.has(id)) {
      finishReason = 'stop';
      delta = stops.push(decoder.flush()) + stops.flush();
    } else {
      delta = stops.push(decoder.push(id));
      if (stops.stopped) finishReason = 'stop';
      else if (tokenIds.length >= maxTokens) {
        delta += stops.push(decoder.flush());
        finishReason = stops.stopped ? 'stop' : 'length';
        delta += stops.flush();
      }
    }
    text += delta;
    onToken?.(delta, { tokenId: id, index: tokenIds.length - 1, ...(logprob ? { logprob } : {}), ...(finishReason ? { finishReason } : {}) });
    if (finishReason) {
      return {
        tokenIds,
        text,
        finishReason,
        promptTokens: promptIds.length,
        completionTokens: tokenIds.length,
        ...(wantLogprobs ? { logprobs } : {}),
      };
    }
    logits = await sequence.next(id);
  }
}
