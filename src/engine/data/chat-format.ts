// OpenAI training examples → token ids and per-token loss weights, through the model's own chat
// template (rendered with @huggingface/jinja, as transformers' apply_chat_template does).
//
// Which tokens train: the tokens of each assistant turn whose `weight` is not 0 (default 1), from
// the first token after the generation prompt through the end-of-turn markup, so the model also
// learns to stop. The spans are found without knowing anything about the template:
//   1. render the whole conversation once and tokenize it once (these are the ids we train on);
//   2. for assistant message k, render messages[0..k) with add_generation_prompt (where the
//      answer starts) and messages[0..k] (where it ends); when both are prefixes of the full text,
//      those are character boundaries of the turn;
//   3. map a character boundary to a token index as the length of the common prefix of
//      encode(full[:boundary]) and encode(full): exact at token boundaries, and when a token
//      straddles the boundary, the start includes that token and the end excludes it.
// Templates whose rendering of a prefix is not a prefix of the whole (Mistral's moves the system
// prompt into the last user turn; some base-model templates always append the generation prompt)
// fall back to marking each assistant content with sentinel characters, locating them, and
// extending the end over the special token that immediately follows (the end-of-turn token).

import { Template } from '@huggingface/jinja';
import type { HfTokenizer } from './tokenizer.ts';

export interface ContentPart {
  type: string;
  text?: string;
}

export interface ToolCall {
  id?: string;
  type?: 'function';
  function: { name: string; arguments: string | Record<string, unknown> };
}

export interface ChatMessage {
  role: 'system' | 'developer' | 'user' | 'assistant' | 'tool' | 'function';
  content?: string | ContentPart[] | null;
  name?: string;
  /** Assistant only: 0 = context only, 1 (default) = train on it. */
  weight?: number;
  tool_calls?: ToolCall[];
  tool_call_id?: string;
  /** Deprecated single function call. */
  function_call?: { name: string; arguments: string };
}

export interface ToolDefinition {
  type: 'function';
  function: { name: string; description?: string; parameters?: Record<string, unknown> };
}

export interface ChatExample {
  messages: ChatMessage[];
  tools?: ToolDefinition[];
  parallel_tool_calls?: boolean;
  /** Deprecated: function definitions, treated as tools. */
  functions?: ToolDefinition['function'][];
}

export interface PromptCompletionExample {
  prompt: string;
  completion: string;
}

export interface TokenizedExample {
  ids: Int32Array;
  /** weights[i]: loss weight of token i as a prediction target (from the tokens before it). */
  weights: Float32Array;
  /** Tokens before truncation (what billing counts as min(context, length)). */
  fullLength: number;
  truncated: boolean;
}

/** The message shape chat templates expect (transformers' conventions). */
interface TemplateMessage {
  role: string;
  content: string | null;
  name?: string;
  tool_calls?: { id?: string; type: 'function'; function: { name: string; arguments: unknown } }[];
  tool_call_id?: string;
}

const START_MARK = '\uE000';
const END_MARK = '\uE001';

function textOf(content: ChatMessage['content'], where: string): string | null {
  if (content === undefined || content === null) return null;
  if (typeof content === 'string') return content;
  return content
    .map((part) => {
      if (part.type === 'text' && typeof part.text === 'string') return part.text;
      throw new Error(`${where}: content part of type "${part.type}" is not supported (text only)`);
    })
    .join('');
}

/** Tool-call arguments arrive as a JSON string (OpenAI); templates expect an object (transformers). */
function parseArguments(raw: string | Record<string, unknown>): unknown {
  if (typeof raw !== 'string') return raw;
  try {
    return JSON.parse(raw);
  } catch {
    return raw;
  }
}

/** OpenAI messages → template messages: developer → system, function → tool, function_call → tool_calls. */
export function toTemplateMessages(messages: ChatMessage[]): TemplateMessage[] {
  const toolNames = new Map<string, string>();
  return messages.map((message, index) => {
    const where = `message ${index + 1}`;
    const content = textOf(message.content, where);
    switch (message.role) {
      case 'system':
      case 'developer':
        return { role: 'system', content: content ?? '' };
      case 'user':
        return { role: 'user', content: content ?? '', ...(message.name ? { name: message.name } : {}) };
      case 'assistant': {
        const calls = message.tool_calls ?? (message.function_call ? [{ type: 'function' as const, function: message.function_call }] : []);
        const out: TemplateMessage = { role: 'assistant', content };
        if (calls.length) {
          out.tool_calls = calls.map((call) => {
            if (call.id) toolNames.set(call.id, call.function.name);
            return { ...(call.id ? { id: call.id } : {}), type: 'function', function: { name: call.function.name, arguments: parseArguments(call.function.arguments) } };
          });
        }
        return out;
      }
      case 'tool':
      case 'function': {
        const name = message.name ?? (message.tool_call_id ? toolNames.get(message.tool_call_id) : undefined);
        return {
          role: 'tool',
          content: content ?? '',
          ...(name ? { name } : {}),
          ...(message.tool_call_id ? { tool_call_id: message.tool_call_id } : {}),
        };
      }
      default:
        throw new Error(`${where}: unrecognized role ${JSON.stringify((message as { role: unknown }).role)}`);
    }
  });
}

function toolsOf(example: ChatExample): ToolDefinition[] | undefined {
  if (example.tools?.length) return example.tools;
  if (example.functions?.length) return example.functions.map((fn) => ({ type: 'function', function: fn }));
  return undefined;
}

