import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ApiError } from '../../src/domain/errors.ts';
import { validateGrader } from '../../src/graders/index.ts';

/** Asserts a 400 whose param is `param` (and whose message matches `message`). */
function rejects(grader: unknown, param: string, message?: RegExp) {
  assert.throws(
    () => validateGrader(grader),
    (e: unknown) => {
      assert.ok(e instanceof ApiError, String(e));
      assert.equal(e.status, 400);
      assert.equal(e.param, param, e.message);
      if (message) assert.match(e.message, message);
      return true;
    },
  );
}

const sc = { type: 'string_check', name: 'sc', input: '{{sample.output_text}}', reference: '{{item.label}}', operation: 'eq' };
const ts = { type: 'text_similarity', name: 'ts', input: '{{sample.output_text}}', reference: '{{item.label}}', evaluation_metric: 'bleu' };
const sm = { type: 'score_model', name: 'sm', model: 'tiny', input: [{ role: 'user', content: 'Rate {{sample.output_text}}' }] };
const lm = { type: 'label_model', name: 'lm', model: 'tiny', input: [{ role: 'user', content: 'Classify {{item.text}}' }], labels: ['pos', 'neg'], passing_labels: ['pos'] };

test('valid graders of every type pass, returned as given', () => {
  for (const g of [sc, ts, sm, { ...sm, range: [0, 10], sampling_params: { temperature: 0.2, seed: 1, max_completions_tokens: 20, reasoning_effort: 'low', top_p: null } }]) {
    assert.equal(validateGrader(g), g);
  }
  const multi = { type: 'multi', name: 'm', graders: { a: sc, b: ts, c: lm }, calculate_output: '0.5 * a + 0.5 * max(b, c)' };
  assert.equal(validateGrader(multi), multi);
  // The spec's single-grader form: keyed by its name.
  assert.ok(validateGrader({ type: 'multi', name: 'm', graders: sc, calculate_output: 'sc * 2' }));
  // Content parts and message type.
  assert.ok(validateGrader({ ...sm, input: [{ type: 'message', role: 'system', content: { type: 'input_text', text: 'x {{item.a}}' } }, { role: 'user', content: [{ type: 'output_text', text: 'y' }, 'z'] }] }));
});

test('bad graders: 400 naming the exact param', () => {
  rejects(null, 'grader', /expected a grader object/);
  rejects({ ...sc, type: 'nope' }, 'grader.type', /expected one of 'string_check'/);
  rejects({ ...sc, operation: 'contains' }, 'grader.operation', /'eq', 'ne', 'like', 'ilike'/);
  rejects({ ...sc, name: undefined }, 'grader.name', /Missing required parameter/);
  rejects({ ...sc, input: 3 }, 'grader.input', /expected a string/);
  rejects({ ...sc, extra: 1 }, 'grader.extra', /Unknown parameter/);
  rejects({ ...sc, reference: '{{items.label}}' }, 'grader.reference', /unknown namespace 'items'/);
  rejects({ ...sc, input: '{{sample.text}}' }, 'grader.input', /sample namespace/);
  rejects({ ...ts, evaluation_metric: 'rouge_6' }, 'grader.evaluation_metric');
  rejects({ ...ts, evaluation_metric: 'cosine' }, 'grader.evaluation_metric', /cosine' needs an embeddings model/);
  rejects({ ...ts, pass_threshold: 'x' }, 'grader.pass_threshold');
  rejects({ ...sm, range: [1, 0] }, 'grader.range', /min < max/);
  rejects({ ...sm, range: [0] }, 'grader.range');
  rejects({ ...sm, model: '' }, 'grader.model');
  rejects({ ...sm, input: [] }, 'grader.input', /non-empty array/);
  rejects({ ...sm, input: [{ role: 'robot', content: 'x' }] }, 'grader.input.0.role');
  rejects({ ...sm, input: [{ role: 'user', content: [{ type: 'input_image', image_url: 'http://x' }] }] }, 'grader.input.0.content.0.type', /text only/);
  rejects({ ...sm, input: [{ role: 'user', content: { type: 'input_text', text: '{{bad}}' } }] }, 'grader.input.0.content.text');
  rejects({ ...sm, sampling_params: { temperature: 3 } }, 'grader.sampling_params.temperature');
  rejects({ ...sm, sampling_params: { max_completions_tokens: 0 } }, 'grader.sampling_params.max_completions_tokens');
  rejects({ ...sm, sampling_params: { n: 2 } }, 'grader.sampling_params.n', /Unknown parameter/);
  rejects(lm, 'grader.type', /label_model grader can only be used inside a multi grader/);
});

test('multi: sub-grader params, formula errors with columns, unknown names', () => {
  const multi = (graders: unknown, calculate_output = 'a') => ({ type: 'multi', name: 'm', graders, calculate_output });
  rejects(multi({ a: { ...sc, operation: 'x' } }), 'grader.graders.a.operation');
  rejects(multi({ a: { ...lm, passing_labels: ['meh'] } }), 'grader.graders.a.passing_labels.0', /not one of the labels/);
  rejects(multi({ a: { ...lm, labels: [] } }), 'grader.graders.a.labels');
  rejects(multi({ a: { ...lm, labels: ['x', 'x'] } }), 'grader.graders.a.labels.1', /twice/);
  rejects(multi({ a: multi({ b: sc }, 'b') }), 'grader.graders.a.type', /cannot contain another multi/);
  rejects(multi({}), 'grader.graders', /at least one/);
  rejects(multi([sc]), 'grader.graders');
  rejects(multi({ 'bad name': sc }, '1'), 'grader.graders', /keys are the formula's variable names/);
  rejects(multi({ a: sc }, 'a + (b'), 'grader.calculate_output', /Expected '\)' but found end of formula at column 7/);
  rejects(multi({ a: sc }, 'a + b'), 'grader.calculate_output', /unknown grader 'b' at column 5; the graders are 'a'/);
  rejects(multi({ a: sc }, 'system("ls")'), 'grader.calculate_output', /Unexpected character/);
  rejects(multi({ a: sc }, ''), 'grader.calculate_output', /empty/);
  rejects({ ...multi({ a: sc }), calculate_output: undefined }, 'grader.calculate_output', /Missing/);
});

test('param prefix for job creation', () => {
  assert.throws(
    () => validateGrader({ ...sc, operation: 'x' }, { param: 'method.reinforcement.grader' }),
    (e: ApiError) => e.param === 'method.reinforcement.grader.operation',
  );
});
