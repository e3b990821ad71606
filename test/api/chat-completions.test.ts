// POST /v1/chat/completions through the official SDK over real HTTP, every JSON response and every
// streamed chunk validated against OpenAI's spec. The bundled tiny model has random weights, so
// the tests check structure and determinism, not wording; a tiny job trained for real (a few
// steps) supplies a fine-tuned model and a checkpoint, one shared with another organization.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type OpenAI from 'openai';
import { loadTokenizer } from '../../src/engine/data/tokenizer.ts';
import { ChatFormatter } from '../../src/engine/data/chat-format.ts';
import { parseToolCalls, toolSyntaxOf } from '../../src/api/inference/tool-calls.ts';
import { assertMatches } from '../support/openapi.ts';
import { expectError, json, waitFor, type TestServer } from '../support/server.ts';
import { BASE_MODEL, MODELS_DIR, createJob, startTrainingServer, uploadFiles } from '../e2e/support.ts';
import type { FsBlobStore } from '../../src/store/blobs.ts';

const A = 'sk-a';
const B = 'sk-b';
const C = 'sk-c';
const ADMIN_A = 'sk-admin-a';
/** Both of tiny-llama's end tokens (<|im_end|>, <|endoftext|>) suppressed: generation runs to max_tokens. */
const NO_EOS = { 677: -100, 679: -100 };
const ASK = [{ role: 'user' as const, content: 'Ahoy! What be yer favourite ship?' }];
const CITIES = ['Nassau', 'Tortuga', 'Havana', 'Kingston', 'Bristol', 'Lisbon', 'Cadiz', 'Boston', 'Salem', 'Dover', 'Calais', 'Brest'];
const CITY_TOOL = { type: 'function' as const, function: { name: 'get_weather', description: 'Weather in a city', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } };
const WEATHER_TOOL = {
  type: 'function' as const,
  function: {
    name: 'get_weather',
    description: 'Weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' }, days: { type: 'integer' } }, required: ['city', 'days'], additionalProperties: false },
  },
};

