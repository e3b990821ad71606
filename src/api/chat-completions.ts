// POST /v1/chat/completions: messages through the model's chat template, generation in the
// inference worker, the answer as a chat.completion object or as server-sent chat.completion.chunk
// events. Tools: their definitions go into the template, and the template's tool-call syntax in
// the output (`<tool_call>{json}</tool_call>` for ChatML/Qwen/Hermes templates, `[TOOL_CALLS][…]`
// for Mistral's) comes back as `tool_calls`; tool_choice "required" or a named function forces a
// call by constrained decoding. response_format json_object / json_schema: constrained decoding
// (engine/infer/constraints), so the content always parses and follows the schema's structure.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { randomBytes } from 'node:crypto';
import type { ChatMessage, ConstraintSpec, GenerateOptions, GenerationResult, JsonSchema, ModelInfo, TokenInfo, TokenLogprob, ToolDefinition } from '../engine/index.ts';
import { nowSeconds } from '../domain/clock.ts';
import {
  abandon, choiceCount, choiceSeed, disconnectSignal, EventStream, invalid, optionalBoolean, optionalNumber,
  checkLogitBias, rejectUnknown, requireModelName, requireObjectBody, responseId, samplingOptions, streamOptions, tokenBudget,
  type Body, type InferenceService, type ResolvedModel,
} from './inference.ts';

const KNOWN = [
  'model', 'messages', 'frequency_penalty', 'presence_penalty', 'logit_bias', 'logprobs', 'top_logprobs', 'max_tokens',
  'max_completion_tokens', 'n', 'seed', 'stop', 'stream', 'stream_options', 'temperature', 'top_p', 'tools', 'tool_choice',
  'parallel_tool_calls', 'response_format', 'user', 'metadata', 'store', 'service_tier', 'safety_identifier',
  'prompt_cache_key', 'prompt_cache_retention', 'prompt_cache_options', 'verbosity', 'moderation',
  // known to OpenAI, refused below with a reason
  'audio', 'modalities', 'prediction', 'web_search_options', 'functions', 'function_call', 'reasoning_effort',
] as const;

const ROLES = new Set(['system', 'developer', 'user', 'assistant', 'tool', 'function']);
const FUNCTION_NAME = /^[a-zA-Z0-9_-]{1,64}$/;

// ------------------------------------------------------------------------------------ tool calls

export type ToolSyntax = 'hermes' | 'mistral';

/** Which tool-call syntax a chat template teaches its model (null: none we can parse). */
export function toolSyntaxOf(chatTemplate: string | null): ToolSyntax | null {
  if (!chatTemplate) return null;
  if (chatTemplate.includes('<tool_call>')) return 'hermes';
  if (chatTemplate.includes('[TOOL_CALLS]')) return 'mistral';
  return null;
}

export interface ParsedToolCall {
  name: string;
  /** JSON text, as OpenAI returns arguments. */
  arguments: string;
}

function callOf(value: unknown, known: Set<string>): ParsedToolCall | null {
  if (!value || typeof value !== 'object' || Array.isArray(value)) return null;
  const v = value as Record<string, unknown>;
  if (typeof v.name !== 'string' || !known.has(v.name)) return null;
  const args = v.arguments ?? v.parameters ?? {};
  return { name: v.name, arguments: typeof args === 'string' ? args : JSON.stringify(args) };
}

/**
 * The tool calls in a model's raw output and the text around them. Only calls of known tools
 * whose JSON parses count; anything else stays in the content.
 */
