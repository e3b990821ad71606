// /v1/fine_tuning/alpha/graders/validate and /run over HTTP with the SDK (responses validated
// against the spec as they arrive), raw requests for what the SDK cannot send.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import type { CallModel, PythonSandboxOptions } from '../../src/graders/index.ts';
import { assertMatches } from '../support/openapi.ts';
import { pythonSandboxSkip } from '../support/python-sandbox.ts';
import { expectError, json, startTestServer, type TestServer } from '../support/server.ts';

const python: PythonSandboxOptions = {
  limits: { wallSeconds: 2, cpuSeconds: 1, memoryBytes: 256 * 1024 * 1024, diskBytes: 8 * 1024 * 1024 },
};
const pythonSkip = pythonSandboxSkip(python);

const judgeCalls: { model: string; organization: string }[] = [];
const judge = (organization: string): CallModel => async (model, messages) => {
  judgeCalls.push({ model, organization });
  const answer = messages.at(-1)!.content.includes('Paris') ? 0.9 : 0.1;
  return { text: JSON.stringify({ steps: [], result: answer }), usage: { prompt_tokens: 20, completion_tokens: 7 } };
};

let server: TestServer;
let client: OpenAI;
before(async () => {
  server = await startTestServer({}, { graders: { callModel: judge, modelExists: async (m) => m === 'judge', python } });
  client = server.client();
});
after(async () => server?.close());

const sc = { type: 'string_check' as const, name: 'exact', input: '{{sample.output_text}}', reference: '{{item.label}}', operation: 'eq' as const };
const sim = { type: 'text_similarity' as const, name: 'sim', input: '{{sample.output_text}}', reference: '{{item.label}}', evaluation_metric: 'bleu' as const };
const scoreModel = {
  type: 'score_model' as const,
  name: 'judge',
  model: 'judge',
  input: [{ role: 'user' as const, content: 'Reference {{item.label}}; answer {{sample.output_text}}' }],
  range: [0, 1],
};

test('validate: echoes the grader (SDK, spec-checked)', async () => {
  for (const grader of [sc, sim, scoreModel, { type: 'multi' as const, name: 'm', graders: sc, calculate_output: 'exact * 2 - 1' }]) {
    const res = await client.fineTuning.alpha.graders.validate({ grader: grader as any });
    assert.deepEqual(res.grader, grader);
  }
  assert.ok(server.exchanges.some((e) => e.schema === 'ValidateGraderResponse'));
  assert.deepEqual(server.specFailures, []);
});

test('validate: a multi grader with a graders map (OpenAI API form; the spec types it as one grader)', async () => {
  const grader = { type: 'multi', name: 'm', graders: { exact: sc, sim }, calculate_output: '0.5 * exact + 0.5 * sim' };
  const res = await server.request('POST', '/v1/fine_tuning/alpha/graders/validate', json({ grader }));
  assert.equal(res.status, 200);
  assert.deepEqual(res.body, { grader });
});

