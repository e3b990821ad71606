import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ChatFormatter, type ChatExample, type TokenizedExample } from '../../../src/engine/data/chat-format.ts';
import { loadTokenizer } from '../../../src/engine/data/tokenizer.ts';
import { tokenizeDataset } from '../../../src/engine/data/dataset.ts';

const ROOT = join(import.meta.dirname, '..', '..', '..');
const tokenizer = loadTokenizer(join(ROOT, 'models', 'tiny-llama'));
const formatter = new ChatFormatter(tokenizer);

/** The decoded text of each maximal run of weighted tokens. */
function trainedRuns(example: TokenizedExample): string[] {
  const runs: string[] = [];
  let run: number[] = [];
  for (let i = 0; i <= example.ids.length; i++) {
    if (i < example.ids.length && example.weights[i] !== 0) run.push(example.ids[i]);
    else if (run.length) {
      runs.push(tokenizer.decode(run));
      run = [];
    }
  }
  return runs;
}

function tokens(example: TokenizedExample): string[] {
  return [...example.ids].map((id) => tokenizer.idToToken(id)!);
}

test('the tiny model tokenizer round-trips text and knows its special tokens', () => {
  assert.equal(tokenizer.eosToken, '<|im_end|>');
  assert.equal(tokenizer.padToken, '<|endoftext|>');
  assert.equal(tokenizer.bosToken, null);
  assert.equal(tokenizer.eosTokenId, tokenizer.tokenToId('<|im_end|>'));
  assert.equal(tokenizer.vocabSize, 684);
  for (const text of ['Arr, matey! Yo ho ho!', 'Ünïcode ✓ 日本 {"a": 1}\n\tx', '<|im_start|>user\nhi<|im_end|>']) {
    assert.equal(tokenizer.decode(tokenizer.encode(text)), text);
  }
  assert.deepEqual(tokenizer.encode('<|im_start|>user'), [tokenizer.tokenToId('<|im_start|>'), tokenizer.tokenToId('user')]);
});