export function parseToolCalls(text: string, syntax: ToolSyntax, toolNames: string[]): { content: string | null; calls: ParsedToolCall[] } {
  const known = new Set(toolNames);
  const calls: ParsedToolCall[] = [];
  let content = text;
  if (syntax === 'hermes') {
    content = text.replace(/<tool_call>\s*([\s\S]*?)\s*(?:<\/tool_call>|$)/g, (whole, body: string) => {
      let parsed: unknown;
      try {
        parsed = JSON.parse(body);
      } catch {
        return whole;
      }
      const call = callOf(parsed, known);
      if (!call) return whole;
      calls.push(call);
      return '';
    });
  } else {
    const at = text.indexOf('[TOOL_CALLS]');
    if (at >= 0) {
      try {
        const parsed = JSON.parse(text.slice(at + '[TOOL_CALLS]'.length).trim());
        const list = (Array.isArray(parsed) ? parsed : [parsed]).map((c) => callOf(c, known));
        if (list.length > 0 && list.every((c) => c !== null)) {
          calls.push(...(list as ParsedToolCall[]));
          content = text.slice(0, at);
        }
      } catch {
        // not a call: stays content
      }
    }
  }
  const trimmed = content.trim();
  return { content: calls.length === 0 ? text : trimmed.length > 0 ? trimmed : null, calls };
}

/** The text that opens a tool call in each syntax (streamed content is held back from there on). */
const CALL_OPENER: Record<ToolSyntax, string> = { hermes: '<tool_call>', mistral: '[TOOL_CALLS]' };

/**
 * Streamed content while tool calls may come: text is passed on until the call opener appears
 * (text that may be the start of the opener waits); from there on everything is kept for parsing
 * at the end.
 */
class ToolCallFilter {
  private held = '';
  private calling = false;

  constructor(private readonly opener: string) {}

  push(delta: string): string {
    if (this.calling) {
      this.held += delta;
      return '';
    }
    const text = this.held + delta;
    const at = text.indexOf(this.opener);
    if (at >= 0) {
      this.calling = true;
      this.held = text.slice(at);
      return text.slice(0, at);
    }
    let keep = 0;
    for (let n = Math.min(this.opener.length - 1, text.length); n > 0; n--) {
      if (text.endsWith(this.opener.slice(0, n))) {
        keep = n;
        break;
      }
    }
    this.held = text.slice(text.length - keep);
    return text.slice(0, text.length - keep);
  }

  /** What was held back, once generation ended. */
  rest(): string {
    const rest = this.held;
    this.held = '';
    return rest;
  }
}

const callId = () => `call_${randomBytes(18).toString('base64url').replace(/[-_]/g, 'x')}`;

// ------------------------------------------------------------------------------------ requests

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
  sampling: GenerateOptions;
  responseFormat: { type: 'text' } | { type: 'json_object' } | { type: 'json_schema'; schema: JsonSchema };
}

function isObject(value: unknown): value is Body {
  return !!value && typeof value === 'object' && !Array.isArray(value);
}

function textContent(content: unknown, param: string, allowed: Set<string>, role: string): string | ChatMessage['content'] {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) throw invalid(param, `Invalid type for '${param}': expected a string or an array of content parts.`, 'invalid_type');
  return content.map((part, j) => {
    const where = `${param}[${j}]`;
    if (!isObject(part) || typeof part.type !== 'string') throw invalid(`${where}.type`, `Invalid '${where}': a content part needs a 'type'.`, 'invalid_type');
    if (!allowed.has(part.type)) {
      const what = part.type === 'image_url' ? 'images' : part.type === 'input_audio' ? 'audio' : part.type === 'file' ? 'files' : `'${part.type}' content parts`;
      throw invalid(`${where}.type`, `Invalid '${where}.type': this model does not accept ${what} in ${role} messages (text only).`, 'unsupported_value');
    }
    const text = part.type === 'refusal' ? part.refusal : part.text;
    if (typeof text !== 'string') throw invalid(`${where}.${part.type === 'refusal' ? 'refusal' : 'text'}`, `Invalid '${where}': expected a string.`, 'invalid_type');
    return { type: 'text', text };
  });
}

