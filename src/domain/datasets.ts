// Training and validation file rules (OpenAI's JSONL formats), checked while streaming the file so that
// memory stays bounded whatever its size: one line at a time, and no line longer than a cap (a line of
// L bytes briefly takes about 3.5 × L: its bytes, its text and the parsed object).
//
// Rules, by method:
// - supervised: every line in the chat format ({messages, tools?, parallel_tool_calls?, functions?}) or
//   every line in the legacy prompt/completion format ({prompt, completion}), not a mix.
//   Chat roles system | developer | user | assistant | tool | function, each with its own keys;
//   content a string or a non-empty list of text parts (image parts are refused until a vision model
//   can train on them);
//   assistant: weight 0 | 1, tool_calls [{id, type: "function", function: {name, arguments: JSON string}}],
//   function_call, content optional only beside a call; tool: tool_call_id; function: name.
//   At least one assistant message without weight 0 per example.
// - dpo: {input: {messages, tools?, parallel_tool_calls?}, preferred_output: [assistant message],
//   non_preferred_output: [assistant message]}.
// - reinforcement: {messages (the last from the user), tools?, …any other keys for graders}; at most
//   50,000 training / 1,000 validation examples.
// - Training files need at least 10 examples, validation files at least 1.
// Blank lines are skipped, a UTF-8 BOM at the start and CRLF line ends are accepted; bytes that are not
// UTF-8 are an error naming their line. Unknown top-level keys of chat/preference lines are ignored
// with a warning.
// The engine's JSONL reader (pure: it splits the bytes this function is given), the one training uses.
import { JsonlLineTooLongError, JsonlSyntaxError, jsonlLineBatches, jsonlText, parseJsonl } from '../engine/index.ts';

export type DatasetMethod = 'supervised' | 'dpo' | 'reinforcement';
export type DatasetRole = 'training' | 'validation';
export type DatasetFormat = 'chat' | 'prompt_completion' | 'preference' | 'reinforcement';

export interface DatasetValidationOptions {
  method: DatasetMethod;
  role: DatasetRole;
  /** Longest accepted line in bytes; a longer line is rejected with its line number. */
  maxLineBytes?: number;
  /** The training file's format, when checking its validation file: every example must use it too. */
  trainingFormat?: DatasetFormat;
}

export interface DatasetValidationError {
  code: 'invalid_training_file' | 'invalid_validation_file' | 'invalid_n_examples';
  param: 'training_file' | 'validation_file';
  message: string;
  /** 1-based line of the first bad example; null for file-wide problems (too few examples). */
  line: number | null;
}

export type DatasetValidationResult =
  | { ok: true; format: DatasetFormat; nExamples: number; nTokensEstimate: number; warnings: string[] }
  | { ok: false; error: DatasetValidationError };

export const DEFAULT_MAX_LINE_BYTES = 64 * 1024 * 1024;
export const MIN_TRAINING_EXAMPLES = 10;
export const MIN_VALIDATION_EXAMPLES = 1;
export const MAX_REINFORCEMENT_EXAMPLES: Record<DatasetRole, number> = { training: 50_000, validation: 1_000 };

/**
 * Checks a JSONL training or validation file, given as its bytes (`chunks`: the caller opens the file,
 * this module does no I/O), against OpenAI's rules for `method`. Lines are cut by the engine's JSONL
 * reader, the one training uses too, so whatever passes here trains. Examples are numbered by their
 * line in the file (blank lines are skipped but still counted), so "Example 7" is line 7 in an editor.
 * Stops at the first bad example. Rejects (throws) only when `chunks` does (the file cannot be read).
 */