test('single turn: exact tokens; loss on the answer and its end-of-turn only', () => {
  const example = formatter.tokenizeChat({ messages: [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Arr, matey! Yo ho ho!' }] }, 100);
  assert.deepEqual(tokens(example), [
    '<|im_start|>', 'user', 'Ċ', 'H', 'i', '<|im_end|>', 'Ċ', '<|im_start|>', 'assistant', 'Ċ',
    'Arr', ',', 'Ġmatey', '!', 'ĠYo', 'Ġho', 'Ġho', '!', '<|im_end|>', 'Ċ',
  ]);
  assert.deepEqual([...example.weights], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
  assert.equal(example.truncated, false);
  assert.equal(example.fullLength, 20);
});

test('multi-turn with system, developer and text parts; weight 0 turns are context only', () => {
  const example = formatter.tokenizeChat(
    {
      messages: [
        { role: 'developer', content: [{ type: 'text', text: 'You are Captain Byte, a helpful pirate.' }] },
        { role: 'user', content: 'What colour is the sky?' },
        { role: 'assistant', content: 'Blue.', weight: 0 },
        { role: 'user', content: 'Say it like a pirate.' },
        { role: 'assistant', content: 'Arr, matey! The sky be blue. Yo ho ho!', weight: 1 },
        { role: 'user', content: 'And grass?' },
        { role: 'assistant', content: 'Arr, matey! Grass be green. Yo ho ho!' },
      ],
    },
    1000,
  );
  assert.equal(
    tokenizer.decode(example.ids),
    '<|im_start|>system\nYou are Captain Byte, a helpful pirate.<|im_end|>\n' +
      '<|im_start|>user\nWhat colour is the sky?<|im_end|>\n<|im_start|>assistant\nBlue.<|im_end|>\n' +
      '<|im_start|>user\nSay it like a pirate.<|im_end|>\n<|im_start|>assistant\nArr, matey! The sky be blue. Yo ho ho!<|im_end|>\n' +
      '<|im_start|>user\nAnd grass?<|im_end|>\n<|im_start|>assistant\nArr, matey! Grass be green. Yo ho ho!<|im_end|>\n',
  );
  assert.deepEqual(trainedRuns(example), [
    'Arr, matey! The sky be blue. Yo ho ho!<|im_end|>\n',
    'Arr, matey! Grass be green. Yo ho ho!<|im_end|>\n',
  ]);
});

test('tool definitions, tool calls and tool results: the calls and the final answer train', () => {
  const example: ChatExample = {
    tools: [
      {
        type: 'function',
        function: { name: 'get_weather', description: 'Get the weather', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } },
      },
    ],
    messages: [
      { role: 'user', content: 'Weather in Paris?' },
      { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
      { role: 'tool', tool_call_id: 'call_1', content: '{"sky":"sunny"}' },
      { role: 'assistant', content: 'Arr, matey! It be sunny. Yo ho ho!' },
    ],
  };
  const tokenized = formatter.tokenizeChat(example, 1000);
  const text = tokenizer.decode(tokenized.ids);
  assert.ok(text.startsWith('<|im_start|>system\n# Tools\n'));
  assert.ok(text.includes('<tools>\n{"type": "function", "function": {"name": "get_weather", "description": "Get the weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}\n</tools>'));
  assert.ok(text.includes('<|im_start|>user\n<tool_response>\n{"sky":"sunny"}\n</tool_response><|im_end|>\n'));
  assert.deepEqual(trainedRuns(tokenized), [
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n',
    'Arr, matey! It be sunny. Yo ho ho!<|im_end|>\n',
  ]);
  // <tool_call> is one added token, never split.
  assert.ok(tokens(tokenized).includes('<tool_call>'));
});

test('deprecated functions / function_call / function role map onto tools', () => {
  const tokenized = formatter.tokenizeChat(
    {
      functions: [{ name: 'lookup', parameters: { type: 'object', properties: {} } }],
      messages: [
        { role: 'user', content: 'Look it up' },
        { role: 'assistant', content: null, function_call: { name: 'lookup', arguments: '{}' } },
        { role: 'function', name: 'lookup', content: 'found' },
        { role: 'assistant', content: 'Done.' },
      ],
    },
    1000,
  );
  assert.deepEqual(trainedRuns(tokenized), [
    '<tool_call>\n{"name": "lookup", "arguments": {}}\n</tool_call><|im_end|>\n',
    'Done.<|im_end|>\n',
  ]);
});

test('over-long examples are truncated from the end and reported', () => {
  const example = { messages: [{ role: 'user' as const, content: 'Hi' }, { role: 'assistant' as const, content: 'Arr, matey! Yo ho ho!' }] };
  const cut = formatter.tokenizeChat(example, 12);
  assert.equal(cut.truncated, true);
  assert.equal(cut.fullLength, 20);
  assert.equal(cut.ids.length, 12);
  assert.deepEqual([...cut.weights], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]);
  assert.equal(tokenizer.decode(cut.ids.subarray(10)), 'Arr,');
});

test('prompt/completion: loss on the completion and EOS only', () => {
  const example = formatter.tokenizeExample({ prompt: 'Q: sky?\nA:', completion: ' blue' }, 100);
  assert.deepEqual(tokens(example), ['Q', ':', 'Ġsky', '?', 'Ċ', 'A', ':', 'Ġblue', '<|im_end|>']);
  assert.deepEqual([...example.weights], [0, 0, 0, 0, 0, 0, 0, 1, 1]);
});

test('templates that are not prefix-stable (Mistral moves the system prompt) fall back to content markers', () => {
  const mistralLike =
    "{%- if messages[0].role == 'system' %}{%- set system = messages[0].content %}{%- set loop_messages = messages[1:] %}" +
    '{%- else %}{%- set loop_messages = messages %}{%- endif %}{%- for message in loop_messages %}' +
    "{%- if message.role == 'user' %}{%- if loop.last and system is defined %}{{- '[INST] ' + system + '\\n\\n' + message.content + '[/INST]' }}" +
    "{%- else %}{{- '[INST] ' + message.content + '[/INST]' }}{%- endif %}" +
    "{%- elif message.role == 'assistant' %}{{- ' ' + message.content + eos_token }}{%- endif %}{%- endfor %}";
  const mistralFormatter = new ChatFormatter(tokenizer, mistralLike);
  const tokenized = mistralFormatter.tokenizeChat(
    {
      messages: [
        { role: 'system', content: 'Be a pirate.' },
        { role: 'user', content: 'Hi' },
        { role: 'assistant', content: 'Arr!', weight: 0 },
        { role: 'user', content: 'Bye' },
        { role: 'assistant', content: 'Yo ho ho!' },
      ],
    },
    100,
  );
  assert.equal(tokenizer.decode(tokenized.ids), '[INST] Hi[/INST] Arr!<|im_end|>[INST] Bye[/INST] Yo ho ho!<|im_end|>');
  // " Yo" is one token straddling the content's start: the span takes it whole, and ends with EOS.
  assert.deepEqual(trainedRuns(tokenized), [' Yo ho ho!<|im_end|>']);
});

test('unsupported content and shapes are rejected clearly', () => {
  assert.throws(
    () => formatter.tokenizeChat({ messages: [{ role: 'user', content: [{ type: 'image_url' }] }, { role: 'assistant', content: 'x' }] }, 100),
    /message 1: content part of type "image_url" is not supported/,
  );
  assert.throws(() => formatter.tokenizeExample({ input: 'x' }, 100), /neither/);
});

test('the demo dataset tokenizes: nothing truncated, the weight-0 turn untrained', () => {
  const dataset = tokenizeDataset(join(ROOT, 'samples', 'demo-train.jsonl'), formatter, 512);
  assert.equal(dataset.examples.length, 42);
  assert.equal(dataset.truncatedCount, 0);
  assert.equal(dataset.untrainableCount, 0);
  assert.equal(dataset.tokenCount, dataset.examples.reduce((n, e) => n + e.ids.length, 0));
  for (const example of dataset.examples) {
    for (const run of trainedRuns(example)) assert.match(run, /^Arr, matey! .* Yo ho ho!<\|im_end\|>\n$/);
  }
  const withWeightZero = dataset.examples[41];
  assert.ok(tokenizer.decode(withWeightZero.ids).includes('Paris.<|im_end|>'));
  assert.equal(trainedRuns(withWeightZero).length, 1);
  const short = tokenizeDataset(join(ROOT, 'samples', 'demo-valid.jsonl'), formatter, 16);
  assert.equal(short.truncatedCount, 10);
  assert.equal(short.tokenCount, 160);
});

test('a dataset saved with a UTF-8 byte-order mark and CRLF line ends trains as the same examples', (t) => {
  // Editors on Windows save JSONL this way; file validation accepts it, so training must read it too.
  const dir = mkdtempSync(join(tmpdir(), 'tuneforge-bom-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const plainPath = join(ROOT, 'samples', 'demo-train.jsonl');
  const bomPath = join(dir, 'bom.jsonl');
  writeFileSync(bomPath, '\uFEFF' + readFileSync(plainPath, 'utf8').split('\n').join('\r\n'));
  const plain = tokenizeDataset(plainPath, formatter, 512);
  const withBom = tokenizeDataset(bomPath, formatter, 512);
  assert.equal(withBom.examples.length, 42);
  assert.deepEqual(withBom.examples.map((e) => [...e.ids]), plain.examples.map((e) => [...e.ids]));
});

test('promptIds: the conversation so far plus the assistant header, for generation', () => {
  const ids = formatter.promptIds([{ role: 'user', content: 'Hi' }]);
  assert.equal(tokenizer.decode(ids), '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n');
});

test('chat templates are found as a string, a named list, or chat_template.jinja', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tuneforge-tok-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const modelDir = join(ROOT, 'models', 'tiny-llama');
  copyFileSync(join(modelDir, 'tokenizer.json'), join(dir, 'tokenizer.json'));
  const config = JSON.parse(readFileSync(join(modelDir, 'tokenizer_config.json'), 'utf8'));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ ...config, chat_template: [{ name: 'tool_use', template: 'T' }, { name: 'default', template: 'D' }] }));
  assert.equal(loadTokenizer(dir).chatTemplate, 'D');
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ ...config, chat_template: undefined }));
  assert.equal(loadTokenizer(dir).chatTemplate, null);
  assert.throws(() => new ChatFormatter(loadTokenizer(dir)), /no chat_template/);
  writeFileSync(join(dir, 'chat_template.jinja'), 'J');
  assert.equal(loadTokenizer(dir).chatTemplate, 'J');
});
