import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream, createWriteStream, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { validateDataset, type DatasetValidationOptions, type DatasetValidationResult } from '../../src/domain/datasets.ts';
import { chatExample, generateChatJsonl } from '../support/datasets.ts';

const dir = mkdtempSync(join(tmpdir(), 'tuneforge-datasets-'));
after(() => rmSync(dir, { recursive: true, force: true }));

let fileCount = 0;
/** Writes `content` (lines joined with '\n' plus a final newline, or raw bytes) to a fresh temp file. */
function writeFile(content: string[] | string | Buffer): string {
  const path = join(dir, `f${fileCount++}.jsonl`);
  writeFileSync(path, Array.isArray(content) ? content.join('\n') + '\n' : content);
  return path;
}

const TRAIN_SFT: DatasetValidationOptions = { method: 'supervised', role: 'training' };
const VALID_SFT: DatasetValidationOptions = { method: 'supervised', role: 'validation' };
const TRAIN_DPO: DatasetValidationOptions = { method: 'dpo', role: 'training' };
const TRAIN_RFT: DatasetValidationOptions = { method: 'reinforcement', role: 'training' };

const json = (v: unknown) => JSON.stringify(v);
const chatLines = (n: number, from = 0) => Array.from({ length: n }, (_, i) => json(chatExample(from + i)));
const user = (content: unknown = 'Hi') => ({ role: 'user', content });
const assistant = (content: unknown = 'Hello') => ({ role: 'assistant', content });

/** A training file: nine good chat lines, then `bad` as line 10 (so errors name line 10). */
const withBadLine = (bad: unknown) => writeFile([...chatLines(9), typeof bad === 'string' ? bad : json(bad)]);

async function expectOk(path: string, options = TRAIN_SFT) {
  const result = await validateDataset(createReadStream(path), options);
  assert.ok(result.ok, JSON.stringify(result));
  return result as Extract<DatasetValidationResult, { ok: true }>;
}

async function expectError(
  path: string,
  expected: { code?: string; param?: string; line: number | null; message: RegExp | string },
  options = TRAIN_SFT,
) {
  const result = await validateDataset(createReadStream(path), options);
  assert.equal(result.ok, false, `expected an error, got ${JSON.stringify(result)}`);
  const { error } = result as Extract<DatasetValidationResult, { ok: false }>;
  assert.equal(error.code, expected.code ?? (options.role === 'training' ? 'invalid_training_file' : 'invalid_validation_file'));
  assert.equal(error.param, expected.param ?? (options.role === 'training' ? 'training_file' : 'validation_file'));
  assert.equal(error.line, expected.line);
  if (typeof expected.message === 'string') assert.equal(error.message, expected.message);
  else assert.match(error.message, expected.message);
  return error;
}

/** The bad line is line 10; the error message names example 10 and `message` (regexp source). */
const rejectsLine10 = (bad: unknown, message: RegExp | string, options = TRAIN_SFT) =>
  expectError(
    options.method === 'supervised' ? withBadLine(bad) : writeFile([...goodLines(options.method, 9), json(bad)]),
    { line: 10, message },
    options,
  );

function goodLines(method: DatasetOptionsMethod, n: number): string[] {
  if (method === 'supervised') return chatLines(n);
  if (method === 'dpo') return Array.from({ length: n }, (_, i) => json(preferenceExample(i)));
  return Array.from({ length: n }, (_, i) => json(reinforcementExample(i)));
}
type DatasetOptionsMethod = DatasetValidationOptions['method'];

const preferenceExample = (i: number) => ({
  input: { messages: [{ role: 'user', content: `Say hi ${i}` }], tools: [], parallel_tool_calls: true },
  preferred_output: [{ role: 'assistant', content: 'Hi!' }],
  non_preferred_output: [{ role: 'assistant', content: 'No.' }],
});
const reinforcementExample = (i: number) => ({
  messages: [{ role: 'developer', content: 'Answer with a number.' }, { role: 'user', content: `${i} + 1 = ?` }],
  answer: String(i + 1),
  nested: { anything: [1, 2] },
});

// ---------------------------------------------------------------------------------------------
// Well-formed files