export async function validateDataset(chunks: AsyncIterable<Buffer>, options: DatasetValidationOptions): Promise<DatasetValidationResult> {
  const { method, role } = options;
  const maxLineBytes = options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES;
  const param = role === 'training' ? 'training_file' : 'validation_file';
  const formatError = (message: string, line: number | null): DatasetValidationResult => ({
    ok: false,
    error: { code: role === 'training' ? 'invalid_training_file' : 'invalid_validation_file', param, message, line },
  });
  const countError = (message: string): DatasetValidationResult => ({ ok: false, error: { code: 'invalid_n_examples', param, message, line: null } });
  const roleName = role === 'training' ? 'Training' : 'Validation';
  const maxExamples = method === 'reinforcement' ? MAX_REINFORCEMENT_EXAMPLES[role] : Infinity;

  const state = new FileState(method, options.trainingFormat ?? null);
  let lineNumber = 0;
  try {
    for await (const lines of jsonlLineBatches(chunks, maxLineBytes)) {
      for (const line of lines) {
        lineNumber = line.line;
        const text = jsonlText(line);
        state.addExample(parseJsonl(line.line, text), line.line, text.length);
        if (state.nExamples > maxExamples) return countError(tooManyExamples(roleName, maxExamples));
      }
    }
  } catch (err) {
    if (err instanceof JsonlLineTooLongError) {
      return formatError(`Invalid file format. Example ${err.line} is longer than the limit of ${maxLineBytes} bytes per line`, err.line);
    }
    if (err instanceof JsonlSyntaxError) {
      const what = err.problem === 'utf8' ? 'is not valid UTF-8' : `is not valid JSON (${truncate(err.detail, 160)})`;
      return formatError(`Invalid file format. Example ${err.line} ${what}`, err.line);
    }
    if (err instanceof ExampleProblem) return formatError(`Invalid file format. ${err.message}`, lineNumber);
    throw err;
  }

  const minExamples = role === 'training' ? MIN_TRAINING_EXAMPLES : MIN_VALIDATION_EXAMPLES;
  if (state.nExamples < minExamples) {
    return countError(
      `${roleName} file has ${state.nExamples} example(s), but must have at least ${minExamples} example${minExamples === 1 ? '' : 's'}`,
    );
  }
  return { ok: true, format: state.format!, nExamples: state.nExamples, nTokensEstimate: state.nTokensEstimate, warnings: state.warnings() };
}

const tooManyExamples = (roleName: string, max: number) =>
  `${roleName} file has more than ${max} examples, but reinforcement fine-tuning allows at most ${max} examples`;

const truncate = (s: string, max: number) => (s.length > max ? `${s.slice(0, max)}…` : s);

// ---------------------------------------------------------------------------------------------
// Per-file state: which format the file uses, counts, and warnings aggregated over examples.
// The per-example code below avoids creating closures (loops, not callbacks): it runs for every
// line of files of millions of lines, and each closure costs an allocation (and, under tsx, a
// defineProperty for its name).

const FORMAT_NAMES: Record<DatasetFormat, string> = {
  chat: 'the chat format',
  prompt_completion: 'the prompt/completion format',
  preference: 'the preference format',
  reinforcement: 'the reinforcement format',
};

/** Thrown by the example checks; the message starts with where the problem is ("Example 3, message 2 …"). */
class ExampleProblem extends Error {}

/** Where a problem is ("Example 3, message 2"), spelled out only when there is one. */
class Where {
  constructor(
    private readonly parent: Where | null,
    private readonly label: string,
    private readonly n: number,
  ) {}
  child(label: string, n: number): Where {
    return new Where(this, label, n);
  }
  toString(): string {
    return this.parent === null ? `${this.label} ${this.n}` : `${this.parent}, ${this.label} ${this.n}`;
  }
}

function fail(where: Where, what: string): never {
  throw new ExampleProblem(`${where} ${what}`);
}

class FileState {
  format: DatasetFormat | null = null;
  nExamples = 0;
  nTokensEstimate = 0;
  private line = 0;
  /** Warning text → [count, first example]; a handful of kinds, so bounded. */
  private warningCounts = new Map<string, [number, number]>();

  constructor(
    private readonly method: DatasetMethod,
    private readonly trainingFormat: DatasetFormat | null,
  ) {}

  addExample(example: unknown, line: number, chars: number): void {
    this.line = line;
    const where = new Where(null, 'Example', line);
    if (!isObject(example)) fail(where, `is not a JSON object (got ${jsonType(example)})`);
    const format = detectFormat(example, this.method, where);
    if (this.trainingFormat !== null && format !== this.trainingFormat) {
      fail(where, `uses ${FORMAT_NAMES[format]}, but the training file uses ${FORMAT_NAMES[this.trainingFormat]}`);
    }
    if (this.format === null) this.format = format;
    else if (format !== this.format) {
      fail(where, `uses ${FORMAT_NAMES[format]}, but earlier examples use ${FORMAT_NAMES[this.format]}; all examples of a file must use one format`);
    }
    switch (format) {
      case 'chat':
        checkChatExample(example, where, this);
        break;
      case 'prompt_completion':
        checkPromptCompletionExample(example, where);
        break;
      case 'preference':
        checkPreferenceExample(example, where, this);
        break;
      case 'reinforcement':
        checkReinforcementExample(example, where);
        break;
    }
    this.nExamples++;
    // A cheap estimate (about 4 characters per token); the engine tokenises for real.
    this.nTokensEstimate += Math.ceil(chars / 4);
  }