function commonPrefixLength(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

interface CharSpan {
  start: number;
  end: number;
  weight: number;
}

export class ChatFormatter {
  private readonly template: Template;

  constructor(
    readonly tokenizer: HfTokenizer,
    chatTemplate: string | null = tokenizer.chatTemplate,
  ) {
    if (!chatTemplate) throw new Error('this model has no chat_template in tokenizer_config.json: chat examples need one');
    this.template = new Template(chatTemplate);
  }

  render(messages: TemplateMessage[], tools: ToolDefinition[] | undefined, addGenerationPrompt: boolean): string {
    return this.template.render({
      messages,
      ...(tools ? { tools } : {}),
      add_generation_prompt: addGenerationPrompt,
      ...this.tokenizer.templateVariables(),
    });
  }

  /** The prompt for generation: the conversation so far plus the assistant header. */
  promptIds(messages: ChatMessage[], tools?: ToolDefinition[]): number[] {
    return this.tokenizer.encode(this.render(toTemplateMessages(messages), tools, true));
  }

  /** Token ids and loss weights of a chat example, truncated from the end to `maxLength`. */
  tokenizeChat(example: ChatExample, maxLength: number): TokenizedExample {
    const messages = toTemplateMessages(example.messages);
    const tools = toolsOf(example);
    const full = this.render(messages, tools, false);
    const spans = this.assistantSpansByPrefix(example.messages, messages, tools, full) ?? this.assistantSpansByMarkers(example.messages, messages, tools, full);

    const ids = this.tokenizer.encode(full);
    const weights = new Float32Array(ids.length);
    const tokenIndex = (charIndex: number) =>
      charIndex >= full.length ? ids.length : commonPrefixLength(this.tokenizer.encode(full.slice(0, charIndex)), ids);
    for (const span of spans) {
      if (span.weight === 0) continue;
      const from = tokenIndex(span.start);
      const to = tokenIndex(span.end);
      weights.fill(span.weight, from, to);
    }
    return truncate(ids, weights, maxLength);
  }

  /** Prompt/completion: loss on the completion and a closing EOS, none on the prompt. */
  tokenizePromptCompletion(example: PromptCompletionExample, maxLength: number): TokenizedExample {
    const promptIds = this.tokenizer.encode(example.prompt, { addSpecialTokens: true });
    const ids = this.tokenizer.encode(example.prompt + example.completion, { addSpecialTokens: true });
    const eos = this.tokenizer.eosTokenId;
    if (eos !== null && ids[ids.length - 1] !== eos) ids.push(eos);
    const weights = new Float32Array(ids.length);
    weights.fill(1, commonPrefixLength(promptIds, ids));
    return truncate(ids, weights, maxLength);
  }

  /** One line of a training file: chat ({messages}) or prompt/completion. */
  tokenizeExample(example: unknown, maxLength: number): TokenizedExample {
    if (example && typeof example === 'object') {
      const record = example as Record<string, unknown>;
      if (Array.isArray(record.messages)) return this.tokenizeChat(record as unknown as ChatExample, maxLength);
      if (typeof record.prompt === 'string' && typeof record.completion === 'string') {
        return this.tokenizePromptCompletion(record as unknown as PromptCompletionExample, maxLength);
      }
    }
    throw new Error('training example is neither {"messages": [...]} nor {"prompt", "completion"}');
  }

  private assistantSpansByPrefix(
    original: ChatMessage[],
    messages: TemplateMessage[],
    tools: ToolDefinition[] | undefined,
    full: string,
  ): CharSpan[] | null {
    const spans: CharSpan[] = [];
    for (let k = 0; k < messages.length; k++) {
      if (messages[k].role !== 'assistant') continue;
      let before: string;
      let through: string;
      try {
        before = this.render(messages.slice(0, k), tools, true);
        through = this.render(messages.slice(0, k + 1), tools, false);
      } catch {
        return null; // e.g. a template that insists on ending with a user turn
      }
      if (!full.startsWith(through) || !through.startsWith(before)) return null;
      spans.push({ start: before.length, end: through.length, weight: original[k].weight ?? 1 });
    }
    return spans;
  }

  private assistantSpansByMarkers(
    original: ChatMessage[],
    messages: TemplateMessage[],
    tools: ToolDefinition[] | undefined,
    full: string,
  ): CharSpan[] {
    const marked = messages.map((m) => (m.role === 'assistant' ? { ...m, content: START_MARK + (m.content ?? '') + END_MARK } : m));
    const rendered = this.render(marked, tools, false);
    const spans: CharSpan[] = [];
    let plain = '';
    let assistantIndex = 0;
    const assistantMessages = original.filter((m) => m.role === 'assistant');
    let start = -1;
    for (const char of rendered) {
      if (char === START_MARK) start = plain.length;
      else if (char === END_MARK) spans.push({ start, end: plain.length, weight: assistantMessages[assistantIndex++]?.weight ?? 1 });
      else plain += char;
    }
    if (plain !== full || spans.length !== assistantMessages.length) {
      throw new Error('chat template: cannot locate assistant turns (the template rewrites message content)');
    }
    // The end-of-turn token that the template puts right after the content (<|eot_id|>, </s>,
    // <|im_end|>, <end_of_turn>): the model must learn to emit it, or it never stops.
    for (const span of spans) {
      const after = full.slice(span.end);
      const gap = after.length - after.trimStart().length;
      const endOfTurn = this.tokenizer.specialTokens.find((token) => after.startsWith(token, gap));
      if (endOfTurn) span.end += gap + endOfTurn.length;
    }
    return spans;
  }
}

function truncate(ids: number[], weights: Float32Array, maxLength: number): TokenizedExample {
  const fullLength = ids.length;
  const length = Math.min(fullLength, maxLength);
  return {
    ids: Int32Array.from(ids.slice(0, length)),
    weights: weights.slice(0, length),
    fullLength,
    truncated: fullLength > maxLength,
  };
}
