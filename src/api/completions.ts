// POST /v1/completions (legacy): plain-text prompts (a string, a list of strings, or token ids),
// no chat template. Same sampling as chat; `echo` puts the prompt in front of the text; `logprobs`
// (0–5) in the legacy shape {tokens, token_logprobs, top_logprobs, text_offset}; `stream` as
// server-sent text_completion objects. `suffix` (fill-in-the-middle) is refused: the models served
// here have no infill format.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { GenerateOptions, GenerationResult, ModelInfo, TokenInfo, TokenLogprob } from '../engine/index.ts';
import { nowSeconds } from '../domain/clock.ts';
import {
  abandon, choiceCount, choiceSeed, disconnectSignal, EventStream, invalid, optionalBoolean, optionalNumber,
  checkLogitBias, rejectUnknown, requireModelName, requireObjectBody, responseId, samplingOptions, streamOptions, tokenBudget,
  type Body, type InferenceService, type ResolvedModel,
} from './inference.ts';

const KNOWN = [
  'model', 'prompt', 'best_of', 'echo', 'frequency_penalty', 'logit_bias', 'logprobs', 'max_tokens', 'n', 'presence_penalty',
  'seed', 'stop', 'stream', 'stream_options', 'suffix', 'temperature', 'top_p', 'user',
] as const;

/** OpenAI's default for this endpoint. */
const DEFAULT_MAX_TOKENS = 16;

type Prompt = { text: string } | { ids: number[] };

interface CompletionRequest {
  model: string;
  prompts: Prompt[];
  n: number;
  echo: boolean;
  logprobs: number | null;
  maxTokens: number;
  stream: boolean;
  includeUsage: boolean;
  sampling: GenerateOptions;
}

const isTokenList = (v: unknown): v is number[] => Array.isArray(v) && v.length > 0 && v.every((x) => Number.isInteger(x) && x >= 0);

function parsePrompts(value: unknown): Prompt[] {
  if (value === undefined || value === null) throw invalid('prompt', "Missing required parameter: 'prompt'.", 'missing_required_parameter');
  if (typeof value === 'string') return [{ text: value }];
  if (isTokenList(value)) return [{ ids: value }];
  if (Array.isArray(value) && value.length > 0) {
    if (value.every((p) => typeof p === 'string')) return value.map((text) => ({ text }));
    if (value.every(isTokenList)) return value.map((ids) => ({ ids }));
  }
  throw invalid('prompt', "Invalid type for 'prompt': expected a string, an array of strings, an array of token ids or an array of token-id arrays.", 'invalid_type');
}

function parseRequest(raw: unknown): CompletionRequest {
  const body = requireObjectBody(raw);
  rejectUnknown(body, KNOWN);
  const model = requireModelName(body);
  const prompts = parsePrompts(body.prompt);
  if (body.suffix !== undefined && body.suffix !== null) {
    throw invalid('suffix', "Unsupported parameter: 'suffix' (fill-in-the-middle) is not supported by this server's models.", 'unsupported_parameter');
  }
  const n = choiceCount(body);
  const bestOf = optionalNumber(body, 'best_of', 1, 20, true);
  if (bestOf !== undefined && bestOf !== n) {
    throw invalid('best_of', "Unsupported value: 'best_of' must equal 'n' here (choices are not ranked server-side).", 'unsupported_value');
  }
  const stream = optionalBoolean(body, 'stream') ?? false;
  const { includeUsage } = streamOptions(body, stream);
  const logprobs = optionalNumber(body, 'logprobs', 0, 5, true) ?? null;
  const echo = optionalBoolean(body, 'echo') ?? false;
  if (echo && logprobs !== null) {
    throw invalid('echo', "Unsupported value: 'echo' together with 'logprobs' (log-probabilities of the prompt's tokens) is not supported.", 'unsupported_value');
  }
  if (prompts.length * n > 128) throw invalid('n', `Invalid 'n': ${prompts.length} prompts × ${n} choices is more than 128 completions.`);
  return {
    model,
    prompts,
    n,
    echo,
    logprobs,
    maxTokens: optionalNumber(body, 'max_tokens', 1, Infinity, true) ?? DEFAULT_MAX_TOKENS,
    stream,
    includeUsage,
    sampling: samplingOptions(body),
  };
}

/** Legacy logprobs of the generated tokens (EOS left out), text offsets from `start`. */
function legacyLogprobs(logprobs: TokenLogprob[], start: number) {
  const out = { tokens: [] as string[], token_logprobs: [] as number[], top_logprobs: [] as Record<string, number>[], text_offset: [] as number[] };
  let offset = start;
  for (const lp of logprobs) {
    out.tokens.push(lp.token);
    out.token_logprobs.push(lp.logprob);
    const top: Record<string, number> = {};
    for (const t of lp.topLogprobs) if (!(t.token in top)) top[t.token] = t.logprob;
    out.top_logprobs.push(top);
    out.text_offset.push(offset);
    offset += lp.token.length;
  }
  return out;
}