test('chat: 10 good examples → ok, counts and a chars/4 token estimate', async () => {
  const lines = chatLines(10);
  const result = await expectOk(writeFile(lines));
  assert.equal(result.format, 'chat');
  assert.equal(result.nExamples, 10);
  assert.equal(result.nTokensEstimate, lines.reduce((sum, l) => sum + Math.ceil(l.length / 4), 0));
  assert.deepEqual(result.warnings, []);
});

test('chat: warnings for examples without a system or user message, aggregated', async () => {
  const noSystem = json({ messages: [user(), assistant()] });
  const onlyAssistant = json({ messages: [assistant()] });
  const result = await expectOk(writeFile([...chatLines(8), noSystem, onlyAssistant]));
  assert.deepEqual(result.warnings, ['2 example(s) have no system message (first: example 9)', '1 example(s) have no user message (first: example 10)']);
});

test('chat: unknown top-level keys are ignored with a warning', async () => {
  const result = await expectOk(writeFile([...chatLines(9), json({ ...chatExample(1), id: 'x' })]));
  assert.equal(result.warnings.length, 1);
  assert.match(result.warnings[0], /have keys other than messages, tools, parallel_tool_calls, functions, which are ignored \(first: example 10\)/);
});

test('chat: every role, content parts, weights, tools, tool calls, functions', async () => {
  const full = {
    messages: [
      { role: 'system', content: [{ type: 'text', text: 'sys' }], name: 'sys' },
      { role: 'developer', content: 'dev' },
      { role: 'user', content: [{ type: 'text', text: 'look' }, { type: 'text', text: 'here' }] },
      { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'f', arguments: '{"a":1}' } }], weight: 0 },
      { role: 'tool', tool_call_id: 'call_1', content: [{ type: 'text', text: '42' }] },
      { role: 'assistant', content: [{ type: 'text', text: 'It is 42.' }], weight: 1 },
    ],
    tools: [{ type: 'function', function: { name: 'f', description: 'd', parameters: { type: 'object', properties: {} } } }],
    parallel_tool_calls: false,
  };
  const legacyFunctions = {
    messages: [
      user(),
      { role: 'assistant', function_call: { name: 'g', arguments: '{}' } },
      { role: 'function', name: 'g', content: 'done' },
      { role: 'function', name: 'g', content: null },
      assistant('ok'),
    ],
    functions: [{ name: 'g', parameters: { type: 'object' } }],
  };
  const result = await expectOk(writeFile([...chatLines(8), json(full), json(legacyFunctions)]));
  assert.equal(result.nExamples, 10);
});

test('prompt/completion: ok for supervised', async () => {
  const lines = Array.from({ length: 10 }, (_, i) => json({ prompt: `p${i}`, completion: ` c${i}` }));
  const result = await expectOk(writeFile(lines));
  assert.equal(result.format, 'prompt_completion');
});

test('preference: ok for dpo', async () => {
  const result = await expectOk(writeFile(goodLines('dpo', 10)), TRAIN_DPO);
  assert.equal(result.format, 'preference');
  assert.equal(result.nExamples, 10);
});

test('reinforcement: ok, other keys free for graders', async () => {
  const result = await expectOk(writeFile(goodLines('reinforcement', 10)), TRAIN_RFT);
  assert.equal(result.format, 'reinforcement');
  assert.deepEqual(result.warnings, []);
});

test('validation file: one example is enough', async () => {
  const result = await expectOk(writeFile(chatLines(1)), VALID_SFT);
  assert.equal(result.nExamples, 1);
});

// ---------------------------------------------------------------------------------------------
// Bytes and lines

test('blank lines are skipped but keep line numbers', async () => {
  const ok = await expectOk(writeFile(['', ...chatLines(5), '   ', '\t', ...chatLines(5), '', '']));
  assert.equal(ok.nExamples, 10);
  await expectError(writeFile([...chatLines(10), '', '', '{"messages": 5}']), {
    line: 13,
    message: "Invalid file format. Example 13 has invalid 'messages': expected a non-empty list of messages, but got a number",
  });
});

test('a UTF-8 BOM at the start is accepted', async () => {
  const ok = await expectOk(writeFile(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(chatLines(10).join('\n'))])));
  assert.equal(ok.nExamples, 10);
});

