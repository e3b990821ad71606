import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ApiError } from '../../src/domain/errors.ts';
import {
  runGrader,
  type CallModel,
  type GraderModelMessage,
  type LabelModelGrader,
  type MultiGrader,
  type RunGraderResponse,
  type ScoreModelGrader,
  type StringCheckGrader,
  type TextSimilarityGrader,
} from '../../src/graders/index.ts';
import type { EvaluationMetric } from '../../src/graders/similarity.ts';

const sc = (operation: StringCheckGrader['operation'], input = '{{sample.output_text}}', reference = '{{item.label}}'): StringCheckGrader => ({ type: 'string_check', name: 'sc', input, reference, operation });

function assertClean(res: RunGraderResponse) {
  for (const [k, v] of Object.entries(res.metadata.errors)) assert.ok(v === false || v === null, `${k} = ${v}`);
}

test('string_check: eq, ne, like, ilike → 1 or 0', async () => {
  const item = { label: 'Paris' };
  const cases: [StringCheckGrader['operation'], string, number][] = [
    ['eq', 'Paris', 1], ['eq', 'paris', 0], ['ne', 'paris', 1], ['ne', 'Paris', 0],
    ['like', 'It is Paris.', 1], ['like', 'It is paris.', 0], ['ilike', 'IT IS PARIS', 1], ['ilike', 'London', 0],
  ];
  for (const [op, sample, expected] of cases) {
    const res = await runGrader(sc(op), { item, modelSample: sample });
    assert.equal(res.reward, expected, `${op} ${sample}`);
    assertClean(res);
    assert.equal(res.metadata.type, 'string_check');
    assert.equal(res.metadata.name, 'sc');
    assert.equal(res.metadata.token_usage, null);
    assert.deepEqual(res.sub_rewards, {});
    assert.ok(res.metadata.execution_time >= 0);
  }
});

test('templates: output_json paths, missing variables and non-JSON samples score 0 with their error flag', async () => {
  const g = sc('eq', '{{sample.output_json.answer}}', '{{item.expected.value}}');
  assert.equal((await runGrader(g, { item: { expected: { value: 42 } }, modelSample: '{"answer": 42}' })).reward, 1);
  const notJson = await runGrader(g, { item: { expected: { value: 42 } }, modelSample: 'forty-two' });
  assert.equal(notJson.reward, 0);
  assert.equal(notJson.metadata.errors.sample_parse_error, true);
  const missing = await runGrader(g, { item: {}, modelSample: '{"answer": 42}' });
  assert.equal(missing.reward, 0);
  assert.equal(missing.metadata.errors.invalid_variable_error, true);
  assert.match(String(missing.metadata.scores.error), /expected/);
});

test('text_similarity: metric value as reward, pass_threshold reported', async () => {
  const g: TextSimilarityGrader = { type: 'text_similarity', name: 'ts', input: '{{sample.output_text}}', reference: '{{item.ref}}', evaluation_metric: 'rouge_l', pass_threshold: 0.8 };
  const res = await runGrader(g, { item: { ref: 'the cat is on the mat' }, modelSample: 'the cat sat on the mat' });
  assert.ok(Math.abs(res.reward - 5 / 6) < 1e-9);
  assert.equal(res.metadata.scores.passed, true);
  assert.ok(Math.abs((res.metadata.scores.rouge_l as number) - 5 / 6) < 1e-9);
  for (const metric of <EvaluationMetric[]>['fuzzy_match', 'bleu', 'gleu', 'meteor', 'rouge_1', 'rouge_2', 'rouge_3', 'rouge_4', 'rouge_5', 'rouge_l']) {
    const same = await runGrader({ ...g, evaluation_metric: metric, pass_threshold: undefined }, { item: { ref: 'a b c d e f' }, modelSample: 'a b c d e f' });
    assert.ok(same.reward > 0.99 && same.reward <= 1, `${metric}: ${same.reward}`);
  }
  // cosine: refused without embeddings, computed with them.
  const cos: TextSimilarityGrader = { ...g, evaluation_metric: 'cosine', pass_threshold: undefined };
  await assert.rejects(runGrader(cos, { modelSample: 'x', item: { ref: 'y' } }), (e: ApiError) => e.param === 'grader.evaluation_metric');
  const embed = async (texts: string[]) => texts.map((t) => [t.length, 1]);
  const res2 = await runGrader(cos, { modelSample: 'ab', item: { ref: 'ab' } }, { embed });
  assert.ok(Math.abs(res2.reward - 1) < 1e-12);
});