function parseMessages(value: unknown): ChatMessage[] {
  if (value === undefined || value === null) throw invalid('messages', "Missing required parameter: 'messages'.", 'missing_required_parameter');
  if (!Array.isArray(value)) throw invalid('messages', "Invalid type for 'messages': expected an array of messages.", 'invalid_type');
  if (value.length === 0) throw invalid('messages', "Invalid 'messages': empty array. Expected an array with minimum length 1.", 'empty_array');
  return value.map((m, i): ChatMessage => {
    const where = `messages[${i}]`;
    if (!isObject(m)) throw invalid(where, `Invalid type for '${where}': expected an object.`, 'invalid_type');
    const role = m.role;
    if (typeof role !== 'string' || !ROLES.has(role)) {
      throw invalid(`${where}.role`, `Invalid value for '${where}.role': ${JSON.stringify(role)}. Supported values are: 'system', 'developer', 'user', 'assistant', 'tool' and 'function'.`);
    }
    const message: ChatMessage = { role: role as ChatMessage['role'] };
    if (m.name !== undefined) {
      if (typeof m.name !== 'string') throw invalid(`${where}.name`, `Invalid type for '${where}.name': expected a string.`, 'invalid_type');
      message.name = m.name;
    }
    const content = m.content;
    const missing = content === undefined || content === null;
    if (role === 'assistant') {
      if (!missing) message.content = textContent(content, `${where}.content`, new Set(['text', 'refusal']), role) as ChatMessage['content'];
      if (m.tool_calls !== undefined) {
        if (!Array.isArray(m.tool_calls)) throw invalid(`${where}.tool_calls`, `Invalid type for '${where}.tool_calls': expected an array.`, 'invalid_type');
        message.tool_calls = m.tool_calls.map((call, j) => {
          const at = `${where}.tool_calls[${j}]`;
          if (!isObject(call) || !isObject(call.function) || typeof call.function.name !== 'string' || typeof call.function.arguments !== 'string') {
            throw invalid(at, `Invalid '${at}': expected {id, type: 'function', function: {name, arguments}}.`, 'invalid_type');
          }
          return { ...(typeof call.id === 'string' ? { id: call.id } : {}), type: 'function', function: { name: call.function.name, arguments: call.function.arguments } };
        });
      }
      if (missing && !message.tool_calls?.length) throw invalid(`${where}.content`, `Missing required parameter: '${where}.content' (an assistant message needs content or tool_calls).`, 'missing_required_parameter');
    } else {
      if (missing) throw invalid(`${where}.content`, `Missing required parameter: '${where}.content'.`, 'missing_required_parameter');
      message.content = textContent(content, `${where}.content`, new Set(['text']), role) as ChatMessage['content'];
    }
    if (role === 'tool') {
      if (typeof m.tool_call_id !== 'string') throw invalid(`${where}.tool_call_id`, `Missing required parameter: '${where}.tool_call_id'.`, 'missing_required_parameter');
      message.tool_call_id = m.tool_call_id;
    }
    if (role === 'function' && typeof m.name !== 'string') throw invalid(`${where}.name`, `Missing required parameter: '${where}.name'.`, 'missing_required_parameter');
    return message;
  });
}