test('a BOM anywhere else is a JSON error on its line', async () => {
  const lines = chatLines(10);
  lines[3] = '\uFEFF' + lines[3];
  await expectError(writeFile(lines), { line: 4, message: /^Invalid file format\. Example 4 is not valid JSON \(/ });
});

test('CRLF line endings (and a BOM) are accepted', async () => {
  const ok = await expectOk(writeFile('\uFEFF' + chatLines(10).join('\r\n') + '\r\n'));
  assert.equal(ok.nExamples, 10);
  await expectError(writeFile([...chatLines(10), '{"messages":[]}'].join('\r\n')), { line: 11, message: /Example 11 has invalid 'messages'/ });
});

test('a last line without a newline counts', async () => {
  const ok = await expectOk(writeFile(chatLines(10).join('\n')));
  assert.equal(ok.nExamples, 10);
  await expectError(writeFile(chatLines(9).join('\n')), { code: 'invalid_n_examples', line: null, message: 'Training file has 9 example(s), but must have at least 10 examples' });
});

test('invalid UTF-8 bytes name their line', async () => {
  const lines = chatLines(10).map((l) => Buffer.from(l + '\n'));
  lines[6] = Buffer.concat([Buffer.from('{"messages":[{"role":"user","content":"'), Buffer.from([0xc3, 0x28, 0xff]), Buffer.from('"}]}\n')]);
  await expectError(writeFile(Buffer.concat(lines)), { line: 7, message: 'Invalid file format. Example 7 is not valid UTF-8' });
});

test('multi-byte UTF-8 split across read chunks is fine', async () => {
  // 1 MiB chunks: put 4-byte characters across the first chunk boundary
  const long = json({ messages: [user('😀'.repeat(300_000)), assistant('ok')] });
  const ok = await expectOk(writeFile([long, ...chatLines(9)]));
  assert.equal(ok.nExamples, 10);
});

test('invalid JSON names its line', async () => {
  await rejectsLine10('{"messages": [', /^Invalid file format\. Example 10 is not valid JSON \(.+\)$/);
});

test('a line that is not a JSON object', async () => {
  await rejectsLine10('[1,2]', 'Invalid file format. Example 10 is not a JSON object (got a list)');
  await rejectsLine10('"text"', 'Invalid file format. Example 10 is not a JSON object (got a string)');
  await rejectsLine10('null', 'Invalid file format. Example 10 is not a JSON object (got null)');
});

test('a line over the cap is rejected with its number (small cap)', async () => {
  const path = writeFile([...chatLines(3), json({ messages: [user('x'.repeat(5000)), assistant()] }), ...chatLines(6)]);
  await expectError(path, { line: 4, message: 'Invalid file format. Example 4 is longer than the limit of 1000 bytes per line' }, { ...TRAIN_SFT, maxLineBytes: 1000 });
  // the same file passes under the default cap
  await expectOk(path);
});

test('a 3 MB line spanning several read chunks is accepted', async () => {
  const big = json({ messages: [user('y'.repeat(3_000_000)), assistant()] });
  const ok = await expectOk(writeFile([...chatLines(5), big, ...chatLines(5)]));
  assert.equal(ok.nExamples, 11);
});

test('a 100 MB line is rejected with its line number, without reading it whole', async () => {
  const path = join(dir, 'hundred-mb-line.jsonl');
  const out = createWriteStream(path);
  out.write(chatLines(2).join('\n') + '\n' + '{"messages":[{"role":"user","content":"');
  const block = 'z'.repeat(1 << 20);
  for (let i = 0; i < 100; i++) if (!out.write(block)) await once(out, 'drain');
  out.end('"},{"role":"assistant","content":"ok"}]}\n' + chatLines(10).join('\n') + '\n');
  await once(out, 'finish');
  try {
    await expectError(path, { line: 3, message: `Invalid file format. Example 3 is longer than the limit of ${64 * 1024 * 1024} bytes per line` });
  } finally {
    rmSync(path);
  }
});

test('a missing file rejects (it is not a format error)', async () => {
  await assert.rejects(validateDataset(createReadStream(join(dir, 'nope.jsonl')), TRAIN_SFT), /ENOENT/);
});

// ---------------------------------------------------------------------------------------------
// Example counts

test('training file needs at least 10 examples', async () => {
  await expectError(writeFile(chatLines(3)), {
    code: 'invalid_n_examples',
    line: null,
    message: 'Training file has 3 example(s), but must have at least 10 examples',
  });
  await expectError(writeFile(''), { code: 'invalid_n_examples', line: null, message: 'Training file has 0 example(s), but must have at least 10 examples' });
  await expectError(writeFile('\n\n  \n'), { code: 'invalid_n_examples', line: null, message: /has 0 example/ });
  await expectError(writeFile(goodLines('dpo', 9)), { code: 'invalid_n_examples', line: null, message: /has 9 example/ }, TRAIN_DPO);
});

test('validation file needs at least 1 example', async () => {
  await expectError(writeFile(''), {
    code: 'invalid_n_examples',
    param: 'validation_file',
    line: null,
    message: 'Validation file has 0 example(s), but must have at least 1 example',
  }, VALID_SFT);
});

test('reinforcement: at most 50,000 training and 1,000 validation examples', async () => {
  const line = json({ messages: [user('q')] });
  const lines = (n: number) => (line + '\n').repeat(n);
  await expectOk(writeFile(lines(1000)), { method: 'reinforcement', role: 'validation' });
  await expectError(writeFile(lines(1001)), {
    code: 'invalid_n_examples',
    param: 'validation_file',
    line: null,
    message: 'Validation file has more than 1000 examples, but reinforcement fine-tuning allows at most 1000 examples',
  }, { method: 'reinforcement', role: 'validation' });
  await expectOk(writeFile(lines(50_000)), TRAIN_RFT);
  await expectError(writeFile(lines(50_001)), { code: 'invalid_n_examples', line: null, message: /more than 50000 examples/ }, TRAIN_RFT);
});

// ---------------------------------------------------------------------------------------------
// Chat rules

test('chat: messages missing, not a list, empty', async () => {
  await rejectsLine10({ msgs: [] }, "Invalid file format. Example 10 is missing 'messages' (chat format) or 'prompt' and 'completion' (prompt/completion format)");
  await rejectsLine10({ messages: 'hi' }, "Invalid file format. Example 10 has invalid 'messages': expected a non-empty list of messages, but got a string");
  await rejectsLine10({ messages: [] }, "Invalid file format. Example 10 has invalid 'messages': expected a non-empty list of messages, but got an empty list");
});

test("chat: a message without a role (OpenAI's wording)", async () => {
  await rejectsLine10({ messages: [user(), { content: 'x' }] }, "Invalid file format. Example 10, message 2 Discriminator 'role' is missing in value");
});

test('chat: unrecognized role', async () => {
  await rejectsLine10(
    { messages: [user(), { role: 'bot', content: 'x' }] },
    `Invalid file format. Example 10, message 2 Discriminator 'role' has invalid value "bot" (expected one of system, developer, user, assistant, tool, function)`,
  );
});

test('chat: a message that is not an object', async () => {
  await rejectsLine10({ messages: [user(), 'hello'] }, 'Invalid file format. Example 10, message 2 is not an object (got a string)');
});

test('chat: unrecognized keys per role', async () => {
  await rejectsLine10({ messages: [{ ...user(), tool_calls: [] }, assistant()] }, "Invalid file format. Example 10, message 1 has unrecognized key 'tool_calls' (a user message may have: role, content, name)");
  await rejectsLine10({ messages: [user(), { ...assistant(), refusal: 'no' }] }, /message 2 has unrecognized key 'refusal'/);
  await rejectsLine10({ messages: [user(), { ...assistant(), audio: { id: 'a' } }] }, /message 2 has unrecognized key 'audio'/);
  await rejectsLine10({ messages: [{ role: 'system', content: 's', tool_call_id: 'x' }, user(), assistant()] }, /message 1 has unrecognized key 'tool_call_id'/);
  await rejectsLine10({ messages: [user(), { role: 'tool', tool_call_id: 'c', content: 'x', name: 'f' }, assistant()] }, /message 2 has unrecognized key 'name'/);
});

test('chat: weight only on assistant messages, and only 0 or 1', async () => {
  await rejectsLine10({ messages: [{ ...user(), weight: 1 }, assistant()] }, "Invalid file format. Example 10, message 1 has 'weight', which only assistant messages may carry (role is 'user')");
  await rejectsLine10({ messages: [user(), { ...assistant(), weight: 2 }] }, "Invalid file format. Example 10, message 2 has invalid 'weight': expected 0 or 1, but got 2");
  await rejectsLine10({ messages: [user(), { ...assistant(), weight: 0.5 }] }, /has invalid 'weight'/);
  await rejectsLine10({ messages: [user(), { ...assistant(), weight: '1' }] }, /has invalid 'weight': expected 0 or 1, but got "1"/);
});

test('chat: at least one assistant message to learn from', async () => {
  const noLearning = "Invalid file format. Example 10 has no assistant message to learn from (at least one assistant message without weight 0 is needed)";
  await rejectsLine10({ messages: [user()] }, noLearning);
  await rejectsLine10({ messages: [user(), { ...assistant(), weight: 0 }] }, noLearning);
  await expectOk(withBadLine({ messages: [user(), { ...assistant(), weight: 0 }, user(), { ...assistant(), weight: 1 }] }));
});

test('chat: content required and well-formed', async () => {
  await rejectsLine10({ messages: [{ role: 'user' }, assistant()] }, "Invalid file format. Example 10, message 1 is missing 'content'");
  await rejectsLine10({ messages: [{ role: 'system', content: null }, user(), assistant()] }, /message 1 has invalid 'content': expected a string or a non-empty list of content parts, but got null/);
  await rejectsLine10({ messages: [user([]), assistant()] }, /message 1 has invalid 'content': .* but got an empty list/);
  await rejectsLine10({ messages: [user(5), assistant()] }, /message 1 has invalid 'content'/);
  await rejectsLine10({ messages: [user([{ text: 'no type' }]), assistant()] }, "Invalid file format. Example 10, message 1 has invalid 'content[0]': expected a content part object with a 'type'");
  await rejectsLine10({ messages: [user([{ type: 'text', text: 3 }]), assistant()] }, "Invalid file format. Example 10, message 1 has invalid 'content[0].text': expected a string");
  await rejectsLine10({ messages: [user(), { role: 'assistant' }] }, "Invalid file format. Example 10, message 2 is missing 'content' (an assistant message needs content, tool_calls or function_call)");
  await rejectsLine10({ messages: [user(), assistant(null)] }, /message 2 is missing 'content'/);
  await rejectsLine10({ messages: [{ role: 'tool', tool_call_id: 'c' }, user(), assistant()] }, /message 1 is missing 'content'/);
  await rejectsLine10({ messages: [user(), { role: 'function', name: 'g' }, assistant()] }, /message 2 is missing 'content'/);
  await rejectsLine10({ messages: [user(), assistant(), { role: 'user', content: 'x', name: 7 }] }, "Invalid file format. Example 10, message 3 has invalid 'name': expected a string, but got a number");
});

test('chat: content part types (text only: no images until a vision model trains, no audio or files)', async () => {
  const image = { type: 'image_url', image_url: { url: 'https://x/y.png', detail: 'low' } };
  const noImages = "tuneforge's models cannot train on images yet (no vision models), so content parts must be text";
  await rejectsLine10({ messages: [user([{ type: 'text', text: 'look' }, image]), assistant()] }, `Invalid file format. Example 10, message 1 has an image in 'content[1]': ${noImages}`);
  await rejectsLine10({ messages: [user(), assistant([image])] }, `Invalid file format. Example 10, message 2 has an image in 'content[0]': ${noImages}`);
  await rejectsLine10({ messages: [{ role: 'system', content: [image] }, user(), assistant()] }, /message 1 has an image in 'content\[0\]'/);
  await rejectsLine10(
    { messages: [user([{ type: 'text', text: 'a' }, { type: 'input_audio', input_audio: { data: '', format: 'wav' } }]), assistant()] },
    `Invalid file format. Example 10, message 1 has a content part of type "input_audio" in 'content[1]', which fine-tuning does not support ('text' only)`,
  );
  await rejectsLine10({ messages: [user([{ type: 'file', file: {} }]), assistant()] }, /content part of type "file"/);
  await rejectsLine10({ messages: [user(), assistant([{ type: 'refusal', refusal: 'no' }])] }, /content part of type "refusal" in 'content\[0\]', which fine-tuning does not support \('text' only\)/);
});

test('chat: tool_calls shape', async () => {
  const call = (over: Record<string, unknown> = {}) => ({ id: 'call_1', type: 'function', function: { name: 'f', arguments: '{}' }, ...over });
  const withCalls = (tool_calls: unknown) => ({ messages: [user(), { role: 'assistant', tool_calls }, { role: 'tool', tool_call_id: 'call_1', content: 'r' }, assistant()] });
  await expectOk(withBadLine(withCalls([call()])));
  await rejectsLine10(withCalls([]), "Invalid file format. Example 10, message 2 has invalid 'tool_calls': expected a non-empty list of tool calls");
  await rejectsLine10(withCalls({}), /has invalid 'tool_calls'/);
  await rejectsLine10(withCalls(['x']), "Invalid file format. Example 10, message 2 has invalid 'tool_calls[0]': expected an object, but got a string");
  await rejectsLine10(withCalls([call({ id: 1 })]), "Invalid file format. Example 10, message 2 has invalid 'tool_calls[0].id': expected a string");
  await rejectsLine10(withCalls([call({ type: 'custom' })]), `Invalid file format. Example 10, message 2 has invalid 'tool_calls[0].type': expected 'function', but got "custom"`);
  await rejectsLine10(withCalls([call({ function: { arguments: '{}' } })]), "Invalid file format. Example 10, message 2 has invalid 'tool_calls[0].function.name': expected a non-empty string");
  await rejectsLine10(withCalls([call({ function: { name: 'f', arguments: { a: 1 } } })]), "Invalid file format. Example 10, message 2 has invalid 'tool_calls[0].function.arguments': expected a string of JSON, but got an object");
  await rejectsLine10(withCalls([call(), call({ function: { name: 'f', arguments: '{a:1}' } })]), "Invalid file format. Example 10, message 2 has invalid 'tool_calls[1].function.arguments': the string is not valid JSON");
  await rejectsLine10(withCalls([call({ function: 'f' })]), /'tool_calls\[0\]\.function': expected an object with 'name' and 'arguments'/);
});

test('chat: tool messages need tool_call_id', async () => {
  await rejectsLine10({ messages: [user(), { role: 'tool', content: 'r' }, assistant()] }, "Invalid file format. Example 10, message 2 is missing 'tool_call_id'");
  await rejectsLine10({ messages: [user(), { role: 'tool', content: 'r', tool_call_id: 3 }, assistant()] }, "Invalid file format. Example 10, message 2 has invalid 'tool_call_id': expected a string");
});

test('chat: deprecated functions / function_call / function messages', async () => {
  await rejectsLine10({ messages: [user(), { role: 'assistant', function_call: { name: 'g', arguments: 'nope' } }, assistant()] }, "Invalid file format. Example 10, message 2 has invalid 'function_call.arguments': the string is not valid JSON");
  await rejectsLine10({ messages: [user(), { role: 'assistant', function_call: { arguments: '{}' } }, assistant()] }, /'function_call\.name': expected a non-empty string/);
  await rejectsLine10({ messages: [user(), { role: 'function', content: 'r' }, assistant()] }, "Invalid file format. Example 10, message 2 is missing 'name' (a function message names the function it answers)");
  await rejectsLine10({ ...chatExample(1), functions: {} }, "Invalid file format. Example 10 has invalid 'functions': expected a list of function definitions, but got an object");
  await rejectsLine10({ ...chatExample(1), functions: [{ parameters: {} }] }, "Invalid file format. Example 10, function 1 has a function definition without a 'name'");
  await rejectsLine10({ ...chatExample(1), functions: [{ name: 'g', parameters: 'x' }] }, "Invalid file format. Example 10, function 1 has invalid 'parameters': expected a JSON Schema object");
});

test('chat: tools and parallel_tool_calls', async () => {
  const tool = { type: 'function', function: { name: 'f', parameters: { type: 'object' } } };
  await rejectsLine10({ ...chatExample(1), tools: tool }, "Invalid file format. Example 10 has invalid 'tools': expected a list of tools, but got an object");
  await rejectsLine10({ ...chatExample(1), tools: [tool, 'f'] }, 'Invalid file format. Example 10, tool 2 is not an object (got a string)');
  await rejectsLine10({ ...chatExample(1), tools: [{ ...tool, type: 'web_search' }] }, `Invalid file format. Example 10, tool 1 has invalid 'type': expected 'function', but got "web_search"`);
  await rejectsLine10({ ...chatExample(1), tools: [{ type: 'function' }] }, "Invalid file format. Example 10, tool 1 has invalid 'function': expected an object with a 'name', but got nothing");
  await rejectsLine10({ ...chatExample(1), tools: [{ type: 'function', function: { description: 'd' } }] }, /tool 1 has a function definition without a 'name'/);
  await rejectsLine10({ ...chatExample(1), tools: [{ type: 'function', function: { name: 'f', description: 1 } }] }, /tool 1 has invalid 'description'/);
  await rejectsLine10({ ...chatExample(1), parallel_tool_calls: 'yes' }, "Invalid file format. Example 10 has invalid 'parallel_tool_calls': expected true or false, but got a string");
});

test('supervised: one format per file', async () => {
  await expectError(writeFile([...chatLines(5), json({ prompt: 'p', completion: 'c' }), ...chatLines(4)]), {
    line: 6,
    message: 'Invalid file format. Example 6 uses the prompt/completion format, but earlier examples use the chat format; all examples of a file must use one format',
  });
  await expectError(writeFile([json({ prompt: 'p', completion: 'c' }), ...chatLines(9)]), { line: 2, message: /Example 2 uses the chat format, but earlier examples use the prompt\/completion format/ });
});

test('supervised: prompt/completion fields', async () => {
  const pc = (i: number) => json({ prompt: `p${i}`, completion: `c${i}` });
  const file = (bad: unknown) => writeFile([...Array.from({ length: 9 }, (_, i) => pc(i)), json(bad)]);
  await expectError(file({ prompt: 'p' }), { line: 10, message: "Invalid file format. Example 10 is missing 'completion'" });
  await expectError(file({ completion: 'c' }), { line: 10, message: "Invalid file format. Example 10 is missing 'prompt'" });
  await expectError(file({ prompt: 'p', completion: 3 }), { line: 10, message: "Invalid file format. Example 10 has invalid 'completion': expected a string, but got a number" });
});

test('supervised: a preference-format line says it needs a DPO job', async () => {
  await rejectsLine10(preferenceExample(1), "Invalid file format. Example 10 uses the preference format, which is for DPO jobs (method type 'dpo'); supervised jobs need 'messages'");
});

// ---------------------------------------------------------------------------------------------
// Preference (DPO) rules

test('dpo: a chat-format line is rejected', async () => {
  await rejectsLine10(chatExample(1), "Invalid file format. Example 10 is missing 'input', 'preferred_output' and 'non_preferred_output' (preference format, needed by DPO jobs)", TRAIN_DPO);
});

test('dpo: input, preferred_output, non_preferred_output', async () => {
  const good = preferenceExample(1);
  await rejectsLine10({ ...good, input: undefined }, "Invalid file format. Example 10 is missing 'input'", TRAIN_DPO);
  await rejectsLine10({ ...good, input: [] }, "Invalid file format. Example 10 has invalid 'input': expected an object with 'messages', but got a list", TRAIN_DPO);
  await rejectsLine10({ ...good, input: {} }, "Invalid file format. Example 10 is missing 'input.messages'", TRAIN_DPO);
  await rejectsLine10({ ...good, input: { messages: [{ role: 'user' }] } }, "Invalid file format. Example 10, input message 1 is missing 'content'", TRAIN_DPO);
  await rejectsLine10({ ...good, input: { messages: [user()], tools: {} } }, /Example 10 has invalid 'tools'/, TRAIN_DPO);
  await rejectsLine10({ ...good, non_preferred_output: undefined }, "Invalid file format. Example 10 is missing 'non_preferred_output'", TRAIN_DPO);
  await rejectsLine10({ ...good, preferred_output: [assistant('a'), assistant('b')] }, "Invalid file format. Example 10 has invalid 'preferred_output': expected a list with exactly one assistant message", TRAIN_DPO);
  await rejectsLine10({ ...good, preferred_output: assistant('a') }, /has invalid 'preferred_output'/, TRAIN_DPO);
  await rejectsLine10({ ...good, non_preferred_output: [user('x')] }, "Invalid file format. Example 10, non_preferred_output message 1 must be from the assistant (got role 'user')", TRAIN_DPO);
  await rejectsLine10({ ...good, preferred_output: [{ role: 'assistant' }] }, /Example 10, preferred_output message 1 is missing 'content'/, TRAIN_DPO);
  await rejectsLine10({ ...good, preferred_output: [{ content: 'x' }] }, "Invalid file format. Example 10, preferred_output message 1 Discriminator 'role' is missing in value", TRAIN_DPO);
});

test('dpo: extra top-level keys are ignored with a warning', async () => {
  const result = await expectOk(writeFile([...goodLines('dpo', 9), json({ ...preferenceExample(1), id: 7 })]), TRAIN_DPO);
  assert.match(result.warnings[0], /^1 example\(s\) have keys other than input, preferred_output, non_preferred_output/);
});

// ---------------------------------------------------------------------------------------------
// Reinforcement rules

test('reinforcement: messages required and ending with a user message', async () => {
  await rejectsLine10({ answer: '1' }, "Invalid file format. Example 10 is missing 'messages' (reinforcement format)", TRAIN_RFT);
  await rejectsLine10({ messages: [user(), assistant()] }, "Invalid file format. Example 10, message 2 must be from the user: the last message of a reinforcement example is the prompt to answer (got role 'assistant')", TRAIN_RFT);
  await rejectsLine10({ messages: [{ role: 'user', content: 'x', extra: 1 }] }, /message 1 has unrecognized key 'extra'/, TRAIN_RFT);
  await rejectsLine10({ messages: [user()], tools: [{ type: 'function' }] }, /Example 10, tool 1 has invalid 'function'/, TRAIN_RFT);
});

// ---------------------------------------------------------------------------------------------
// Size

test('generateChatJsonl writes a valid file of about the requested size', async () => {
  const path = join(dir, 'generated.jsonl');
  const { bytes, examples } = await generateChatJsonl(path, 2_000_000);
  assert.ok(bytes >= 2_000_000 && bytes < 2_000_000 + (1 << 20) + 1000, String(bytes));
  const result = await expectOk(path);
  assert.equal(result.nExamples, examples);
  rmSync(path);
  // tiny requests still yield the 10 examples a training file needs
  const tiny = join(dir, 'tiny.jsonl');
  assert.equal((await generateChatJsonl(tiny, 10)).examples, 10);
  await expectOk(tiny);
  rmSync(tiny);
});

test('a large file is streamed with bounded memory', async () => {
  // 200 MB by default (a few seconds); TUNEFORGE_BIG_DATASET_BYTES=1073741824 checks a 1 GB file.
  const size = Number(process.env.TUNEFORGE_BIG_DATASET_BYTES ?? 200_000_000);
  const path = join(dir, 'large.jsonl');
  const { examples } = await generateChatJsonl(path, size);
  try {
    const baseline = process.memoryUsage().rss;
    let peak = baseline;
    const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 10);
    const result = await validateDataset(createReadStream(path), TRAIN_SFT);
    clearInterval(sampler);
    assert.ok(result.ok);
    assert.equal(result.nExamples, examples);
    // Reading the file whole would take at least `size` more bytes; streaming stays far below.
    assert.ok(peak - baseline < Math.min(size / 2, 150_000_000), `rss grew by ${((peak - baseline) / 1e6).toFixed(0)} MB`);
  } finally {
    rmSync(path);
  }
});

test('error messages quote bad values briefly, whatever their size', async () => {
  const error = await expectError(withBadLine({ messages: [user(), { role: 'r'.repeat(100_000), content: 'x' }] }), {
    line: 10,
    message: /^Invalid file format\. Example 10, message 2 Discriminator 'role' has invalid value "r+…/,
  });
  assert.ok(error.message.length < 300, String(error.message.length));
  const keyError = await expectError(withBadLine({ messages: [{ ...user(), ['k'.repeat(100_000)]: 1 }, assistant()] }), { line: 10, message: /unrecognized key 'k+…/ });
  assert.ok(keyError.message.length < 300);
});

test('validation file: must use the training file format when given', async () => {
  const pc = writeFile([json({ prompt: 'p', completion: 'c' })]);
  await expectOk(pc, { ...VALID_SFT, trainingFormat: 'prompt_completion' });
  await expectError(pc, { line: 1, message: 'Invalid file format. Example 1 uses the prompt/completion format, but the training file uses the chat format' }, { ...VALID_SFT, trainingFormat: 'chat' });
});
