// POST /v1/completions (legacy) through the official SDK over real HTTP, responses and streamed
// chunks validated against OpenAI's spec, on the bundled tiny model (random weights: structure
// and determinism are checked, not wording).
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type OpenAI from 'openai';
import { loadTokenizer } from '../../src/engine/data/tokenizer.ts';
import { assertMatches } from '../support/openapi.ts';
import { expectError, json, startTestServer, type TestServer } from '../support/server.ts';
import { BASE_MODEL, MODELS_DIR } from '../e2e/support.ts';

/** Both of tiny-llama's end tokens suppressed: generation runs to max_tokens. */
const NO_EOS = { 677: -100, 679: -100 };
const PROMPT = 'Arr, the treasure be buried';

describe('POST /v1/completions', () => {
  let server: TestServer;
  let client: OpenAI;
  before(async () => {
    server = await startTestServer({ modelsDir: MODELS_DIR });
    client = server.client();
  });
  after(() => server?.close());

  const complete = (body: Record<string, unknown>) =>
    client.completions.create({ model: BASE_MODEL, prompt: PROMPT, ...body } as never) as unknown as Promise<OpenAI.Completion>;

  it('answers with a text_completion: usage counts the tokenizer’s prompt tokens, max_tokens defaults to 16', async () => {
    const res = await complete({ seed: 1, logit_bias: NO_EOS });
    assert.equal(res.object, 'text_completion');
    assert.equal(res.model, BASE_MODEL);
    assert.equal(res.choices[0].finish_reason, 'length');
    const tokenizer = loadTokenizer(path.join(MODELS_DIR, BASE_MODEL));
    assert.equal(res.usage!.prompt_tokens, tokenizer.encode(PROMPT, { addSpecialTokens: true }).length);
    assert.equal(res.usage!.completion_tokens, 16);
    assert.equal(res.usage!.total_tokens, res.usage!.prompt_tokens + 16);
  });

  it('same seed, same text; temperature 0 deterministic; stop cuts before the stop string', async () => {
    const [x, y] = await Promise.all([complete({ seed: 7, max_tokens: 10 }), complete({ seed: 7, max_tokens: 10 })]);
    assert.equal(x.choices[0].text, y.choices[0].text);
    const greedy = (await complete({ temperature: 0, max_tokens: 20, logit_bias: NO_EOS })).choices[0].text;
    assert.equal((await complete({ temperature: 0, max_tokens: 20, logit_bias: NO_EOS })).choices[0].text, greedy);
    const stop = greedy.slice(5, 8);
    const cut = await complete({ temperature: 0, max_tokens: 20, stop: [stop], logit_bias: NO_EOS });
    assert.equal(cut.choices[0].text, greedy.slice(0, greedy.indexOf(stop)));
    assert.equal(cut.choices[0].finish_reason, 'stop');
  });

  it('several prompts × n: choices numbered prompt-major, the prompt tokens counted once each', async () => {
    const prompts = ['Ahoy', 'Yo ho ho and a bottle of'];
    const res = await complete({ prompt: prompts, n: 2, max_tokens: 4, seed: 3, logit_bias: NO_EOS });
    assert.deepEqual(res.choices.map((c) => c.index), [0, 1, 2, 3]);
    const tokenizer = loadTokenizer(path.join(MODELS_DIR, BASE_MODEL));
    assert.equal(res.usage!.prompt_tokens, prompts.reduce((n, p) => n + tokenizer.encode(p, { addSpecialTokens: true }).length, 0));
    assert.equal(res.usage!.completion_tokens, 16);
    const single = await complete({ prompt: prompts[1], n: 2, max_tokens: 4, seed: 3, logit_bias: NO_EOS });
    assert.equal(single.usage!.prompt_tokens, tokenizer.encode(prompts[1], { addSpecialTokens: true }).length);
    // Token-id prompts are taken as they are.
    const ids = tokenizer.encode(PROMPT, { addSpecialTokens: true });
    const byIds = await complete({ prompt: ids, temperature: 0, max_tokens: 6 });
    assert.equal(byIds.choices[0].text, (await complete({ temperature: 0, max_tokens: 6 })).choices[0].text);
  });

  it('echo puts the prompt in front; logprobs has the legacy shape', async () => {
    const plain = await complete({ seed: 2, max_tokens: 5, logit_bias: NO_EOS });
    const echoed = await complete({ seed: 2, max_tokens: 5, echo: true, logit_bias: NO_EOS });
    assert.equal(echoed.choices[0].text, PROMPT + plain.choices[0].text);
    const withLogprobs = await complete({ seed: 2, max_tokens: 5, logprobs: 3, logit_bias: NO_EOS });
    assert.equal(withLogprobs.choices[0].text, plain.choices[0].text);
    const lp = withLogprobs.choices[0].logprobs!;
    assert.equal(lp.tokens!.length, 5);
    assert.equal(lp.token_logprobs!.length, 5);
    assert.equal(lp.text_offset!.length, 5);
    assert.equal(lp.text_offset![0], 0);
    for (let i = 0; i < 5; i++) {
      assert.ok(lp.token_logprobs![i] <= 0);
      const top = Object.values(lp.top_logprobs![i]);
      assert.ok(top.length >= 1 && top.length <= 3);
      assert.ok(Math.max(...top) >= lp.token_logprobs![i] - 1e-6);
    }
  });

  it('stream: text_completion chunks that match the spec, the same text as non-streamed, then usage', async () => {
    const body = { seed: 4, max_tokens: 8, n: 2, temperature: 1 };
    const whole = await complete(body);
    const stream = await client.completions.create({ model: BASE_MODEL, prompt: PROMPT, ...body, stream: true, stream_options: { include_usage: true } });
    const texts = ['', ''];
    const finishReasons: (string | null)[][] = [[], []];
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of stream) {
      assertMatches('CreateCompletionStreamChunk', chunk);
      assert.equal(chunk.object, 'text_completion');
      if (chunk.choices.length === 0) usage = chunk.usage;
      for (const c of chunk.choices) {
        texts[c.index] += c.text;
        finishReasons[c.index].push(c.finish_reason);
      }
    }
    assert.deepEqual(texts, whole.choices.map((c) => c.text));
    assert.deepEqual(usage, whole.usage);
    // Non-streamed, every choice says why it ended; streamed, only each choice's last chunk does,
    // and says the same.
    for (const [index, reasons] of finishReasons.entries()) {
      assert.ok(['stop', 'length'].includes(whole.choices[index].finish_reason), `choice ${index}: ${whole.choices[index].finish_reason}`);
      assert.ok(reasons.length >= 2, `choice ${index}: ${reasons.length} chunks`);
      assert.deepEqual(reasons, [...reasons.slice(0, -1).map(() => null), whole.choices[index].finish_reason], `choice ${index}`);
    }
  });

  it('bad input is a 400 naming the parameter; unknown models are a 404', async () => {
    const post = (body: unknown) => server.request('POST', '/v1/completions', json(body));
    const ok = { model: BASE_MODEL, prompt: PROMPT };
    expectError(await post({ model: BASE_MODEL }), 400, { param: 'prompt', code: 'missing_required_parameter' });
    expectError(await post({ ...ok, prompt: [1, 'a'] }), 400, { param: 'prompt' });
    expectError(await post({ ...ok, prompt: [99999] }), 400, { param: 'prompt' });
    expectError(await post({ ...ok, suffix: 'the end' }), 400, { param: 'suffix', code: 'unsupported_parameter' });
    expectError(await post({ ...ok, temperature: -1 }), 400, { param: 'temperature' });
    expectError(await post({ ...ok, n: 0 }), 400, { param: 'n' });
    expectError(await post({ ...ok, logprobs: 6 }), 400, { param: 'logprobs' });
    expectError(await post({ ...ok, echo: true, logprobs: 1 }), 400, { param: 'echo' });
    expectError(await post({ ...ok, best_of: 3 }), 400, { param: 'best_of' });
    expectError(await post({ ...ok, messages: [] }), 400, { param: 'messages', code: 'unknown_parameter' });
    expectError(await post({ ...ok, model: 'ft:tiny-llama:someone-else::abcdefgh' }), 404, { param: 'model', code: 'model_not_found' });
    assert.deepEqual(server.specFailures, []);
  });

  it('garbage on both endpoints is a 4xx in the envelope, never a 5xx', async () => {
    const msgs = [{ role: 'user', content: 'x' }];
    const bodies: unknown[] = [
      null, 'text', [], 5, {}, { model: {} }, { model: BASE_MODEL, messages: 'x' }, { model: BASE_MODEL, messages: [null] },
      { model: BASE_MODEL, messages: [{ role: 'user', content: [null] }] }, { model: BASE_MODEL, messages: [{ role: 'assistant', tool_calls: [{}] }] },
      { model: BASE_MODEL, messages: msgs, tools: [null] }, { model: BASE_MODEL, messages: msgs, tools: {} },
      { model: BASE_MODEL, messages: msgs, tools: [{ type: 'function', function: { name: 'a b' } }] },
      { model: BASE_MODEL, messages: msgs, response_format: { type: 'json_schema', json_schema: { name: 'x', schema: 5 } } },
      { model: BASE_MODEL, messages: msgs, response_format: 'json' }, { model: BASE_MODEL, messages: msgs, tools: [], tool_choice: {} },
      { model: BASE_MODEL, messages: msgs, n: 'x' }, { model: BASE_MODEL, messages: msgs, seed: 1.5 }, { model: BASE_MODEL, messages: msgs, stream: 'yes' },
      { model: BASE_MODEL, messages: msgs, stream: true, stream_options: 5 }, { model: BASE_MODEL, messages: msgs, stream: true, stream_options: { x: 1 } },
      { model: BASE_MODEL, messages: msgs, logprobs: 'a' }, { model: BASE_MODEL, messages: msgs, stop: [1] }, { model: BASE_MODEL, messages: msgs, logit_bias: [] },
      { model: BASE_MODEL, messages: msgs, max_completion_tokens: -1 }, { model: BASE_MODEL, messages: [{ role: 'user', content: 'x'.repeat(5000) }] },
      { model: BASE_MODEL, prompt: {} }, { model: BASE_MODEL, prompt: [[]] }, { model: BASE_MODEL, prompt: [] }, { model: BASE_MODEL, prompt: 'x', max_tokens: 1e9 },
      { model: BASE_MODEL, prompt: 'x'.repeat(5000) }, { model: BASE_MODEL, prompt: 'x', stream_options: { include_usage: true } },
    ];
    const raw = ['{', '\u0000', ''];
    for (const path of ['/v1/chat/completions', '/v1/completions']) {
      for (const body of [...bodies.map((b) => JSON.stringify(b)), ...raw]) {
        const res = await server.request('POST', path, { body, headers: { 'content-type': 'application/json' } });
        assert.ok(res.status >= 400 && res.status < 500, `${path} ${body.slice(0, 120)} → ${res.status} ${JSON.stringify(res.body).slice(0, 200)}`);
        assertMatches('ErrorResponse', res.body);
      }
    }
  });

  it('closing the server ends streams in flight (an error event, then [DONE])', async () => {
    const other = await startTestServer({ modelsDir: MODELS_DIR });
    const res = await fetch(`${other.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: BASE_MODEL, prompt: PROMPT, max_tokens: 480, stream: true, logit_bias: NO_EOS }),
    });
    const reader = res.body!.getReader();
    await reader.read();
    const closing = other.close();
    let text = '';
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    await closing;
    assert.match(text, /data: \[DONE\]\n\n$/);
    const events = text.split('\n\n').filter((e) => e.startsWith('data: {'));
    assert.ok('error' in JSON.parse(events.at(-1)!.slice(6)));
  });

  it('a client that disconnects mid-stream does not hold up the next request', async () => {
    const controller = new AbortController();
    const res = await fetch(`${server.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: BASE_MODEL, prompt: PROMPT, max_tokens: 400, stream: true, logit_bias: NO_EOS }),
      signal: controller.signal,
    });
    const reader = res.body!.getReader();
    await reader.read();
    controller.abort();
    await reader.read().catch(() => {});
    const next = await complete({ max_tokens: 3 });
    assert.equal(next.choices.length, 1);

    // The same without streaming: the request is let go, the server goes on serving.
    const leaving = new AbortController();
    const pending = fetch(`${server.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: BASE_MODEL, messages: [{ role: 'user', content: 'x' }], max_tokens: 480, logit_bias: NO_EOS }),
      signal: leaving.signal,
    });
    setTimeout(() => leaving.abort(), 100);
    await assert.rejects(pending, { name: 'AbortError' });
    assert.equal((await complete({ max_tokens: 3 })).choices.length, 1);
  });
});