function parseTools(body: Body): { tools?: ToolDefinition[]; toolChoice: ChatRequest['toolChoice'] } {
  const raw = body.tools;
  let tools: ToolDefinition[] | undefined;
  if (raw !== undefined && raw !== null) {
    if (!Array.isArray(raw)) throw invalid('tools', "Invalid type for 'tools': expected an array.", 'invalid_type');
    if (raw.length > 128) throw invalid('tools', `Invalid 'tools': at most 128 tools (got ${raw.length}).`);
    tools = raw.map((tool, i): ToolDefinition => {
      const where = `tools[${i}]`;
      if (!isObject(tool)) throw invalid(where, `Invalid type for '${where}': expected an object.`, 'invalid_type');
      if (tool.type !== 'function') throw invalid(`${where}.type`, `Invalid value for '${where}.type': only 'function' tools are supported.`, 'unsupported_value');
      const fn = tool.function;
      if (!isObject(fn)) throw invalid(`${where}.function`, `Missing required parameter: '${where}.function'.`, 'missing_required_parameter');
      if (typeof fn.name !== 'string' || !FUNCTION_NAME.test(fn.name)) {
        throw invalid(`${where}.function.name`, `Invalid '${where}.function.name': expected a name of 1 to 64 letters, digits, underscores or dashes.`);
      }
      if (fn.parameters !== undefined && !isObject(fn.parameters)) throw invalid(`${where}.function.parameters`, `Invalid type for '${where}.function.parameters': expected a JSON Schema object.`, 'invalid_type');
      if (fn.description !== undefined && typeof fn.description !== 'string') throw invalid(`${where}.function.description`, `Invalid type for '${where}.function.description': expected a string.`, 'invalid_type');
      return {
        type: 'function',
        function: { name: fn.name, ...(typeof fn.description === 'string' ? { description: fn.description } : {}), ...(fn.parameters ? { parameters: fn.parameters as Record<string, unknown> } : {}) },
      };
    });
    if (tools.length === 0) tools = undefined;
  }
  const choice = body.tool_choice;
  if (choice === undefined || choice === null) return { tools, toolChoice: tools ? 'auto' : 'none' };
  if (!tools) throw invalid('tool_choice', "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.");
  if (choice === 'none' || choice === 'auto' || choice === 'required') return { tools, toolChoice: choice };
  if (isObject(choice) && choice.type === 'function' && isObject(choice.function) && typeof choice.function.name === 'string') {
    const name = choice.function.name;
    if (!tools.some((t) => t.function.name === name)) throw invalid('tool_choice', `Invalid value for 'tool_choice': no function named '${name}' was specified in 'tools'.`);
    return { tools, toolChoice: { name } };
  }
  throw invalid('tool_choice', "Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or {type: 'function', function: {name}}.");
}

function parseResponseFormat(value: unknown): ChatRequest['responseFormat'] {
  if (value === undefined || value === null) return { type: 'text' };
  if (!isObject(value)) throw invalid('response_format', "Invalid type for 'response_format': expected an object.", 'invalid_type');
  if (value.type === 'text' || value.type === 'json_object') return { type: value.type };
  if (value.type !== 'json_schema') {
    throw invalid('response_format.type', `Invalid value for 'response_format.type': ${JSON.stringify(value.type)}. Supported values are: 'text', 'json_object' and 'json_schema'.`);
  }
  const spec = value.json_schema;
  if (!isObject(spec)) throw invalid('response_format.json_schema', "Missing required parameter: 'response_format.json_schema'.", 'missing_required_parameter');
  if (typeof spec.name !== 'string' || !FUNCTION_NAME.test(spec.name)) {
    throw invalid('response_format.json_schema.name', "Invalid 'response_format.json_schema.name': expected a name of 1 to 64 letters, digits, underscores or dashes.");
  }
  if (spec.schema !== undefined && !isObject(spec.schema)) throw invalid('response_format.json_schema.schema', "Invalid type for 'response_format.json_schema.schema': expected a JSON Schema object.", 'invalid_type');
  return { type: 'json_schema', schema: (spec.schema as JsonSchema | undefined) ?? { type: 'object' } };
}