  /** Counts a warning about the current example. */
  warn(text: string): void {
    const seen = this.warningCounts.get(text);
    if (seen) seen[0]++;
    else this.warningCounts.set(text, [1, this.line]);
  }

  warnings(): string[] {
    const out: string[] = [];
    for (const [text, [count, first]] of this.warningCounts) out.push(`${count} example(s) ${text} (first: example ${first})`);
    return out;
  }
}

function detectFormat(example: Json, method: DatasetMethod, where: Where): DatasetFormat {
  const looksPreference = 'input' in example || 'preferred_output' in example || 'non_preferred_output' in example;
  switch (method) {
    case 'supervised':
      if ('messages' in example) return 'chat';
      if ('prompt' in example || 'completion' in example) return 'prompt_completion';
      if (looksPreference) return fail(where, "uses the preference format, which is for DPO jobs (method type 'dpo'); supervised jobs need 'messages'");
      return fail(where, "is missing 'messages' (chat format) or 'prompt' and 'completion' (prompt/completion format)");
    case 'dpo':
      if (looksPreference) return 'preference';
      return fail(where, "is missing 'input', 'preferred_output' and 'non_preferred_output' (preference format, needed by DPO jobs)");
    case 'reinforcement':
      if ('messages' in example) return 'reinforcement';
      return fail(where, "is missing 'messages' (reinforcement format)");
  }
}

// ---------------------------------------------------------------------------------------------
// Format checks. Each throws an ExampleProblem naming the example, the message and what is wrong.

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A value quoted for an error message, cut short: a bad line may hold megabytes. */
function show(v: unknown, quote = ''): string {
  const text = quote ? `${quote}${v}${quote}` : JSON.stringify(v) ?? String(v);
  return truncate(text, 80);
}

function jsonType(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  return typeof v === 'object' ? 'an object' : `a ${typeof v}`;
}

const CHAT_KEYS = ['messages', 'tools', 'parallel_tool_calls', 'functions'];
const PREFERENCE_KEYS = ['input', 'preferred_output', 'non_preferred_output'];

function hasOtherKeys(example: Json, known: readonly string[]): boolean {
  for (const key in example) if (!known.includes(key)) return true;
  return false;
}

function checkChatExample(example: Json, where: Where, state: FileState): void {
  const messages = checkMessages(example.messages, where, 'messages', 'message');
  checkToolDefinitions(example, where);
  if (hasOtherKeys(example, CHAT_KEYS)) state.warn(`have keys other than ${CHAT_KEYS.join(', ')}, which are ignored`);
  let learnable = false;
  let hasUser = false;
  let hasSystem = false;
  for (const { role, weight } of messages) {
    if (role === 'assistant' && weight !== 0) learnable = true;
    else if (role === 'user') hasUser = true;
    else if (role === 'system' || role === 'developer') hasSystem = true;
  }
  if (!learnable) fail(where, 'has no assistant message to learn from (at least one assistant message without weight 0 is needed)');
  if (!hasUser) state.warn('have no user message');
  if (!hasSystem) state.warn('have no system message');
}

function checkReinforcementExample(example: Json, where: Where): void {
  // `messages` and `tools` are reserved; every other key is free for graders ({{item.KEY}}).
  const messages = checkMessages(example.messages, where, 'messages', 'message');
  const last = messages[messages.length - 1];
  if (last.role !== 'user') {
    fail(
      where.child('message', messages.length),
      `must be from the user: the last message of a reinforcement example is the prompt to answer (got role '${last.role}')`,
    );
  }
  if ('tools' in example) checkTools(example.tools, where);
}

function checkPreferenceExample(example: Json, where: Where, state: FileState): void {
  const input = example.input;
  if (input === undefined) fail(where, "is missing 'input'");
  if (!isObject(input)) fail(where, `has invalid 'input': expected an object with 'messages', but got ${jsonType(input)}`);
  checkMessages(input.messages, where, 'input.messages', 'input message');
  checkToolDefinitions(input, where);
  for (const key of ['preferred_output', 'non_preferred_output']) {
    const output = example[key];
    if (output === undefined) fail(where, `is missing '${key}'`);
    if (!Array.isArray(output) || output.length !== 1) fail(where, `has invalid '${key}': expected a list with exactly one assistant message`);
    const [{ role }] = checkMessages(output, where, key, `${key} message`);
    if (role !== 'assistant') fail(where.child(`${key} message`, 1), `must be from the assistant (got role '${role}')`);
  }
  if (hasOtherKeys(example, PREFERENCE_KEYS)) state.warn(`have keys other than ${PREFERENCE_KEYS.join(', ')}, which are ignored`);
}