test('run: string_check, text_similarity, score_model, multi (SDK, spec-checked)', async () => {
  const item = { label: 'Paris' };
  const exact = await client.fineTuning.alpha.graders.run({ grader: sc, item, model_sample: 'Paris' });
  assert.equal(exact.reward, 1);
  assert.equal(exact.metadata.type, 'string_check');
  assert.equal(exact.metadata.name, 'exact');
  assert.equal(exact.metadata.errors.other_error, false);
  assert.equal((await client.fineTuning.alpha.graders.run({ grader: sc, item, model_sample: 'London' })).reward, 0);

  const bleu = await client.fineTuning.alpha.graders.run({ grader: sim, item: { label: 'the cat is on the mat' }, model_sample: 'the cat sat on the mat' });
  assert.ok(Math.abs(bleu.reward - ((5 / 6) * (3 / 5) * (1 / 4) * (1 / 6)) ** 0.25) < 1e-9);

  const judged = await client.fineTuning.alpha.graders.run({ grader: scoreModel, item, model_sample: 'Paris' });
  assert.equal(judged.reward, 0.9);
  assert.equal(judged.metadata.sampled_model_name, 'judge');
  assert.equal(judged.metadata.token_usage, 27);
  assert.deepEqual(judged.model_grader_token_usage_per_model, { judge: { prompt_tokens: 20, completion_tokens: 7, total_tokens: 27, cached_tokens: 0 } });
  assert.equal(judgeCalls.at(-1)!.organization, 'org-local');

  const multi = { type: 'multi', name: 'combo', graders: { exact: sc, judge: scoreModel }, calculate_output: 'max(exact, judge) - 0.5 * min(exact, judge)' };
  const combined = await client.fineTuning.alpha.graders.run({ grader: multi as any, item, model_sample: 'Paris' });
  assert.equal(combined.reward, 1 - 0.45);
  assert.deepEqual(combined.sub_rewards, { exact: 1, judge: 0.9 });
  assert.equal(combined.metadata.type, 'multi');

  // No item: templates over item fail softly (score 0, invalid_variable_error).
  const noItem = await client.fineTuning.alpha.graders.run({ grader: sc, model_sample: 'Paris' });
  assert.equal(noItem.reward, 0);
  assert.equal(noItem.metadata.errors.invalid_variable_error, true);
  assert.ok(server.exchanges.some((e) => e.schema === 'RunGraderResponse'));
  assert.deepEqual(server.specFailures, []);
});

test('run: python graders in the sandbox (a correct one, one that raises)', { skip: pythonSkip }, async () => {
  const ok = await client.fineTuning.alpha.graders.run({
    grader: { type: 'python', name: 'py', source: 'def grade(sample, item):\n    return 1.0 if sample["output_text"] == item["label"] else 0.0\n' },
    item: { label: 'Paris' },
    model_sample: 'Paris',
  });
  assert.equal(ok.reward, 1);
  const raises = await client.fineTuning.alpha.graders.run({
    grader: { type: 'python', name: 'py', source: 'def grade(sample, item):\n    return 1 / 0\n' },
    model_sample: 'x',
  });
  assert.equal(raises.reward, 0);
  assert.equal(raises.metadata.errors.python_grader_runtime_error, true);
  assert.match(raises.metadata.errors.python_grader_runtime_error_details!, /ZeroDivisionError/);
  assert.deepEqual(server.specFailures, []);
});

