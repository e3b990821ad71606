// POST /v1/chat/completions: messages through the model's chat template, generation in the
// inference worker, the answer as a chat.completion object or as server-sent chat.completion.chunk
// events. The body's shape is OpenAI's CreateChatCompletionRequest (the route schema); what this
// server's models cannot do (images, audio, custom tools…) is refused here with a reason. Tools:
// their definitions go into the template, and the template's tool-call syntax in the output comes
// back as `tool_calls` (inference/tool-calls.ts); tool_choice "required" or a named function forces
// a call by constrained decoding. response_format json_object / json_schema: constrained decoding
// (the engine's constraints), so the content always parses and follows the schema's structure.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { nowSeconds } from '../domain/clock.ts';
import { ApiError, invalidParam } from '../domain/errors.ts';
import type { ChatMessage, ConstraintSpec, GenerationResult, JsonSchema, ModelInfo, TokenLogprob, ToolDefinition } from '../engine/index.ts';
import { respondWithChoices, responseId, type Choice, type Usage } from './inference/choices.ts';
import {
  checkLogitBias, choiceSeed, includeUsage, MAX_TOKENS_SCHEMA, SAMPLING_SCHEMA_PATCH, samplingOptions, tokenBudget, type SamplingBody,
} from './inference/request.ts';
import type { InferenceService, ServedModel } from './inference/service.ts';
import { parseToolCalls, ToolCallFilter, toolCallId, toolSyntaxOf, type ParsedToolCall, type ToolSyntax } from './inference/tool-calls.ts';
import { specRequestSchema } from './schemas.ts';

const bodySchema = specRequestSchema('CreateChatCompletionRequest', {
  properties: { ...SAMPLING_SCHEMA_PATCH, max_tokens: MAX_TOKENS_SCHEMA, max_completion_tokens: MAX_TOKENS_SCHEMA },
});

/** Function and json_schema names, as OpenAI documents them. */
const FUNCTION_NAME = /^[a-zA-Z0-9_-]{1,64}$/;

// ------------------------------------------------------------------------------------ requests

type ContentPart = { type: string; text?: string; refusal?: string };

/** The request body as the route schema lets it through. */
interface ChatCompletionBody extends SamplingBody {
  messages: {
    role: ChatMessage['role'];
    content?: string | ContentPart[] | null;
    name?: string;
    tool_calls?: { id: string; type: string; function?: { name: string; arguments: string } }[];
    tool_call_id?: string;
  }[];
  tools?: { type: string; function?: { name: string; description?: string; parameters?: Record<string, unknown> } }[] | null;
  tool_choice?: string | { type: string; function?: { name: string } } | null;
  parallel_tool_calls?: boolean | null;
  response_format?: { type: string; json_schema?: { name: string; schema?: JsonSchema } } | null;
  logprobs?: boolean | null;
  top_logprobs?: number | null;
  max_tokens?: number | null;
  max_completion_tokens?: number | null;
  audio?: unknown;
  prediction?: unknown;
  web_search_options?: unknown;
  modalities?: string[] | null;
  functions?: unknown;
  function_call?: unknown;
  reasoning_effort?: string | null;
}

interface ChatRequest {
  model: string;
  messages: ChatMessage[];
  tools?: ToolDefinition[];
  toolChoice: 'none' | 'auto' | 'required' | { name: string };
  /** false: at most one tool call per answer (the first). */
  parallelToolCalls: boolean;
  n: number;
  stream: boolean;
  includeUsage: boolean;
  maxTokens?: number;
  maxTokensParam: string;
  logprobs: boolean;
  topLogprobs: number;
  sampling: ReturnType<typeof samplingOptions>;
  responseFormat: { type: 'text' } | { type: 'json_object' } | { type: 'json_schema'; schema: JsonSchema };
}

/** Content parts as text: the models served here read text only. */
function textContent(content: string | ContentPart[], param: string, allowed: Set<string>, role: string): ChatMessage['content'] {
  if (typeof content === 'string') return content;
  return content.map((part, j) => {
    const where = `${param}[${j}]`;
    if (!allowed.has(part.type)) {
      const what = part.type === 'image_url' ? 'images' : part.type === 'input_audio' ? 'audio' : part.type === 'file' ? 'files' : `'${part.type}' content parts`;
      throw invalidParam(`${where}.type`, `Invalid '${where}.type': this model does not accept ${what} in ${role} messages (text only).`, 'unsupported_value');
    }
    return { type: 'text' as const, text: (part.type === 'refusal' ? part.refusal : part.text) ?? '' };
  });
}