function checkPromptCompletionExample(example: Json, where: Where): void {
  for (const key of ['prompt', 'completion']) {
    if (!(key in example)) fail(where, `is missing '${key}'`);
    if (typeof example[key] !== 'string') fail(where, `has invalid '${key}': expected a string, but got ${jsonType(example[key])}`);
  }
}

// Messages -------------------------------------------------------------------------------------

type ChatRole = 'system' | 'developer' | 'user' | 'assistant' | 'tool' | 'function';
const ROLE_KEYS: Record<ChatRole, readonly string[]> = {
  system: ['role', 'content', 'name'],
  developer: ['role', 'content', 'name'],
  user: ['role', 'content', 'name'],
  assistant: ['role', 'content', 'name', 'weight', 'tool_calls', 'function_call'],
  tool: ['role', 'content', 'tool_call_id'],
  function: ['role', 'content', 'name'],
};
const ROLES = Object.keys(ROLE_KEYS) as ChatRole[];

interface CheckedMessage {
  role: ChatRole;
  /** 0 or 1 on assistant messages that set it; null otherwise (absent means "train on it"). */
  weight: number | null;
}

/** Checks a non-empty list of messages; `label` names one message in errors ("message", "input message"). */
function checkMessages(messages: unknown, where: Where, key: string, label: string): CheckedMessage[] {
  if (messages === undefined) fail(where, `is missing '${key}'`);
  if (!Array.isArray(messages) || messages.length === 0) {
    fail(where, `has invalid '${key}': expected a non-empty list of messages, but got ${Array.isArray(messages) ? 'an empty list' : jsonType(messages)}`);
  }
  const checked: CheckedMessage[] = [];
  for (let i = 0; i < messages.length; i++) checked.push(checkMessage(messages[i], where.child(label, i + 1)));
  return checked;
}

function checkMessage(message: unknown, where: Where): CheckedMessage {
  if (!isObject(message)) fail(where, `is not an object (got ${jsonType(message)})`);
  const role = message.role;
  if (role === undefined) fail(where, "Discriminator 'role' is missing in value");
  if (!ROLES.includes(role as ChatRole)) {
    fail(where, `Discriminator 'role' has invalid value ${show(role)} (expected one of ${ROLES.join(', ')})`);
  }
  const chatRole = role as ChatRole;
  const allowedKeys = ROLE_KEYS[chatRole];
  for (const key in message) {
    if (allowedKeys.includes(key)) continue;
    if (key === 'weight') fail(where, `has 'weight', which only assistant messages may carry (role is '${chatRole}')`);
    fail(where, `has unrecognized key ${show(key, "'")} (a ${chatRole} message may have: ${allowedKeys.join(', ')})`);
  }
  if ('name' in message && typeof message.name !== 'string') fail(where, `has invalid 'name': expected a string, but got ${jsonType(message.name)}`);

  switch (chatRole) {
    case 'system':
    case 'developer':
    case 'user':
      checkContent(message.content, where, false);
      break;
    case 'tool':
      checkContent(message.content, where, false);
      if (typeof message.tool_call_id !== 'string') {
        fail(where, message.tool_call_id === undefined ? "is missing 'tool_call_id'" : "has invalid 'tool_call_id': expected a string");
      }
      break;
    case 'function':
      if (typeof message.name !== 'string') fail(where, "is missing 'name' (a function message names the function it answers)");
      checkContent(message.content, where, true);
      break;
    case 'assistant':
      return { role: chatRole, weight: checkAssistantMessage(message, where) };
  }
  return { role: chatRole, weight: null };
}

/** Checks an assistant message; returns its weight (null when absent). */
function checkAssistantMessage(message: Json, where: Where): number | null {
  const weight = message.weight;
  if (weight !== undefined && weight !== 0 && weight !== 1) {
    fail(where, `has invalid 'weight': expected 0 or 1, but got ${show(weight)}`);
  }
  const calls = message.tool_calls;
  const hasToolCalls = calls !== undefined && calls !== null;
  const hasFunctionCall = message.function_call !== undefined && message.function_call !== null;
  if (hasToolCalls) {
    if (!Array.isArray(calls) || calls.length === 0) fail(where, "has invalid 'tool_calls': expected a non-empty list of tool calls");
    for (let i = 0; i < calls.length; i++) {
      const call: unknown = calls[i];
      const at = `tool_calls[${i}]`;
      if (!isObject(call)) fail(where, `has invalid '${at}': expected an object, but got ${jsonType(call)}`);
      if (typeof call.id !== 'string') fail(where, `has invalid '${at}.id': expected a string`);
      if (call.type !== 'function') fail(where, `has invalid '${at}.type': expected 'function', but got ${show(call.type)}`);
      checkFunctionCall(call.function, where, `${at}.function`);
    }
  }
  if (hasFunctionCall) checkFunctionCall(message.function_call, where, 'function_call');
  if (message.content === undefined || message.content === null) {
    if (!hasToolCalls && !hasFunctionCall) fail(where, "is missing 'content' (an assistant message needs content, tool_calls or function_call)");
  } else {
    checkContent(message.content, where, false);
  }
  return weight === undefined ? null : (weight as number);
}