/** A fake grader model that answers `reply` and records what it was asked. */
function fakeModel(reply: string | ((messages: GraderModelMessage[]) => string)) {
  const calls: { model: string; messages: GraderModelMessage[]; sampling: object }[] = [];
  const callModel: CallModel = async (model, messages, sampling) => {
    calls.push({ model, messages, sampling });
    return { text: typeof reply === 'string' ? reply : reply(messages), usage: { prompt_tokens: 10, completion_tokens: 5 } };
  };
  return { calls, callModel };
}

const scoreGrader = (extra: Partial<ScoreModelGrader> = {}): ScoreModelGrader => ({
  type: 'score_model',
  name: 'judge',
  model: 'judge-model',
  input: [{ role: 'user', content: 'Reference: {{item.label}}\nAnswer: {{sample.output_text}}' }],
  ...extra,
});

test('score_model: JSON result clipped to range, usage per model, rendered prompt', async () => {
  const fake = fakeModel('```json\n{"steps": [{"description": "d", "conclusion": "c"}], "result": 0.7}\n```');
  const res = await runGrader(scoreGrader({ sampling_params: { temperature: 0.5, seed: 3, max_completions_tokens: 50 } }), { item: { label: 'Paris' }, modelSample: 'Paris!' }, { callModel: fake.callModel });
  assert.equal(res.reward, 0.7);
  assertClean(res);
  assert.equal(res.metadata.sampled_model_name, 'judge-model');
  assert.equal(res.metadata.token_usage, 15);
  assert.deepEqual(res.model_grader_token_usage_per_model, { 'judge-model': { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15, cached_tokens: 0 } });
  assert.deepEqual(res.metadata.scores.steps, [{ description: 'd', conclusion: 'c' }]);
  const call = fake.calls[0];
  assert.equal(call.model, 'judge-model');
  assert.deepEqual(call.sampling, { temperature: 0.5, top_p: undefined, seed: 3, max_tokens: 50 });
  assert.equal(call.messages[0].role, 'system');
  assert.match(call.messages[0].content, /"result": <a number from 0 to 1>/);
  assert.equal(call.messages[1].content, 'Reference: Paris\nAnswer: Paris!');

  const clip = async (reply: string, range?: [number, number]) =>
    runGrader(scoreGrader(range ? { range } : {}), { item: { label: 'x' }, modelSample: 'y' }, { callModel: fakeModel(reply).callModel });
  assert.equal((await clip('{"result": 7}')).reward, 1);
  assert.equal((await clip('{"result": -2}')).reward, 0);
  assert.equal((await clip('{"result": 7}', [0, 10])).reward, 7);
  assert.equal((await clip('{"result": 12}', [0, 10])).reward, 10);
  assert.equal((await clip(' 0.25 ')).reward, 0.25);
  for (const bad of ['{"result": "high"}', 'I think it is good', '{"steps": []}']) {
    const r = await clip(bad);
    assert.equal(r.reward, 0, bad);
    assert.equal(r.metadata.errors.model_grader_parse_error, true);
    assert.equal(r.metadata.token_usage, 15);
  }
});

test('score_model: a failing model is a server error scoring 0; no model service likewise', async () => {
  const callModel: CallModel = async () => {
    throw new Error('out of memory');
  };
  const res = await runGrader(scoreGrader(), { item: { label: 'x' }, modelSample: 'y' }, { callModel });
  assert.equal(res.reward, 0);
  assert.equal(res.metadata.errors.model_grader_server_error, true);
  assert.equal(res.metadata.errors.model_grader_server_error_details, 'out of memory');
  const none = await runGrader(scoreGrader(), { item: { label: 'x' }, modelSample: 'y' });
  assert.equal(none.metadata.errors.model_grader_server_error, true);
});