function parseMessages(messages: ChatCompletionBody['messages']): ChatMessage[] {
  return messages.map((m, i): ChatMessage => {
    const where = `messages[${i}]`;
    const message: ChatMessage = { role: m.role, ...(m.name !== undefined ? { name: m.name } : {}) };
    const missing = m.content === undefined || m.content === null;
    if (m.role === 'assistant') {
      if (!missing) message.content = textContent(m.content!, `${where}.content`, new Set(['text', 'refusal']), m.role);
      if (m.tool_calls) {
        message.tool_calls = m.tool_calls.map((call, j) => {
          if (call.type !== 'function' || !call.function) throw invalidParam(`${where}.tool_calls[${j}].type`, `Invalid '${where}.tool_calls[${j}].type': only 'function' tool calls are supported.`, 'unsupported_value');
          return { id: call.id, type: 'function', function: { name: call.function.name, arguments: call.function.arguments } };
        });
      }
      if (missing && !message.tool_calls?.length) throw invalidParam(`${where}.content`, `Missing required parameter: '${where}.content' (an assistant message needs content or tool_calls).`, 'missing_required_parameter');
    } else {
      if (missing) throw invalidParam(`${where}.content`, `Missing required parameter: '${where}.content'.`, 'missing_required_parameter');
      message.content = textContent(m.content!, `${where}.content`, new Set(['text']), m.role);
    }
    if (m.role === 'tool') message.tool_call_id = m.tool_call_id;
    return message;
  });
}

function parseTools(body: ChatCompletionBody): { tools?: ToolDefinition[]; toolChoice: ChatRequest['toolChoice'] } {
  let tools: ToolDefinition[] | undefined;
  if (body.tools) {
    if (body.tools.length > 128) throw invalidParam('tools', `Invalid 'tools': at most 128 tools (got ${body.tools.length}).`, 'invalid_value');
    tools = body.tools.map((tool, i): ToolDefinition => {
      const where = `tools[${i}]`;
      if (tool.type !== 'function' || !tool.function) throw invalidParam(`${where}.type`, `Invalid value for '${where}.type': only 'function' tools are supported.`, 'unsupported_value');
      const { name, description, parameters } = tool.function;
      if (!FUNCTION_NAME.test(name)) throw invalidParam(`${where}.function.name`, `Invalid '${where}.function.name': expected a name of 1 to 64 letters, digits, underscores or dashes.`, 'invalid_value');
      return { type: 'function', function: { name, ...(description !== undefined ? { description } : {}), ...(parameters ? { parameters } : {}) } };
    });
    if (tools.length === 0) tools = undefined;
  }
  const choice = body.tool_choice;
  if (choice === undefined || choice === null) return { tools, toolChoice: tools ? 'auto' : 'none' };
  if (!tools) throw invalidParam('tool_choice', "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.", 'invalid_value');
  if (choice === 'none' || choice === 'auto' || choice === 'required') return { tools, toolChoice: choice };
  if (typeof choice === 'object' && choice.type === 'function' && choice.function) {
    const name = choice.function.name;
    if (!tools.some((t) => t.function.name === name)) throw invalidParam('tool_choice', `Invalid value for 'tool_choice': no function named '${name}' was specified in 'tools'.`, 'invalid_value');
    return { tools, toolChoice: { name } };
  }
  throw invalidParam('tool_choice', "Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or {type: 'function', function: {name}}.", 'unsupported_value');
}

function parseResponseFormat(format: ChatCompletionBody['response_format']): ChatRequest['responseFormat'] {
  if (!format || format.type === 'text') return { type: 'text' };
  if (format.type === 'json_object') return { type: 'json_object' };
  const spec = format.json_schema!; // the schema requires it for type json_schema
  if (!FUNCTION_NAME.test(spec.name)) {
    throw invalidParam('response_format.json_schema.name', "Invalid 'response_format.json_schema.name': expected a name of 1 to 64 letters, digits, underscores or dashes.", 'invalid_value');
  }
  return { type: 'json_schema', schema: spec.schema ?? { type: 'object' } };
}

