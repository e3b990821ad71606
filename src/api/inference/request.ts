// What /v1/chat/completions and /v1/completions share in a request once its shape has passed the
// route schema (OpenAI's spec, schemas.ts): the rules across fields, the rules only the model can
// decide (its vocabulary, its context), and the sampling options handed to the engine.
import { invalidParam } from '../../domain/errors.ts';
import type { GenerateOptions, ModelInfo } from '../../engine/index.ts';

/** The body fields both endpoints share, as their route schemas let them through. */
export interface SamplingBody {
  model: string;
  n?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  presence_penalty?: number | null;
  frequency_penalty?: number | null;
  seed?: number | null;
  stop?: string | string[] | null;
  logit_bias?: Record<string, number> | null;
  stream?: boolean | null;
  stream_options?: { include_usage?: boolean } | null;
}

/** Where tuneforge's rules are narrower than the spec's, in the route schemas. */
export const SAMPLING_SCHEMA_PATCH = {
  /** Token id → bias, as OpenAI documents it (the spec says integer; biases are numbers). */
  logit_bias: { type: ['object', 'null'], propertyNames: { pattern: '^[0-9]+$' }, additionalProperties: { type: 'number', minimum: -100, maximum: 100 } },
  stream_options: {
    type: ['object', 'null'],
    properties: { include_usage: { type: 'boolean' }, include_obfuscation: { type: 'boolean' } },
    additionalProperties: false,
  },
};

/** A token budget is at least one token. */
export const MAX_TOKENS_SCHEMA = { type: ['integer', 'null'], minimum: 1 };

/** The sampling parameters both endpoints share, for the engine. */
export function samplingOptions(body: SamplingBody): GenerateOptions {
  const options: GenerateOptions = {};
  if (body.temperature != null) options.temperature = body.temperature;
  if (body.top_p != null) options.topP = body.top_p;
  if (body.presence_penalty != null) options.presencePenalty = body.presence_penalty;
  if (body.frequency_penalty != null) options.frequencyPenalty = body.frequency_penalty;
  if (body.seed != null) options.seed = body.seed;
  if (body.stop != null) options.stop = typeof body.stop === 'string' ? [body.stop] : body.stop;
  if (body.logit_bias != null) options.logitBias = Object.fromEntries(Object.entries(body.logit_bias).map(([id, bias]) => [Number(id), bias]));
  return options;
}

/** `stream_options.include_usage`; stream_options apply to streams only. */
export function includeUsage(body: SamplingBody): boolean {
  if (body.stream_options == null) return false;
  if (!body.stream) throw invalidParam('stream_options', "The 'stream_options' parameter is only allowed when 'stream' is enabled.", 'invalid_value');
  return body.stream_options.include_usage === true;
}

/** logit_bias keys must be ids of the model's vocabulary. */
export function checkLogitBias(options: GenerateOptions, info: ModelInfo): void {
  for (const id of Object.keys(options.logitBias ?? {})) {
    if (Number(id) >= info.vocabSize) throw invalidParam('logit_bias', `Invalid 'logit_bias': token id ${id} is outside this model's vocabulary (${info.vocabSize} tokens).`, 'invalid_value');
  }
}

/** The seed of choice `index` of n: choices differ, and the same request seed repeats all of them. */
export function choiceSeed(seed: number | undefined, index: number): number | undefined {
  if (seed === undefined) return undefined;
  return (((seed + index * 0x9e3779b1) % 2 ** 32) + 2 ** 32) % 2 ** 32;
}

/**
 * The tokens a generation may take: `requested` (named `budgetParam` in the request) must leave
 * room in the context after the prompt (named `promptParam`); absent, generation may run to its end.
 */
export function tokenBudget(requested: number | undefined, promptTokens: number, info: ModelInfo, promptParam: 'messages' | 'prompt', budgetParam: string): number {
  const room = info.contextLength - promptTokens;
  if (room < 1) {
    throw invalidParam(promptParam, `This model's maximum context length is ${info.contextLength} tokens. However, your prompt has ${promptTokens} tokens.`, 'context_length_exceeded');
  }
  if (requested === undefined) return room;
  if (requested > room) {
    throw invalidParam(budgetParam, `This model's maximum context length is ${info.contextLength} tokens. However, you requested ${promptTokens + requested} tokens (${promptTokens} in the prompt, ${requested} for the completion). Please reduce the prompt or the completion length.`, 'context_length_exceeded');
  }
  return requested;
}
