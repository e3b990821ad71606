// POST /v1/completions (legacy): plain-text prompts (a string, a list of strings, or token ids),
// no chat template. The body's shape is OpenAI's CreateCompletionRequest (the route schema). Same
// sampling as chat; `echo` puts the prompt in front of the text; `logprobs` (0–5) in the legacy
// shape {tokens, token_logprobs, top_logprobs, text_offset}; `stream` as server-sent
// text_completion objects. `suffix` (fill-in-the-middle) is refused: the models served here have
// no infill format.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { nowSeconds } from '../domain/clock.ts';
import { invalidParam } from '../domain/errors.ts';
import type { ModelInfo, TokenLogprob } from '../engine/index.ts';
import { respondWithChoices, responseId, type Choice, type Usage } from './inference/choices.ts';
import {
  checkLogitBias, choiceSeed, includeUsage, MAX_TOKENS_SCHEMA, SAMPLING_SCHEMA_PATCH, samplingOptions, tokenBudget, type SamplingBody,
} from './inference/request.ts';
import type { InferenceService, ServedModel } from './inference/service.ts';
import { specRequestSchema } from './schemas.ts';

const bodySchema = specRequestSchema('CreateCompletionRequest', { properties: { ...SAMPLING_SCHEMA_PATCH, max_tokens: MAX_TOKENS_SCHEMA } });

/** OpenAI's default for this endpoint. */
const DEFAULT_MAX_TOKENS = 16;
/** Most completions one request may ask for (prompts × n), as OpenAI bounds n. */
const MAX_COMPLETIONS = 128;

/** The request body as the route schema lets it through. */
interface CompletionBody extends SamplingBody {
  prompt: string | string[] | number[] | number[][] | null;
  best_of?: number | null;
  echo?: boolean | null;
  logprobs?: number | null;
  max_tokens?: number | null;
  suffix?: string | null;
}

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
  sampling: ReturnType<typeof samplingOptions>;
}

function parsePrompts(prompt: CompletionBody['prompt']): Prompt[] {
  if (prompt === null) throw invalidParam('prompt', "Missing required parameter: 'prompt'.", 'missing_required_parameter');
  if (typeof prompt === 'string') return [{ text: prompt }];
  if (prompt.length === 0) throw invalidParam('prompt', "Invalid 'prompt': empty array. Expected a string, strings, token ids or arrays of token ids.", 'invalid_value');
  if (typeof prompt[0] === 'number') return [{ ids: prompt as number[] }];
  if (typeof prompt[0] === 'string') return (prompt as string[]).map((text) => ({ text }));
  return (prompt as number[][]).map((ids) => ({ ids }));
}