/** What OpenAI's models do and this server's do not: refused with the reason. */
function refuseUnsupported(body: ChatCompletionBody): void {
  for (const key of ['audio', 'prediction', 'web_search_options'] as const) {
    if (body[key] != null) throw invalidParam(key, `Unsupported parameter: '${key}' is not supported by this server's models.`, 'unsupported_parameter');
  }
  if (body.modalities?.some((m) => m !== 'text')) throw invalidParam('modalities', "Unsupported value: 'modalities' may only contain 'text' here.", 'unsupported_value');
  for (const key of ['functions', 'function_call'] as const) {
    if (body[key] !== undefined) throw invalidParam(key, `Unsupported parameter: '${key}' is deprecated; use 'tools' and 'tool_choice'.`, 'unsupported_parameter');
  }
  if (body.reasoning_effort != null) throw invalidParam('reasoning_effort', "Unsupported parameter: 'reasoning_effort' is not supported with this model.", 'unsupported_parameter');
}

function parseRequest(body: ChatCompletionBody): ChatRequest {
  const messages = parseMessages(body.messages);
  refuseUnsupported(body);
  const logprobs = body.logprobs ?? false;
  if (body.top_logprobs != null && !logprobs) throw invalidParam('top_logprobs', "Invalid value for 'top_logprobs': 'logprobs' must be set to true when 'top_logprobs' is used.", 'invalid_value');
  const maxCompletion = body.max_completion_tokens ?? undefined;
  return {
    model: body.model,
    messages,
    ...parseTools(body),
    parallelToolCalls: body.parallel_tool_calls ?? true,
    n: body.n ?? 1,
    stream: body.stream ?? false,
    includeUsage: includeUsage(body),
    maxTokens: maxCompletion ?? body.max_tokens ?? undefined,
    maxTokensParam: maxCompletion !== undefined ? 'max_completion_tokens' : 'max_tokens',
    logprobs,
    topLogprobs: body.top_logprobs ?? 0,
    sampling: samplingOptions(body),
    responseFormat: parseResponseFormat(body.response_format),
  };
}

/** What generation must produce: a forced tool call, or JSON. */
function constraintFor(req: ChatRequest, syntax: ToolSyntax | null): ConstraintSpec | undefined {
  const forced = req.toolChoice === 'required' ? req.tools! : typeof req.toolChoice === 'object' ? req.tools!.filter((t) => t.function.name === (req.toolChoice as { name: string }).name) : null;
  if (forced) {
    if (syntax !== 'hermes') {
      throw invalidParam('tool_choice', "Invalid value for 'tool_choice': this model's chat template has no tool-call syntax that can be forced; use 'auto'.", 'unsupported_value');
    }
    // {"name": …, "arguments": …} as the template writes calls; with several tools, one branch each,
    // so the arguments follow the schema of the function named.
    const call = (tool: ToolDefinition): JsonSchema => ({
      type: 'object',
      properties: { name: { const: tool.function.name }, arguments: (tool.function.parameters as JsonSchema | undefined) ?? { type: 'object' } },
      required: ['name', 'arguments'],
    });
    return {
      type: 'json',
      schema: forced.length === 1 ? call(forced[0]) : { anyOf: forced.map(call) },
      prefix: '<tool_call>\n',
      suffix: '\n</tool_call>',
    };
  }
  if (req.responseFormat.type === 'json_object') return { type: 'json' };
  if (req.responseFormat.type === 'json_schema') return { type: 'json', schema: req.responseFormat.schema };
  return undefined;
}

// ------------------------------------------------------------------------------------ responses

function logprobEntry(lp: TokenLogprob, top: number) {
  return {
    token: lp.token,
    logprob: lp.logprob,
    bytes: lp.bytes,
    top_logprobs: lp.topLogprobs.slice(0, top).map((t) => ({ token: t.token, logprob: t.logprob, bytes: t.bytes })),
  };
}

interface Outcome {
  content: string | null;
  calls: ParsedToolCall[];
  finishReason: 'stop' | 'length' | 'tool_calls';
}

function toolCallsIn(text: string, syntax: ToolSyntax, req: ChatRequest) {
  const parsed = parseToolCalls(text, syntax, req.tools!.map((t) => t.function.name));
  return req.parallelToolCalls ? parsed : { ...parsed, calls: parsed.calls.slice(0, 1) };
}

function outcomeOf(result: GenerationResult, syntax: ToolSyntax | null, req: ChatRequest): Outcome {
  if (syntax && req.tools && req.toolChoice !== 'none') {
    const { content, calls } = toolCallsIn(result.text, syntax, req);
    if (calls.length > 0) return { content, calls, finishReason: 'tool_calls' };
  }
  return { content: result.text, calls: [], finishReason: result.finishReason };
}

const toolCallsJson = (calls: ParsedToolCall[]) => calls.map((c) => ({ id: toolCallId(), type: 'function' as const, function: { name: c.name, arguments: c.arguments } }));