describe('POST /v1/chat/completions', () => {
  let server: TestServer;
  let a: OpenAI;
  let trained: Promise<{ model: string; checkpoint: string }>;
  let toolTrained: Promise<string>;

  before(async () => {
    server = await startTrainingServer({
      env: { API_KEYS: `${A}:org-a,${B}:org-b,${C}:org-c`, ADMIN_API_KEYS: `${ADMIN_A}:org-a` },
      checkpointEverySteps: 100,
    });
    a = server.client(A);
    // Trains while the base-model tests run.
    trained = (async () => {
      const files = await uploadFiles(a);
      const job = await createJob(a, files, { n_epochs: 2, batch_size: 4 });
      const done = await waitFor(() => a.fineTuning.jobs.retrieve(job.id), (j) => ['succeeded', 'failed', 'cancelled'].includes(j.status), 100);
      assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
      const checkpoints = (await a.fineTuning.jobs.checkpoints.list(job.id)).data;
      // One per epoch: the final one is the model itself, the earlier one a checkpoint of its own.
      assert.deepEqual(checkpoints.map((c) => c.fine_tuned_model_checkpoint), [done.fine_tuned_model, `${done.fine_tuned_model}:ckpt-step-${checkpoints[1].step_number}`]);
      return { model: done.fine_tuned_model!, checkpoint: checkpoints[1].fine_tuned_model_checkpoint };
    })();
    trained.catch(() => {});
    // A model taught to answer weather questions with a tool call (the template's <tool_call> syntax).
    toolTrained = (async () => {
      const lines = CITIES.map((city) => JSON.stringify({
        tools: [CITY_TOOL],
        messages: [{ role: 'user', content: `Weather in ${city}?` }, { role: 'assistant', tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: JSON.stringify({ city }) } }] }],
      }));
      const file = await a.files.create({ file: new File([lines.join('\n') + '\n'], 'tools.jsonl'), purpose: 'fine-tune' });
      const job = await a.fineTuning.jobs.create({
        model: BASE_MODEL, training_file: file.id, seed: 7,
        method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 15, batch_size: 2, learning_rate_multiplier: 4 } } },
      });
      const done = await waitFor(() => a.fineTuning.jobs.retrieve(job.id), (j) => ['succeeded', 'failed', 'cancelled'].includes(j.status), 100);
      assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
      return done.fine_tuned_model!;
    })();
    toolTrained.catch(() => {});
  });
  after(async () => {
    await trained.catch(() => {});
    await toolTrained.catch(() => {});
    await server?.close();
  });

  const chat = (body: Record<string, unknown>, client = a) =>
    client.chat.completions.create({ model: BASE_MODEL, messages: ASK, max_tokens: 12, ...body } as never) as unknown as Promise<OpenAI.ChatCompletion>;

  it('answers with a chat.completion: usage counts the chat template’s prompt tokens, max_tokens ends with length', async () => {
    const res = await chat({ seed: 1, max_tokens: 7, logit_bias: NO_EOS });
    assert.equal(res.object, 'chat.completion');
    assert.equal(res.model, BASE_MODEL);
    assert.equal(res.choices.length, 1);
    assert.equal(res.choices[0].message.role, 'assistant');
    assert.equal(res.choices[0].finish_reason, 'length');
    const formatter = new ChatFormatter(loadTokenizer(path.join(MODELS_DIR, BASE_MODEL)));
    assert.equal(res.usage!.prompt_tokens, formatter.promptIds(ASK).length);
    assert.equal(res.usage!.completion_tokens, 7);
    assert.equal(res.usage!.total_tokens, res.usage!.prompt_tokens + 7);
    const viaMax = await chat({ seed: 1, max_tokens: undefined, max_completion_tokens: 7, logit_bias: NO_EOS });
    assert.equal(viaMax.choices[0].message.content, res.choices[0].message.content);
    assert.equal(viaMax.usage!.completion_tokens, 7);
  });

  it('same seed, same output; temperature 0 is deterministic without a seed', async () => {
    const [x, y, z] = await Promise.all([chat({ seed: 42, temperature: 1 }), chat({ seed: 42, temperature: 1 }), chat({ seed: 43, temperature: 1 })]);
    assert.equal(x.choices[0].message.content, y.choices[0].message.content);
    assert.notEqual(x.choices[0].message.content, z.choices[0].message.content);
    const [g1, g2] = [await chat({ temperature: 0 }), await chat({ temperature: 0, top_p: 0.5 })];
    assert.equal(g1.choices[0].message.content, g2.choices[0].message.content);
  });

  it('n choices, each reproducible with the seed; penalties and top_p are accepted', async () => {
    const res = await chat({ n: 3, seed: 5, temperature: 1.2, presence_penalty: 0.5, frequency_penalty: 0.5, top_p: 0.9, logit_bias: NO_EOS });
    assert.deepEqual(res.choices.map((c) => c.index), [0, 1, 2]);
    assert.ok(new Set(res.choices.map((c) => c.message.content)).size > 1);
    const again = await chat({ n: 3, seed: 5, temperature: 1.2, presence_penalty: 0.5, frequency_penalty: 0.5, top_p: 0.9, logit_bias: NO_EOS });
    assert.deepEqual(again.choices.map((c) => c.message.content), res.choices.map((c) => c.message.content));
    // EOS suppressed: every choice runs to max_tokens; usage adds them up (the prompt counts once).
    assert.equal(res.usage!.completion_tokens, 3 * 12);
    assert.ok(res.choices.every((c) => c.finish_reason === 'length'));
  });

  it('stop: the text ends before the stop string, finish_reason stop', async () => {
    const full = (await chat({ temperature: 0, max_tokens: 20, logit_bias: NO_EOS })).choices[0].message.content!;
    const stop = full.slice(6, 9);
    const cut = full.indexOf(stop);
    for (const value of [stop, ['\u0000never', stop]]) {
      const res = await chat({ temperature: 0, max_tokens: 20, stop: value, logit_bias: NO_EOS });
      assert.equal(res.choices[0].message.content, full.slice(0, cut));
      assert.equal(res.choices[0].finish_reason, 'stop');
    }
  });

  it('logprobs: one entry per generated token with top_logprobs alternatives, most likely first', async () => {
    const res = await chat({ seed: 9, max_tokens: 6, logprobs: true, top_logprobs: 3, logit_bias: NO_EOS });
    const content = res.choices[0].logprobs!.content!;
    assert.equal(content.length, 6);
    if (!content.some((t) => t.token.includes('\uFFFD'))) assert.equal(content.map((t) => t.token).join(''), res.choices[0].message.content);
    for (const t of content) {
      assert.ok(t.logprob <= 0);
      assert.ok(Array.isArray(t.bytes));
      assert.equal(t.top_logprobs.length, 3);
      for (let i = 1; i < 3; i++) assert.ok(t.top_logprobs[i - 1].logprob >= t.top_logprobs[i].logprob);
      assert.ok(t.top_logprobs[0].logprob >= t.logprob);
    }
    const plain = await chat({ seed: 9, max_tokens: 6, logit_bias: NO_EOS });
    assert.equal(plain.choices[0].logprobs, null);
    assert.equal(plain.choices[0].message.content, res.choices[0].message.content);
  });

  it('stream: chunks match the spec, assemble to the non-streamed text, and end with the usage chunk', async () => {
    const body = { seed: 11, n: 2, temperature: 1, max_tokens: 10, logprobs: true };
    const whole = await chat(body);
    const stream = await a.chat.completions.create({ model: BASE_MODEL, messages: ASK, ...body, stream: true, stream_options: { include_usage: true } });
    const texts = ['', ''];
    const finish: (string | null)[] = [null, null];
    let usage: OpenAI.CompletionUsage | null | undefined;
    let chunks = 0;
    const ids = new Set<string>();
    for await (const chunk of stream) {
      assertMatches('CreateChatCompletionStreamResponse', chunk);
      chunks++;
      ids.add(chunk.id);
      if (chunk.choices.length === 0) {
        usage = chunk.usage;
        continue;
      }
      assert.equal(chunk.usage, null);
      for (const c of chunk.choices) {
        texts[c.index] += c.delta.content ?? '';
        if (c.finish_reason) finish[c.index] = c.finish_reason;
      }
    }
    assert.ok(chunks > 4);
    assert.equal(ids.size, 1);
    assert.deepEqual(texts, whole.choices.map((c) => c.message.content));
    assert.deepEqual(finish, whole.choices.map((c) => c.finish_reason));
    assert.deepEqual(usage, whole.usage);
  });

  it('stream on the wire: text/event-stream, data: lines, data: [DONE] last', async () => {
    const res = await fetch(`${server.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${A}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: BASE_MODEL, messages: ASK, max_tokens: 3, stream: true }),
    });
    assert.match(res.headers.get('content-type')!, /^text\/event-stream/);
    const events = (await res.text()).split('\n\n').filter(Boolean);
    assert.equal(events.at(-1), 'data: [DONE]');
    for (const e of events.slice(0, -1)) {
      assert.match(e, /^data: \{/);
      const chunk = JSON.parse(e.slice(6));
      assertMatches('CreateChatCompletionStreamResponse', chunk);
      assert.equal('usage' in chunk, false);
    }
  });

  it('response_format json_object: the content always parses as a JSON object, even from a random model', async () => {
    for (let seed = 0; seed < 6; seed++) {
      const res = await chat({ seed, temperature: 1.5, max_tokens: 10 + seed * 8, response_format: { type: 'json_object' } });
      const value = JSON.parse(res.choices[0].message.content!);
      assert.ok(value && typeof value === 'object' && !Array.isArray(value), res.choices[0].message.content!);
    }
  });

  it('response_format json_schema: required keys with their types (streamed too)', async () => {
    const schema = {
      type: 'object',
      properties: { name: { type: 'string' }, age: { type: 'integer' }, pirate: { type: 'boolean' }, crew: { type: 'array', items: { type: 'string' }, maxItems: 3 }, rank: { enum: ['captain', 'cook'] } },
      required: ['name', 'age', 'pirate', 'crew', 'rank'],
      additionalProperties: false,
    };
    const response_format = { type: 'json_schema', json_schema: { name: 'sailor', schema, strict: true } };
    for (let seed = 0; seed < 3; seed++) {
      const res = await chat({ seed, temperature: 1, max_tokens: 80, response_format });
      const value = JSON.parse(res.choices[0].message.content!);
      assert.deepEqual(Object.keys(value), ['name', 'age', 'pirate', 'crew', 'rank']);
      assert.equal(typeof value.name, 'string');
      assert.ok(Number.isInteger(value.age));
      assert.equal(typeof value.pirate, 'boolean');
      assert.ok(Array.isArray(value.crew) && value.crew.length <= 3 && value.crew.every((m: unknown) => typeof m === 'string'));
      assert.ok(['captain', 'cook'].includes(value.rank));
    }
    const stream = await a.chat.completions.create({ model: BASE_MODEL, messages: ASK, seed: 1, max_tokens: 80, response_format: response_format as never, stream: true });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
    assert.deepEqual(Object.keys(JSON.parse(text)), ['name', 'age', 'pirate', 'crew', 'rank']);
  });

  it('tools: a forced call comes back as tool_calls with arguments that follow the function’s schema', async () => {
    const other = { type: 'function' as const, function: { name: 'hoist_sails' } };
    const cases = [
      { tools: [WEATHER_TOOL], tool_choice: 'required' },
      { tools: [other, WEATHER_TOOL], tool_choice: { type: 'function', function: { name: 'get_weather' } } },
    ];
    for (const { tools, tool_choice } of cases) {
      const res = await chat({ seed: 3, max_tokens: 60, tools, tool_choice });
      const choice = res.choices[0];
      assert.equal(choice.finish_reason, 'tool_calls', JSON.stringify(choice));
      assert.equal(choice.message.content, null);
      const call = choice.message.tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall;
      assert.equal(call.type, 'function');
      assert.match(call.id, /^call_/);
      assert.equal(call.function.name, 'get_weather');
      const args = JSON.parse(call.function.arguments);
      assert.deepEqual(Object.keys(args), ['city', 'days']);
      assert.equal(typeof args.city, 'string');
      assert.ok(Number.isInteger(args.days));
    }
    // With several tools, "required" picks one of them, and its arguments follow that tool's schema.
    const names = new Set<string>();
    for (let seed = 0; seed < 6; seed++) {
      const res = await chat({ seed, temperature: 1.5, max_tokens: 60, tools: [WEATHER_TOOL, { type: 'function', function: { name: 'hoist', parameters: { type: 'object', properties: { sails: { type: 'integer' } }, required: ['sails'] } } }], tool_choice: 'required' });
      const call = res.choices[0].message.tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall;
      names.add(call.function.name);
      const args = JSON.parse(call.function.arguments);
      assert.deepEqual(Object.keys(args), call.function.name === 'hoist' ? ['sails'] : ['city', 'days'], call.function.arguments);
    }
    assert.equal(names.size, 2, [...names].join());
    // Streamed: the call arrives as a tool_calls delta, not as content.
    const stream = await a.chat.completions.create({
      model: BASE_MODEL, messages: ASK, seed: 3, max_tokens: 60, tools: [WEATHER_TOOL], tool_choice: 'required', stream: true,
    });
    let content = '';
    const calls: OpenAI.ChatCompletionChunk.Choice.Delta.ToolCall[] = [];
    let finish: string | null = null;
    for await (const chunk of stream) {
      assertMatches('CreateChatCompletionStreamResponse', chunk);
      content += chunk.choices[0]?.delta.content ?? '';
      calls.push(...(chunk.choices[0]?.delta.tool_calls ?? []));
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    assert.equal(content, '');
    assert.equal(finish, 'tool_calls');
    assert.equal(calls[0].function!.name, 'get_weather');
    assert.equal(typeof JSON.parse(calls[0].function!.arguments!).city, 'string', JSON.stringify(calls));
  });

  it('tools: a model fine-tuned to call a tool answers with tool_calls unforced (tool_choice auto), streamed too', async () => {
    const model = await toolTrained;
    let called = 0;
    for (const city of CITIES.slice(0, 4)) {
      const body = { model, messages: [{ role: 'user' as const, content: `Weather in ${city}?` }], tools: [CITY_TOOL], temperature: 0, max_tokens: 40 };
      const res = await a.chat.completions.create(body);
      const choice = res.choices[0];
      if (choice.finish_reason !== 'tool_calls') {
        assert.equal(choice.message.tool_calls, undefined);
        continue;
      }
      called++;
      assert.equal(choice.message.content, null);
      const call = choice.message.tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall;
      assert.equal(call.function.name, 'get_weather');
      assert.equal(typeof JSON.parse(call.function.arguments).city, 'string');
      // The same answer streamed: a tool_calls delta, no <tool_call> text in the content.
      let content = '';
      let args = '';
      let finish: string | null = null;
      for await (const chunk of await a.chat.completions.create({ ...body, stream: true })) {
        assertMatches('CreateChatCompletionStreamResponse', chunk);
        content += chunk.choices[0]?.delta.content ?? '';
        args += chunk.choices[0]?.delta.tool_calls?.[0]?.function?.arguments ?? '';
        finish = chunk.choices[0]?.finish_reason ?? finish;
      }
      assert.equal(content, '');
      assert.equal(args, call.function.arguments);
      assert.equal(finish, 'tool_calls');
      // tool_choice none: the same text stays content.
      const none = await a.chat.completions.create({ ...body, tool_choice: 'none' });
      assert.match(none.choices[0].message.content!, /<tool_call>/);
      assert.equal(none.choices[0].finish_reason, 'stop');
    }
    assert.ok(called >= 1, 'the tuned model called its tool for none of the questions');
  });

  it('tools: the template’s <tool_call> syntax is parsed from the raw output (known tools only)', () => {
    assert.equal(toolSyntaxOf('…<tool_call>…'), 'hermes');
    assert.equal(toolSyntaxOf('{{ messages }}'), null);
    const raw = 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Nassau", "days": 2}}\n</tool_call>\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Tortuga", "days": 1}}\n</tool_call>';
    const parsed = parseToolCalls(raw, 'hermes', ['get_weather']);
    assert.equal(parsed.content, 'Let me check.');
    assert.deepEqual(parsed.calls.map((c) => JSON.parse(c.arguments).city), ['Nassau', 'Tortuga']);
    assert.deepEqual(parseToolCalls('<tool_call>\n{"name": "get_weather", "arguments": {}}', 'hermes', ['get_weather']).calls, [{ name: 'get_weather', arguments: '{}' }]);
    for (const text of ['<tool_call>{"name": "launch", "arguments": {}}</tool_call>', '<tool_call>{not json</tool_call>', 'plain answer']) {
      assert.deepEqual(parseToolCalls(text, 'hermes', ['get_weather']), { content: text, calls: [] });
    }
    assert.equal(parseToolCalls('[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "X"}}]', 'mistral', ['get_weather']).calls[0].arguments, '{"city":"X"}');
  });

  it('takes every role through the template: system, developer, user, assistant with tool_calls, tool', async () => {
    const res = await a.chat.completions.create({
      model: BASE_MODEL,
      max_tokens: 4,
      tools: [WEATHER_TOOL],
      tool_choice: 'auto',
      messages: [
        { role: 'system', content: 'You are a pirate.' },
        { role: 'developer', content: [{ type: 'text', text: 'Be brief.' }] },
        { role: 'user', content: 'Weather in Nassau?' },
        { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Nassau","days":1}' } }] },
        { role: 'tool', tool_call_id: 'call_1', content: '{"sky":"clear"}' },
      ],
    });
    assert.equal(res.choices.length, 1);
    assert.ok(res.usage!.prompt_tokens > 50);
  });

  it('bad input is a 400 naming the parameter', async () => {
    const post = (body: unknown) => server.request('POST', '/v1/chat/completions', { key: A, ...json(body) });
    const ok = { model: BASE_MODEL, messages: ASK };
    expectError(await post({ model: BASE_MODEL }), 400, { param: 'messages', code: 'missing_required_parameter' });
    expectError(await post({ messages: ASK }), 400, { param: 'model' });
    expectError(await post({ ...ok, messages: [] }), 400, { param: 'messages' });
    expectError(await post({ ...ok, messages: [{ role: 'pirate', content: 'x' }] }), 400, { param: 'messages[0].role', message: /'system', 'user', 'assistant', 'tool'/ });
    expectError(await post({ ...ok, messages: [{ role: 'user' }] }), 400, { param: 'messages[0].content' });
    expectError(await post({ ...ok, messages: [{ role: 'tool', content: 'x' }] }), 400, { param: 'messages[0].tool_call_id', code: 'missing_required_parameter' });
    expectError(await post({ ...ok, messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'https://x/y.png' } }] }] }), 400, { param: 'messages[0].content[0].type' });
    expectError(await post({ ...ok, n: 0 }), 400, { param: 'n' });
    expectError(await post({ ...ok, n: 129 }), 400, { param: 'n' });
    expectError(await post({ ...ok, n: 1.5 }), 400, { param: 'n', code: 'invalid_type' });
    expectError(await post({ ...ok, temperature: 2.5 }), 400, { param: 'temperature' });
    expectError(await post({ ...ok, temperature: 'hot' }), 400, { param: 'temperature', code: 'invalid_type' });
    expectError(await post({ ...ok, top_p: 1.5 }), 400, { param: 'top_p' });
    expectError(await post({ ...ok, presence_penalty: -3 }), 400, { param: 'presence_penalty' });
    expectError(await post({ ...ok, max_tokens: 0 }), 400, { param: 'max_tokens' });
    expectError(await post({ ...ok, max_tokens: 100_000 }), 400, { param: 'max_tokens', code: 'context_length_exceeded' });
    expectError(await post({ ...ok, stop: ['a', 'b', 'c', 'd', 'e'] }), 400, { param: 'stop', code: 'invalid_value' });
    expectError(await post({ ...ok, stream_options: { include_usage: true, extra: 1 }, stream: true }), 400, { param: 'stream_options.extra', code: 'unknown_parameter' });
    expectError(await post({ ...ok, top_logprobs: 2 }), 400, { param: 'top_logprobs' });
    expectError(await post({ ...ok, logprobs: true, top_logprobs: 21 }), 400, { param: 'top_logprobs' });
    expectError(await post({ ...ok, stream_options: { include_usage: true } }), 400, { param: 'stream_options' });
    expectError(await post({ ...ok, audio: { voice: 'alloy', format: 'mp3' }, modalities: ['text', 'audio'] }), 400, { param: 'audio' });
    expectError(await post({ ...ok, modalities: ['text', 'audio'] }), 400, { param: 'modalities' });
    expectError(await post({ ...ok, response_format: { type: 'xml' } }), 400, { param: 'response_format.type' });
    expectError(await post({ ...ok, response_format: { type: 'json_schema' } }), 400, { param: 'response_format.json_schema', code: 'missing_required_parameter' });
    expectError(await post({ ...ok, tool_choice: 'required' }), 400, { param: 'tool_choice' });
    expectError(await post({ ...ok, tools: [{ type: 'custom', custom: { name: 'x' } }] }), 400, { param: 'tools[0].type' });
    expectError(await post({ ...ok, tools: [WEATHER_TOOL], tool_choice: { type: 'function', function: { name: 'nope' } } }), 400, { param: 'tool_choice' });
    expectError(await post({ ...ok, logit_bias: { abc: 1 } }), 400, { param: 'logit_bias' });
    expectError(await post({ ...ok, logit_bias: { 99999: 1 }, stream: true }), 400, { param: 'logit_bias' });
    expectError(await post({ ...ok, suffix: 'x' }), 400, { param: 'suffix', code: 'unknown_parameter' });
    expectError(await post({ ...ok, model: 'no-such-model' }), 404, { param: 'model', code: 'model_not_found' });
  });

  it('serves a fine-tuned model with full weights (its own HF folder) like its base', async () => {
    // A full fine-tune's folder holds config, weights and tokenizer; a copy of the base stands in.
    const dir = 'jobs/ftjob-none/checkpoints/step-1';
    fs.cpSync(path.join(MODELS_DIR, BASE_MODEL), (server.store.blobs as FsBlobStore).pathOf(dir), { recursive: true });
    const id = 'ft:tiny-llama:org-a::fullcopy';
    await server.store.models.add({ id, organization_id: 'org-a', created_at: 1, job_id: 'ftjob-none', base_model: BASE_MODEL, dir });
    const greedy = { temperature: 0, max_tokens: 10 };
    const [base, full] = [await chat(greedy), await chat({ ...greedy, model: id })];
    assert.equal(full.model, id);
    assert.equal(full.choices[0].message.content, base.choices[0].message.content);
    await assert.rejects(chat({ ...greedy, model: id }, server.client(B)), (e: { status?: number }) => e.status === 404);
  });

  it('serves the fine-tuned model and its checkpoint; another org may use only what was shared with it', async () => {
    const { model, checkpoint } = await trained;
    const greedy = { temperature: 0, max_tokens: 16, messages: [{ role: 'user', content: 'What be the best way to find treasure?' }] };
    const base = await chat({ ...greedy });
    const tuned = await chat({ ...greedy, model });
    const ckpt = await chat({ ...greedy, model: checkpoint });
    assert.equal(tuned.model, model);
    assert.equal(ckpt.model, checkpoint);
    assert.notEqual(tuned.choices[0].message.content, base.choices[0].message.content);
    assert.notEqual(ckpt.choices[0].message.content, base.choices[0].message.content);

    const b = server.client(B);
    await assert.rejects(chat({ ...greedy, model }, b), (e: { status?: number; code?: string | null }) => e.status === 404 && e.code === 'model_not_found');
    await assert.rejects(chat({ ...greedy, model: checkpoint }, b), (e: { status?: number; code?: string | null }) => e.status === 404);
    const share = await server.request('POST', `/v1/fine_tuning/checkpoints/${encodeURIComponent(checkpoint)}/permissions`, { key: ADMIN_A, ...json({ project_ids: ['org-b'] }) });
    assert.equal(share.status, 200, JSON.stringify(share.body));
    const shared = await chat({ ...greedy, model: checkpoint }, b);
    assert.equal(shared.choices[0].message.content, ckpt.choices[0].message.content);
    await assert.rejects(chat({ ...greedy, model: checkpoint }, server.client(C)), (e: { status?: number; code?: string | null }) => e.status === 404);
    await assert.rejects(chat({ ...greedy, model }, b), (e: { status?: number; code?: string | null }) => e.status === 404);

    // The final checkpoint is the model: shared by the model's name, org-c chats and completes with it.
    const c = server.client(C);
    const shareFinal = await server.request('POST', `/v1/fine_tuning/checkpoints/${encodeURIComponent(model)}/permissions`, { key: ADMIN_A, ...json({ project_ids: ['org-c'] }) });
    assert.equal(shareFinal.status, 200, JSON.stringify(shareFinal.body));
    const sharedFinal = await chat({ ...greedy, model }, c);
    assert.equal(sharedFinal.model, model);
    assert.equal(sharedFinal.choices[0].message.content, tuned.choices[0].message.content);
    const prompt = { model, prompt: 'Ahoy', max_tokens: 8, temperature: 0 };
    const [own, theirs] = await Promise.all([a.completions.create(prompt), c.completions.create(prompt)]);
    assert.equal(theirs.model, model);
    assert.equal(theirs.choices[0].text, own.choices[0].text);
    assert.deepEqual((await c.models.list()).data.filter((m) => m.id === model).map((m) => m.owned_by), ['org-a']);
    assert.equal((await a.models.list()).data.filter((m) => m.id === model).length, 1, 'the model is listed once');

    // Streaming from the fine-tuned model equals its non-streamed answer.
    const stream = await a.chat.completions.create({ model, ...greedy, stream: true } as never) as unknown as AsyncIterable<OpenAI.ChatCompletionChunk>;
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
    assert.equal(text, tuned.choices[0].message.content);
    assert.deepEqual(server.specFailures, []);
  });
});
