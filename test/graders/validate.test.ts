// validateGrader: the rules across a grader's fields. Its shape (types, enums, required and unknown
// keys) is the route schema's, tested through the routes in test/api/graders.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ApiError } from '../../src/domain/errors.ts';
import { validateGrader, type Grader, type LabelModelGrader, type LeafGrader, type ScoreModelGrader, type StringCheckGrader, type TextSimilarityGrader } from '../../src/graders/index.ts';

/** Asserts a 400 whose param is `param` (and whose message matches `message`). */
function rejects(grader: Grader, param: string, message?: RegExp) {
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

const sc: StringCheckGrader = { type: 'string_check', name: 'sc', input: '{{sample.output_text}}', reference: '{{item.label}}', operation: 'eq' };
const ts: TextSimilarityGrader = { type: 'text_similarity', name: 'ts', input: '{{sample.output_text}}', reference: '{{item.label}}', evaluation_metric: 'bleu' };
const sm: ScoreModelGrader = { type: 'score_model', name: 'sm', model: 'tiny', input: [{ role: 'user', content: 'Rate {{sample.output_text}}' }] };
const lm: LabelModelGrader = { type: 'label_model', name: 'lm', model: 'tiny', input: [{ role: 'user', content: 'Classify {{item.text}}' }], labels: ['pos', 'neg'], passing_labels: ['pos'] };

test('valid graders of every type pass, returned as given', () => {
  for (const g of [sc, ts, sm, { ...sm, range: [0, 10], sampling_params: { temperature: 0.2, seed: 1, max_completions_tokens: 20, reasoning_effort: 'low', top_p: null } }] as Grader[]) {
    assert.equal(validateGrader(g), g);
  }
  const multi: Grader = { type: 'multi', name: 'm', graders: { a: sc, b: ts, c: lm }, calculate_output: '0.5 * a + 0.5 * max(b, c)' };
  assert.equal(validateGrader(multi), multi);
  // The spec's single-grader form: keyed by its name.
  assert.ok(validateGrader({ type: 'multi', name: 'm', graders: sc, calculate_output: 'sc * 2' }));
  // Content parts and message type.
  assert.ok(validateGrader({ ...sm, input: [{ type: 'message', role: 'system', content: { type: 'input_text', text: 'x {{item.a}}' } }, { role: 'user', content: [{ type: 'output_text', text: 'y' }, 'z'] }] }));
});

test('rules across fields: 400 naming the exact param', () => {
  rejects({ ...sc, reference: '{{items.label}}' }, 'grader.reference', /unknown namespace 'items'/);
  rejects({ ...sc, input: '{{sample.text}}' }, 'grader.input', /sample namespace/);
  rejects({ ...ts, evaluation_metric: 'cosine' }, 'grader.evaluation_metric', /cosine' needs an embeddings model/);
  rejects({ ...sm, range: [1, 0] }, 'grader.range', /min < max/);
  rejects({ ...sm, input: [{ role: 'user', content: { type: 'input_text', text: '{{bad}}' } }] }, 'grader.input[0].content.text');
  rejects({ ...sm, input: [{ role: 'user', content: ['ok', '{{bad}}'] }] }, 'grader.input[0].content[1]');
  rejects(lm, 'grader.type', /label_model grader can only be used inside a multi grader/);
});

test('multi: sub-grader params, formula errors with columns, unknown names', () => {
  const multi = (graders: Record<string, LeafGrader> | LeafGrader, calculate_output = 'a'): Grader => ({ type: 'multi', name: 'm', graders, calculate_output });
  rejects(multi({ a: { ...sc, input: '{{nope}}' } }), 'grader.graders.a.input');
  rejects(multi({ a: { ...lm, passing_labels: ['meh'] } }), 'grader.graders.a.passing_labels[0]', /not one of the labels/);
  rejects(multi({ a: { ...sm, name: 'judge', range: [2, 2] } }, 'a'), 'grader.graders.a.range');
  rejects(multi({ 'bad name': sc }, '1'), 'grader.graders', /keys are the formula's variable names/);
  rejects(multi({ ...sc, name: '1st' }, '1'), 'grader.graders.name', /keys are the formula's variable names/);
  rejects(multi({ a: sc }, 'a + (b'), 'grader.calculate_output', /Expected '\)' but found end of formula at column 7/);
  rejects(multi({ a: sc }, 'a + b'), 'grader.calculate_output', /unknown grader 'b' at column 5; the graders are 'a'/);
  rejects(multi({ a: sc }, 'system("ls")'), 'grader.calculate_output', /Unexpected character/);
  rejects(multi({ a: sc }, ''), 'grader.calculate_output', /empty/);
});

test('param prefix for job creation', () => {
  assert.throws(
    () => validateGrader({ ...sc, input: '{{nope}}' }, { param: 'method.reinforcement.grader' }),
    (e: ApiError) => e.param === 'method.reinforcement.grader.input',
  );
});
