// Tool calls in a chat model's output: which syntax its chat template teaches
// (`<tool_call>{json}</tool_call>` for ChatML/Qwen/Hermes templates, `[TOOL_CALLS][…]` for
// Mistral's), the calls in a finished text, and streamed text held back once a call begins.
import { randomBytes } from 'node:crypto';

export type ToolSyntax = 'hermes' | 'mistral';

/** The text that opens a tool call in each syntax. */
const CALL_OPENER: Record<ToolSyntax, string> = { hermes: '<tool_call>', mistral: '[TOOL_CALLS]' };

/** Which tool-call syntax a chat template teaches its model (null: none we can parse). */
export function toolSyntaxOf(chatTemplate: string | null): ToolSyntax | null {
  if (!chatTemplate) return null;
  if (chatTemplate.includes(CALL_OPENER.hermes)) return 'hermes';
  if (chatTemplate.includes(CALL_OPENER.mistral)) return 'mistral';
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
    const at = text.indexOf(CALL_OPENER.mistral);
    if (at >= 0) {
      try {
        const parsed = JSON.parse(text.slice(at + CALL_OPENER.mistral.length).trim());
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

/**
 * Streamed content while tool calls may come: text is passed on until the call opener appears
 * (text that may be the start of the opener waits); from there on everything is kept for parsing
 * at the end.
 */
export class ToolCallFilter {
  private held = '';
  private calling = false;
  private readonly opener: string;

  constructor(syntax: ToolSyntax) {
    this.opener = CALL_OPENER[syntax];
  }

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

export const toolCallId = () => `call_${randomBytes(18).toString('base64url').replace(/[-_]/g, 'x')}`;