export async function completionRoutes(app: FastifyInstance, service: InferenceService) {
  app.post('/completions', async (request: FastifyRequest, reply: FastifyReply) => {
    const req = parseRequest(request.body);
    return service.withModel(req.model, request.caller.organization, (model, info) => complete(request, reply, service, model, info, req));
  });
}

async function complete(request: FastifyRequest, reply: FastifyReply, service: InferenceService, model: ResolvedModel, info: ModelInfo, req: CompletionRequest) {
  const host = service.inferenceHost;
  const prompts = await Promise.all(
    req.prompts.map(async (p) => {
      if ('ids' in p) {
        const bad = p.ids.find((id) => id >= info.vocabSize);
        if (bad !== undefined) throw invalid('prompt', `Invalid 'prompt': token id ${bad} is outside the vocabulary (${info.vocabSize}).`);
        return { ids: p.ids, text: '' };
      }
      return { ids: await host.textPrompt(model.key, p.text), text: p.text };
    }),
  );
  for (const p of prompts) if (p.ids.length === 0) throw invalid('prompt', "Invalid 'prompt': it encodes to no tokens.");
  checkLogitBias(req.sampling, info);
  const budgets = prompts.map((p) => tokenBudget(req.maxTokens, p.ids.length, info, 'max_tokens'));
  const generations = disconnectSignal(request, reply);
  const signal = generations.signal;
  const eos = new Set(info.eosTokenIds);
  const id = responseId('cmpl-');
  const created = nowSeconds();
  // Choice index = prompt index × n + k, as OpenAI numbers them.
  const jobs = prompts.flatMap((prompt, p) => Array.from({ length: req.n }, (_, k) => ({ prompt, index: p * req.n + k, maxTokens: budgets[p], k })));
  const options = (job: (typeof jobs)[number]): GenerateOptions => ({
    ...req.sampling,
    seed: choiceSeed(req.sampling.seed, job.index),
    maxTokens: job.maxTokens,
    ...(req.logprobs !== null ? { logprobs: true, topLogprobs: req.logprobs } : {}),
    signal,
  });
  const promptTokens = prompts.reduce((sum, p) => sum + p.ids.length, 0);
  const usage = (results: GenerationResult[]) => {
    const completion = results.reduce((sum, r) => sum + r.completionTokens, 0);
    return { prompt_tokens: promptTokens, completion_tokens: completion, total_tokens: promptTokens + completion };
  };
  const object = (choices: unknown[], extra: Record<string, unknown> = {}) => ({ id, object: 'text_completion' as const, created, model: model.name, choices, ...extra });

  if (!req.stream) {
    const results = await service.settle(generations, () => Promise.all(jobs.map((job) => service.generate(model.key, job.prompt.ids, options(job)))));
    if (!results) return abandon(reply); // the client left: nothing to answer
    return object(
      results.map((result, i) => {
        const prefix = req.echo ? jobs[i].prompt.text : '';
        return {
          index: jobs[i].index,
          text: prefix + result.text,
          logprobs: req.logprobs !== null ? legacyLogprobs((result.logprobs ?? []).filter((lp) => !eos.has(lp.tokenId)), prefix.length) : null,
          finish_reason: result.finishReason,
        };
      }),
      { usage: usage(results) },
    );
  }

  const events = new EventStream(reply);
  const streamExtra = {}; // no `usage: null` on chunks: this endpoint's schema has no null usage
  const run = async (job: (typeof jobs)[number]) => {
    if (req.echo && job.prompt.text) events.send(object([{ index: job.index, text: job.prompt.text, logprobs: null, finish_reason: null }], streamExtra));
    let offset = req.echo ? job.prompt.text.length : 0;
    const onToken = (delta: string, token: TokenInfo) => {
      const lp = req.logprobs !== null && token.logprob && !eos.has(token.tokenId) ? legacyLogprobs([token.logprob], offset) : null;
      if (lp) offset += token.logprob!.token.length;
      if (delta || lp) events.send(object([{ index: job.index, text: delta, logprobs: lp, finish_reason: null }], streamExtra));
    };
    const result = await service.generate(model.key, job.prompt.ids, options(job), onToken);
    events.send(object([{ index: job.index, text: '', logprobs: null, finish_reason: result.finishReason }], streamExtra));
    return result;
  };
  try {
    const results = await service.settle(generations, () => Promise.all(jobs.map(run)));
    if (results && req.includeUsage) events.send(object([], { usage: usage(results) }));
    events.end();
  } catch (error) {
    events.fail(error);
  }
  return reply;
}