test('validate: python source that does not parse, or has no grade(), is a 400 on grader.source', { skip: pythonSkip }, async () => {
  const post = (source: string) => server.request('POST', '/v1/fine_tuning/alpha/graders/validate', json({ grader: { type: 'python', name: 'py', source } }));
  expectError(await post('def grade(sample, item)\n    return 1\n'), 400, { param: 'grader.source', message: /SyntaxError: expected ':' \(line 1/ });
  expectError(await post('x = 1\n'), 400, { param: 'grader.source', message: /grade\(sample, item\)/ });
  // Parsing runs nothing: a module-level infinite loop validates fine.
  assert.equal((await post('while True:\n    pass\ndef grade(s, i):\n    return 1\n')).status, 200);
});

test('bad graders and bodies: 400 naming the param', async () => {
  const validate = (body: unknown) => server.request('POST', '/v1/fine_tuning/alpha/graders/validate', json(body));
  const run = (body: unknown) => server.request('POST', '/v1/fine_tuning/alpha/graders/run', json(body));
  expectError(await validate({}), 400, { param: 'grader', code: 'missing_required_parameter' });
  expectError(await validate({ grader: sc, extra: 1 }), 400, { param: 'extra' });
  expectError(await validate({ grader: { ...sc, operation: 'contains' } }), 400, { param: 'grader.operation' });
  expectError(await validate({ grader: { ...sim, evaluation_metric: 'cosine' } }), 400, { param: 'grader.evaluation_metric', message: /embeddings model/ });
  expectError(await validate({ grader: { ...scoreModel, model: 'gpt-4o' } }), 400, { param: 'grader.model', code: 'model_not_found' });
  expectError(
    await validate({ grader: { type: 'multi', name: 'm', graders: { a: { ...scoreModel, model: 'nope' } }, calculate_output: 'a' } }),
    400,
    { param: 'grader.graders.a.model' },
  );
  expectError(
    await validate({ grader: { type: 'label_model', name: 'l', model: 'judge', input: [{ role: 'user', content: 'x' }], labels: ['a'], passing_labels: ['a'] } }),
    400,
    { param: 'grader.type', message: /only be used inside a multi grader/ },
  );
  expectError(await validate({ grader: { type: 'multi', name: 'm', graders: { a: sc }, calculate_output: 'a +* 2' } }), 400, {
    param: 'grader.calculate_output',
    message: /found '\*' at column 4/,
  });
  expectError(await run({ grader: sc }), 400, { param: 'model_sample' });
  expectError(await run({ grader: sc, model_sample: 3 }), 400, { param: 'model_sample' });
  expectError(await run({ grader: sc, model_sample: 'x', item: 'label' }), 400, { param: 'item' });
  expectError(await run({ grader: { ...sc, input: '{{answer}}' }, model_sample: 'x' }), 400, { param: 'grader.input' });
  // Through the SDK: a BadRequestError carrying the param.
  await assert.rejects(
    client.fineTuning.alpha.graders.run({ grader: { ...sc, operation: 'bogus' as 'eq' }, model_sample: 'x' }),
    (e: any) => e instanceof OpenAI.BadRequestError && e.param === 'grader.operation',
  );
});

test("grader shapes: the route schema (OpenAI's spec, closed) names the param", async () => {
  const validate = (grader: unknown) => server.request('POST', '/v1/fine_tuning/alpha/graders/validate', json({ grader }));
  const labels = { type: 'label_model', name: 'l', model: 'judge', input: [{ role: 'user', content: 'x' }], labels: ['a', 'b'], passing_labels: ['a'] };
  const multi = (graders: unknown) => ({ type: 'multi', name: 'm', graders, calculate_output: 'a' });
  const cases: [unknown, string, string, RegExp?][] = [
    [null, 'grader', 'invalid_type', /expected an object/],
    [{ ...sc, type: 'nope' }, 'grader.type', 'invalid_value', /expected one of 'string_check'/],
    [{ ...sc, name: undefined }, 'grader.name', 'missing_required_parameter'],
    [{ ...sc, input: 3 }, 'grader.input', 'invalid_type', /expected a string/],
    [{ ...sc, extra: 1 }, 'grader.extra', 'unknown_parameter'],
    [{ ...sim, evaluation_metric: 'rouge_6' }, 'grader.evaluation_metric', 'invalid_value'],
    [{ ...sim, pass_threshold: 'x' }, 'grader.pass_threshold', 'invalid_type'],
    [{ ...scoreModel, range: [0] }, 'grader.range', 'invalid_value'],
    [{ ...scoreModel, model: '' }, 'grader.model', 'invalid_value'],
    [{ ...scoreModel, input: [] }, 'grader.input', 'invalid_value'],
    [{ ...scoreModel, input: [{ role: 'robot', content: 'x' }] }, 'grader.input[0].role', 'invalid_value'],
    [{ ...scoreModel, input: [{ role: 'user', content: [{ type: 'input_image', image_url: 'http://x' }] }] }, 'grader.input[0].content[0].type', 'invalid_value', /'input_text', 'output_text'/],
    [{ ...scoreModel, input: [{ role: 'user', content: { type: 'input_text' } }] }, 'grader.input[0].content.text', 'missing_required_parameter'],
    [{ ...scoreModel, sampling_params: { temperature: 3 } }, 'grader.sampling_params.temperature', 'invalid_value'],
    [{ ...scoreModel, sampling_params: { max_completions_tokens: 0 } }, 'grader.sampling_params.max_completions_tokens', 'invalid_value'],
    [{ ...scoreModel, sampling_params: { n: 2 } }, 'grader.sampling_params.n', 'unknown_parameter'],
    [{ type: 'python', name: 'p', source: '' }, 'grader.source', 'invalid_value'],
    [multi({ a: { ...sc, operation: 'x' } }), 'grader.graders.a.operation', 'invalid_value'],
    [multi({ a: { ...labels, labels: [] } }), 'grader.graders.a.labels', 'invalid_value'],
    [multi({ a: { ...labels, labels: ['x', 'x'] } }), 'grader.graders.a.labels', 'invalid_value', /duplicate/],
    [multi({ a: multi({ b: sc }) }), 'grader.graders.a.type', 'invalid_value', /'label_model'\.$/],
    [multi({}), 'grader.graders', 'invalid_value', /fewer than 1 properties/],
    [multi([sc]), 'grader.graders', 'invalid_type'],
    [{ ...multi({ a: sc }), calculate_output: undefined }, 'grader.calculate_output', 'missing_required_parameter'],
  ];
  for (const [grader, param, code, message] of cases) expectError(await validate(grader), 400, { param, code, message });
  // Label models are checked as graders inside multi.
  assert.equal((await validate({ ...multi({ a: labels }) })).status, 200);
});

test('creating a reinforcement job validates its grader', async () => {
  const res = await server.request(
    'POST',
    '/v1/fine_tuning/jobs',
    json({ model: 'tiny-test', training_file: 'file-x', method: { type: 'reinforcement', reinforcement: { grader: { ...sc, operation: 'contains' } } } }),
  );
  expectError(res, 400, { param: 'method.reinforcement.grader.operation' });
  const multi = { type: 'multi', name: 'm', graders: { a: sc }, calculate_output: 'a / b' };
  expectError(
    await server.request('POST', '/v1/fine_tuning/jobs', json({ model: 'tiny-test', training_file: 'file-x', method: { type: 'reinforcement', reinforcement: { grader: multi } } })),
    400,
    { param: 'method.reinforcement.grader.calculate_output', message: /unknown grader 'b' at column 5/ },
  );
  // A valid grader gets past grader validation (the file is what is missing here).
  expectError(
    await server.request('POST', '/v1/fine_tuning/jobs', json({ model: 'tiny-test', training_file: 'file-x', method: { type: 'reinforcement', reinforcement: { grader: sc } } })),
    400,
    { param: 'training_file' },
  );
});

test('score_model served by our own inference (the bundled tiny model)', async () => {
  const tiny = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../models/tiny-llama');
  const own = await startTestServer();
  try {
    fs.cpSync(tiny, path.join(own.modelsDir, 'tiny-llama'), { recursive: true });
    const grader = { ...scoreModel, model: 'tiny-llama', sampling_params: { max_completions_tokens: 8, temperature: 0 } };
    const res = await own.client().fineTuning.alpha.graders.run({ grader, item: { label: 'Paris' }, model_sample: 'Paris' });
    assert.equal(res.metadata.sampled_model_name, 'tiny-llama');
    assert.ok(res.reward >= 0 && res.reward <= 1);
    const usage = res.model_grader_token_usage_per_model['tiny-llama'] as { prompt_tokens: number; completion_tokens: number };
    assert.ok(usage.prompt_tokens > 10 && usage.completion_tokens >= 1 && usage.completion_tokens <= 8, JSON.stringify(usage));
    assert.equal(res.metadata.token_usage, usage.prompt_tokens + usage.completion_tokens);
    // A random tiny model does not answer JSON: a parse error scoring 0 (not a server error).
    if (res.metadata.errors.model_grader_parse_error) assert.equal(res.reward, 0);
    assert.equal(res.metadata.errors.model_grader_server_error, false, String(res.metadata.errors.model_grader_server_error_details));
    expectError(await own.request('POST', '/v1/fine_tuning/alpha/graders/run', json({ grader: { ...grader, model: 'missing' }, model_sample: 'x' })), 400, {
      param: 'grader.model',
    });
    assert.deepEqual(own.specFailures, []);
  } finally {
    await own.close();
  }
});

test('RunGraderResponse of a map-form multi grader matches the spec', async () => {
  const res = await server.request('POST', '/v1/fine_tuning/alpha/graders/run', json({ grader: { type: 'multi', name: 'm', graders: { exact: sc, sim }, calculate_output: 'exact + sim' }, item: { label: 'a b c d' }, model_sample: 'a b c d' }));
  assert.equal(res.status, 200);
  assertMatches('RunGraderResponse', res.body);
  assert.equal(res.body.reward, 2);
});