function parseRequest(body: CompletionBody): CompletionRequest {
  const prompts = parsePrompts(body.prompt);
  if (body.suffix != null) throw invalidParam('suffix', "Unsupported parameter: 'suffix' (fill-in-the-middle) is not supported by this server's models.", 'unsupported_parameter');
  const n = body.n ?? 1;
  if (body.best_of != null && body.best_of !== n) {
    throw invalidParam('best_of', "Unsupported value: 'best_of' must equal 'n' here (choices are not ranked server-side).", 'unsupported_value');
  }
  const logprobs = body.logprobs ?? null;
  const echo = body.echo ?? false;
  if (echo && logprobs !== null) {
    throw invalidParam('echo', "Unsupported value: 'echo' together with 'logprobs' (log-probabilities of the prompt's tokens) is not supported.", 'unsupported_value');
  }
  if (prompts.length * n > MAX_COMPLETIONS) throw invalidParam('n', `Invalid 'n': ${prompts.length} prompts × ${n} choices is more than ${MAX_COMPLETIONS} completions.`, 'invalid_value');
  return {
    model: body.model,
    prompts,
    n,
    echo,
    logprobs,
    maxTokens: body.max_tokens ?? DEFAULT_MAX_TOKENS,
    stream: body.stream ?? false,
    includeUsage: includeUsage(body),
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
  app.post<{ Body: CompletionBody }>('/completions', { schema: { body: bodySchema } }, async (request, reply) => {
    const req = parseRequest(request.body);
    return service.withModel(req.model, request.caller.organization, (model, info) => complete(request, reply, service, model, info, req));
  });
}

async function complete(request: FastifyRequest, reply: FastifyReply, service: InferenceService, model: ServedModel, info: ModelInfo, req: CompletionRequest) {
  const prompts = await Promise.all(
    req.prompts.map(async (p) => {
      if ('ids' in p) {
        const bad = p.ids.find((id) => id < 0 || id >= info.vocabSize);
        if (bad !== undefined) throw invalidParam('prompt', `Invalid 'prompt': token id ${bad} is outside the vocabulary (${info.vocabSize}).`, 'invalid_value');
        return { ids: p.ids, text: '' };
      }
      return { ids: await service.textPrompt(model.key, p.text), text: p.text };
    }),
  );
  for (const p of prompts) if (p.ids.length === 0) throw invalidParam('prompt', "Invalid 'prompt': it encodes to no tokens.", 'invalid_value');
  checkLogitBias(req.sampling, info);
  const budgets = prompts.map((p) => tokenBudget(req.maxTokens, p.ids.length, info, 'prompt', 'max_tokens'));
  const eos = new Set(info.eosTokenIds);
  const id = responseId('cmpl-');
  const created = nowSeconds();
  // Choice index = prompt index × n + k, as OpenAI numbers them.
  const choices: (Choice & { prompt: (typeof prompts)[number] })[] = prompts.flatMap((prompt, p) =>
    Array.from({ length: req.n }, (_, k) => {
      const index = p * req.n + k;
      return {
        index,
        prompt,
        promptIds: prompt.ids,
        options: {
          ...req.sampling,
          seed: choiceSeed(req.sampling.seed, index),
          maxTokens: budgets[p],
          ...(req.logprobs !== null ? { logprobs: true, topLogprobs: req.logprobs } : {}),
        },
      };
    }),
  );
  const echoed = (choice: (typeof choices)[number]) => (req.echo ? choice.prompt.text : '');
  // Chunks carry no `usage: null`: this endpoint's schema has no null usage.
  const object = (choiceObjects: unknown[], extra?: { usage: Usage }) => ({ id, object: 'text_completion' as const, created, model: model.name, choices: choiceObjects, ...extra });

  return respondWithChoices(service, request, reply, model.key, {
    choices,
    promptTokens: prompts.reduce((sum, p) => sum + p.ids.length, 0),
    stream: req.stream,
    includeUsage: req.includeUsage,
    whole: (results, usage) =>
      object(
        results.map((result, i) => {
          const prefix = echoed(choices[i]);
          return {
            index: choices[i].index,
            text: prefix + result.text,
            logprobs: req.logprobs !== null ? legacyLogprobs((result.logprobs ?? []).filter((lp) => !eos.has(lp.tokenId)), prefix.length) : null,
            finish_reason: result.finishReason,
          };
        }),
        { usage },
      ),
    chunk: object,
    streamChoice: (choice, send) => {
      const { index } = choice;
      const prefix = echoed(choices[index]);
      if (prefix) send({ index, text: prefix, logprobs: null, finish_reason: null });
      let offset = prefix.length;
      return {
        onToken: (delta, token) => {
          const logprobs = req.logprobs !== null && token.logprob && !eos.has(token.tokenId) ? legacyLogprobs([token.logprob], offset) : null;
          if (logprobs) offset += token.logprob!.token.length;
          if (delta || logprobs) send({ index, text: delta, logprobs, finish_reason: null });
        },
        finish: (result) => send({ index, text: '', logprobs: null, finish_reason: result.finishReason }),
      };
    },
  });
}