const labelGrader: LabelModelGrader = {
  type: 'label_model',
  name: 'sentiment',
  model: 'judge-model',
  input: [{ role: 'system', content: 'Classify the sentiment.' }, { role: 'user', content: '{{sample.output_text}}' }],
  labels: ['positive', 'neutral', 'negative'],
  passing_labels: ['positive'],
};

test('multi: formula over sub-rewards (label_model inside), sub_rewards, merged usage and errors', async () => {
  const fake = fakeModel((messages) => (messages[1].content.includes('love') ? '{"result": "positive"}' : 'Negative.'));
  const multi = {
    type: 'multi' as const,
    name: 'combo',
    graders: {
      exact: sc('eq', '{{sample.output_text}}', '{{item.label}}'),
      mood: labelGrader,
      sim: { type: 'text_similarity', name: 'sim', input: '{{sample.output_text}}', reference: '{{item.label}}', evaluation_metric: 'fuzzy_match' } as TextSimilarityGrader,
    },
    calculate_output: '0.5 * exact + 0.25 * mood + 0.25 * sim ^ 2',
  };
  const res = await runGrader(multi, { item: { label: 'I love it' }, modelSample: 'I love it' }, { callModel: fake.callModel });
  assert.equal(res.reward, 1);
  assert.deepEqual(res.sub_rewards, { exact: 1, mood: 1, sim: 1 });
  assert.equal(res.metadata.type, 'multi');
  assert.equal(res.metadata.name, 'combo');
  assert.equal(res.metadata.sampled_model_name, 'judge-model');
  assert.equal(res.metadata.token_usage, 15);
  assert.match(fake.calls[0].messages[0].content, /Classify the sentiment\.\n\n.*"positive", "neutral", "negative"/s);
  assertClean(res);

  const res2 = await runGrader(multi, { item: { label: 'I love it' }, modelSample: 'bad' }, { callModel: fake.callModel });
  assert.equal(res2.sub_rewards.mood, 0);
  assert.equal(res2.sub_rewards.exact, 0);

  // Division by zero: reward 0, other_error, explained in scores.
  const div = { ...multi, calculate_output: 'exact / (mood - 1)' };
  const res3 = await runGrader(div, { item: { label: 'I love it' }, modelSample: 'I love it' }, { callModel: fake.callModel });
  assert.equal(res3.reward, 0);
  assert.equal(res3.metadata.errors.other_error, true);
  assert.match(String(res3.metadata.scores.formula_error), /Division by zero at column 7/);

  // A failing sub-grader counts 0 and its flag is raised on the multi grader.
  const broken = { ...multi, graders: { ...multi.graders, exact: sc('eq', '{{item.nope}}') } };
  const res4 = await runGrader(broken, { item: { label: 'I love it' }, modelSample: 'I love it' }, { callModel: fake.callModel });
  assert.equal(res4.sub_rewards.exact, 0);
  assert.equal(res4.metadata.errors.invalid_variable_error, true);
  assert.equal(res4.reward, 0.5);
});

test('label_model replies: bare label, JSON, sentence naming one label; ambiguous is a parse error', async () => {
  const multi = (reply: string) =>
    runGrader({ type: 'multi', name: 'm', graders: { l: labelGrader }, calculate_output: 'l' }, { modelSample: 'x' }, { callModel: fakeModel(reply).callModel });
  assert.equal((await multi('positive')).reward, 1);
  assert.equal((await multi('"Positive"')).reward, 1);
  assert.equal((await multi('{"result": "neutral"}')).reward, 0);
  assert.equal((await multi('The sentiment is clearly positive here.')).reward, 1);
  const ambiguous = await multi('positive or negative');
  assert.equal(ambiguous.reward, 0);
  assert.equal(ambiguous.metadata.errors.model_grader_parse_error, true);
});

test('bad graders are 400s before anything runs', async () => {
  await assert.rejects(runGrader(sc('eq', '{{answer}}'), { modelSample: 'x' }), (e: ApiError) => e.status === 400 && e.param === 'grader.input');
});