/** `{name, arguments}` where arguments is a string holding JSON (as the model would emit it). */
function checkFunctionCall(value: unknown, where: Where, at: string): void {
  if (!isObject(value)) fail(where, `has invalid '${at}': expected an object with 'name' and 'arguments', but got ${jsonType(value)}`);
  if (typeof value.name !== 'string' || value.name === '') fail(where, `has invalid '${at}.name': expected a non-empty string`);
  if (typeof value.arguments !== 'string') {
    fail(where, `has invalid '${at}.arguments': expected a string of JSON, but got ${jsonType(value.arguments)}`);
  }
  try {
    JSON.parse(value.arguments);
  } catch {
    fail(where, `has invalid '${at}.arguments': the string is not valid JSON`);
  }
}

/** A string, or a non-empty list of text parts; null where `nullable`. */
function checkContent(content: unknown, where: Where, nullable: boolean): void {
  if (content === undefined) fail(where, "is missing 'content'");
  if (typeof content === 'string' || (content === null && nullable)) return;
  if (!Array.isArray(content) || content.length === 0) {
    fail(where, `has invalid 'content': expected a string or a non-empty list of content parts, but got ${Array.isArray(content) ? 'an empty list' : jsonType(content)}`);
  }
  for (let i = 0; i < content.length; i++) {
    const part: unknown = content[i];
    const at = `content[${i}]`;
    if (!isObject(part) || typeof part.type !== 'string') fail(where, `has invalid '${at}': expected a content part object with a 'type'`);
    if (part.type === 'text') {
      if (typeof part.text !== 'string') fail(where, `has invalid '${at}.text': expected a string`);
    } else if (part.type === 'image_url') {
      // OpenAI trains vision models on these; no model tuneforge trains reads images yet.
      fail(where, `has an image in '${at}': tuneforge's models cannot train on images yet (no vision models), so content parts must be text`);
    } else {
      fail(where, `has a content part of type ${show(part.type)} in '${at}', which fine-tuning does not support ('text' only)`);
    }
  }
}

// Tool and function definitions -----------------------------------------------------------------

/** `tools`, `parallel_tool_calls` and the deprecated `functions` of a chat example (or preference input). */
function checkToolDefinitions(container: Json, where: Where): void {
  if ('tools' in container) checkTools(container.tools, where);
  if ('parallel_tool_calls' in container && typeof container.parallel_tool_calls !== 'boolean') {
    fail(where, `has invalid 'parallel_tool_calls': expected true or false, but got ${jsonType(container.parallel_tool_calls)}`);
  }
  if ('functions' in container) {
    const functions = container.functions;
    if (!Array.isArray(functions)) fail(where, `has invalid 'functions': expected a list of function definitions, but got ${jsonType(functions)}`);
    for (let i = 0; i < functions.length; i++) checkFunctionDefinition(functions[i], where.child('function', i + 1), 'the function definition');
  }
}

function checkTools(tools: unknown, where: Where): void {
  if (!Array.isArray(tools)) fail(where, `has invalid 'tools': expected a list of tools, but got ${jsonType(tools)}`);
  for (let i = 0; i < tools.length; i++) {
    const tool: unknown = tools[i];
    const at = where.child('tool', i + 1);
    if (!isObject(tool)) fail(at, `is not an object (got ${jsonType(tool)})`);
    if (tool.type !== 'function') fail(at, `has invalid 'type': expected 'function', but got ${show(tool.type)}`);
    checkFunctionDefinition(tool.function, at, "'function'");
  }
}

function checkFunctionDefinition(fn: unknown, where: Where, what: string): void {
  if (!isObject(fn)) fail(where, `has invalid ${what}: expected an object with a 'name', but got ${jsonType(fn)}`);
  if (typeof fn.name !== 'string' || fn.name === '') fail(where, "has a function definition without a 'name'");
  if ('description' in fn && typeof fn.description !== 'string') fail(where, "has invalid 'description': expected a string");
  if ('parameters' in fn && !isObject(fn.parameters)) fail(where, "has invalid 'parameters': expected a JSON Schema object");
}