export async function chatCompletionRoutes(app: FastifyInstance, service: InferenceService) {
  app.post<{ Body: ChatCompletionBody }>('/chat/completions', { schema: { body: bodySchema } }, async (request, reply) => {
    const req = parseRequest(request.body);
    return service.withModel(req.model, request.caller.organization, (model, info) => complete(request, reply, service, model, info, req));
  });
}

async function complete(request: FastifyRequest, reply: FastifyReply, service: InferenceService, model: ServedModel, info: ModelInfo, req: ChatRequest) {
  if (!info.hasChatTemplate) {
    throw invalidParam('model', `The model '${model.name}' has no chat template; use /v1/completions with a plain prompt.`, 'unsupported_model');
  }
  const syntax = req.tools && req.toolChoice !== 'none' ? toolSyntaxOf(model.chatTemplate) : null;
  const constraint = constraintFor(req, syntax);
  let promptIds: number[];
  try {
    promptIds = await service.chatPrompt(model.key, req.messages, req.tools);
  } catch (error) {
    if (error instanceof ApiError) throw error; // the host, not the messages
    throw invalidParam('messages', `Invalid 'messages': the model's chat template could not render them: ${(error as Error).message}`, 'invalid_value');
  }
  checkLogitBias(req.sampling, info);
  const maxTokens = tokenBudget(req.maxTokens, promptIds.length, info, 'messages', req.maxTokensParam);
  const eos = new Set(info.eosTokenIds);
  const id = responseId('chatcmpl-');
  const created = nowSeconds();
  const choices: Choice[] = Array.from({ length: req.n }, (_, index) => ({
    index,
    promptIds,
    options: {
      ...req.sampling,
      seed: choiceSeed(req.sampling.seed, index),
      maxTokens,
      ...(req.logprobs ? { logprobs: true, topLogprobs: req.topLogprobs } : {}),
      ...(constraint ? { constraint } : {}),
    },
  }));
  const chunkLogprobs = (lp: TokenLogprob | undefined, tokenId: number) =>
    req.logprobs && lp && !eos.has(tokenId) ? { content: [logprobEntry(lp, req.topLogprobs)], refusal: null } : null;

  return respondWithChoices(service, request, reply, model.key, {
    choices,
    promptTokens: promptIds.length,
    stream: req.stream,
    includeUsage: req.includeUsage,
    whole: (results, usage) => ({
      id,
      object: 'chat.completion' as const,
      created,
      model: model.name,
      choices: results.map((result, index) => {
        const outcome = outcomeOf(result, syntax, req);
        return {
          index,
          message: {
            role: 'assistant' as const,
            content: outcome.content,
            refusal: null,
            ...(outcome.calls.length ? { tool_calls: toolCallsJson(outcome.calls) } : {}),
            annotations: [],
          },
          logprobs: req.logprobs ? { content: (result.logprobs ?? []).filter((lp) => !eos.has(lp.tokenId)).map((lp) => logprobEntry(lp, req.topLogprobs)), refusal: null } : null,
          finish_reason: outcome.finishReason,
        };
      }),
      usage,
    }),
    chunk: (choiceDeltas: unknown[], extra?: { usage: Usage }) => ({
      id,
      object: 'chat.completion.chunk' as const,
      created,
      model: model.name,
      choices: choiceDeltas,
      ...(req.includeUsage ? { usage: null } : {}),
      ...extra,
    }),
    streamChoice: ({ index }, send) => {
      send({ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null });
      const filter = syntax ? new ToolCallFilter(syntax) : null;
      return {
        onToken: (delta, token) => {
          const content = filter ? filter.push(delta) : delta;
          const logprobs = chunkLogprobs(token.logprob, token.tokenId);
          if (content || logprobs) send({ index, delta: { content }, logprobs, finish_reason: null });
        },
        finish: (result) => {
          let finishReason: Outcome['finishReason'] = result.finishReason;
          const rest = filter?.rest() ?? '';
          if (rest) {
            // Held back from the call opener on: the calls, or (when none parse) plain content after all.
            const parsed = toolCallsIn(rest, syntax!, req);
            if (parsed.content) send({ index, delta: { content: parsed.content }, logprobs: null, finish_reason: null });
            if (parsed.calls.length > 0) {
              send({ index, delta: { tool_calls: toolCallsJson(parsed.calls).map((call, k) => ({ index: k, ...call })) }, logprobs: null, finish_reason: null });
              finishReason = 'tool_calls';
            }
          }
          send({ index, delta: {}, logprobs: null, finish_reason: finishReason });
        },
      };
    },
  });
}