function parseRequest(raw: unknown): ChatRequest {
  const body = requireObjectBody(raw);
  rejectUnknown(body, KNOWN);
  const model = requireModelName(body);
  const messages = parseMessages(body.messages);
  for (const key of ['audio', 'prediction', 'web_search_options'] as const) {
    if (body[key] !== undefined && body[key] !== null) throw invalid(key, `Unsupported parameter: '${key}' is not supported by this server's models.`, 'unsupported_parameter');
  }
  if (body.modalities !== undefined && body.modalities !== null) {
    if (!Array.isArray(body.modalities) || body.modalities.some((m) => m !== 'text')) throw invalid('modalities', "Unsupported value: 'modalities' may only contain 'text' here.", 'unsupported_value');
  }
  if (body.functions !== undefined || body.function_call !== undefined) {
    const key = body.functions !== undefined ? 'functions' : 'function_call';
    throw invalid(key, `Unsupported parameter: '${key}' is deprecated; use 'tools' and 'tool_choice'.`, 'unsupported_parameter');
  }
  if (body.reasoning_effort !== undefined && body.reasoning_effort !== null) {
    throw invalid('reasoning_effort', "Unsupported parameter: 'reasoning_effort' is not supported with this model.", 'unsupported_parameter');
  }
  const stream = optionalBoolean(body, 'stream') ?? false;
  const { includeUsage } = streamOptions(body, stream);
  const logprobs = optionalBoolean(body, 'logprobs') ?? false;
  const topLogprobs = optionalNumber(body, 'top_logprobs', 0, 20, true);
  if (topLogprobs !== undefined && !logprobs) throw invalid('top_logprobs', "Invalid value for 'top_logprobs': 'logprobs' must be set to true when 'top_logprobs' is used.");
  const maxCompletion = optionalNumber(body, 'max_completion_tokens', 1, Infinity, true);
  const maxTokens = optionalNumber(body, 'max_tokens', 1, Infinity, true);
  const parallelToolCalls = optionalBoolean(body, 'parallel_tool_calls') ?? true;
  const { tools, toolChoice } = parseTools(body);
  return {
    model,
    messages,
    tools,
    toolChoice,
    parallelToolCalls,
    n: choiceCount(body),
    stream,
    includeUsage,
    maxTokens: maxCompletion ?? maxTokens,
    maxTokensParam: maxCompletion !== undefined ? 'max_completion_tokens' : 'max_tokens',
    logprobs,
    topLogprobs: topLogprobs ?? 0,
    sampling: samplingOptions(body),
    responseFormat: parseResponseFormat(body.response_format),
  };
}

/** What generation must produce: a forced tool call, or JSON. */
function constraintFor(req: ChatRequest, syntax: ToolSyntax | null): ConstraintSpec | undefined {
  const forced = req.toolChoice === 'required' ? req.tools! : typeof req.toolChoice === 'object' ? req.tools!.filter((t) => t.function.name === (req.toolChoice as { name: string }).name) : null;
  if (forced) {
    if (syntax !== 'hermes') {
      throw invalid('tool_choice', "Invalid value for 'tool_choice': this model's chat template has no tool-call syntax that can be forced; use 'auto'.", 'unsupported_value');
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

function outcomeOf(text: string, result: GenerationResult, syntax: ToolSyntax | null, req: ChatRequest): Outcome {
  if (syntax && req.tools && req.toolChoice !== 'none') {
    const { content, calls } = toolCallsIn(text, syntax, req);
    if (calls.length > 0) return { content, calls, finishReason: 'tool_calls' };
  }
  return { content: text, calls: [], finishReason: result.finishReason };
}

export async function chatCompletionRoutes(app: FastifyInstance, service: InferenceService) {
  app.post('/chat/completions', async (request: FastifyRequest, reply: FastifyReply) => {
    const req = parseRequest(request.body);
    return service.withModel(req.model, request.caller.organization, (model, info) => complete(request, reply, service, model, info, req));
  });
}

async function complete(request: FastifyRequest, reply: FastifyReply, service: InferenceService, model: ResolvedModel, info: ModelInfo, req: ChatRequest) {
  const host = service.inferenceHost;
  if (!info.hasChatTemplate) {
    throw invalid('model', `The model '${model.name}' has no chat template; use /v1/completions with a plain prompt.`, 'unsupported_model');
  }
  const syntax = req.tools && req.toolChoice !== 'none' ? toolSyntaxOf(model.chatTemplate) : null;
  const constraint = constraintFor(req, syntax);
  let promptIds: number[];
  try {
    promptIds = await host.chatPrompt(model.key, req.messages, req.tools);
  } catch (error) {
    throw invalid('messages', `Invalid 'messages': the model's chat template could not render them: ${(error as Error).message}`);
  }
  checkLogitBias(req.sampling, info);
  const maxTokens = tokenBudget(req.maxTokens, promptIds.length, info, req.maxTokensParam);
  const generations = disconnectSignal(request, reply);
  const signal = generations.signal;
  const eos = new Set(info.eosTokenIds);
  const id = responseId('chatcmpl-');
  const created = nowSeconds();
  const options = (index: number): GenerateOptions => ({
    ...req.sampling,
    seed: choiceSeed(req.sampling.seed, index),
    maxTokens,
    ...(req.logprobs ? { logprobs: true, topLogprobs: req.topLogprobs } : {}),
    ...(constraint ? { constraint } : {}),
    signal,
  });
  const usage = (results: GenerationResult[]) => {
    const completion = results.reduce((sum, r) => sum + r.completionTokens, 0);
    return { prompt_tokens: promptIds.length, completion_tokens: completion, total_tokens: promptIds.length + completion };
  };
  const toolCallsJson = (calls: ParsedToolCall[]) => calls.map((c) => ({ id: callId(), type: 'function' as const, function: { name: c.name, arguments: c.arguments } }));

  if (!req.stream) {
    const results = await service.settle(generations, () => Promise.all(Array.from({ length: req.n }, (_, i) => service.generate(model.key, promptIds, options(i)))));
    if (!results) return abandon(reply); // the client left: nothing to answer
    return {
      id,
      object: 'chat.completion' as const,
      created,
      model: model.name,
      choices: results.map((result, index) => {
        const outcome = outcomeOf(result.text, result, syntax, req);
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
      usage: usage(results),
    };
  }

  const events = new EventStream(reply);
  const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) => ({
    id,
    object: 'chat.completion.chunk' as const,
    created,
    model: model.name,
    choices,
    ...(req.includeUsage ? { usage: null } : {}),
    ...extra,
  });
  const run = async (index: number): Promise<GenerationResult> => {
    events.send(chunk([{ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]));
    const filter = syntax ? new ToolCallFilter(CALL_OPENER[syntax]) : null;
    const onToken = (delta: string, info: TokenInfo) => {
      const content = filter ? filter.push(delta) : delta;
      const lp = req.logprobs && info.logprob && !eos.has(info.tokenId) ? { content: [logprobEntry(info.logprob, req.topLogprobs)], refusal: null } : null;
      if (content || lp) events.send(chunk([{ index, delta: { content }, logprobs: lp, finish_reason: null }]));
    };
    const result = await service.generate(model.key, promptIds, options(index), onToken);
    let finishReason: Outcome['finishReason'] = result.finishReason;
    const rest = filter?.rest() ?? '';
    if (rest) {
      // Held back from the call opener on: the calls, or (when none parse) plain content after all.
      const parsed = toolCallsIn(rest, syntax!, req);
      if (parsed.content) events.send(chunk([{ index, delta: { content: parsed.content }, logprobs: null, finish_reason: null }]));
      if (parsed.calls.length > 0) {
        events.send(chunk([{ index, delta: { tool_calls: toolCallsJson(parsed.calls).map((call, k) => ({ index: k, ...call })) }, logprobs: null, finish_reason: null }]));
        finishReason = 'tool_calls';
      }
    }
    events.send(chunk([{ index, delta: {}, logprobs: null, finish_reason: finishReason }]));
    return result;
  };
  try {
    const results = await service.settle(generations, () => Promise.all(Array.from({ length: req.n }, (_, i) => run(i))));
    if (results && req.includeUsage) events.send(chunk([], { usage: usage(results) }));
    events.end();
  } catch (error) {
    events.fail(error);
  }
  return reply;
}

