import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkTemplate, renderTemplate, sampleFrom, TemplateError } from '../../src/graders/templates.ts';

const ctx = (modelSample: string, item: unknown = {}) => ({ item, sample: sampleFrom(modelSample) });

test('item and sample variables resolve as OpenAI documents', () => {
  const c = ctx('{"answer": 42, "tags": ["x", "y"], "obj": {"k": true}}', { label: 'Paris', nested: { deep: { v: 3 } }, list: ['a', 'b'], n: null });
  assert.equal(renderTemplate('{{item.label}}', c), 'Paris');
  assert.equal(renderTemplate('Answer: {{ item.label }}!', c), 'Answer: Paris!');
  assert.equal(renderTemplate('{{item.nested.deep.v}}', c), '3');
  assert.equal(renderTemplate('{{item.list[1]}} {{item.list.0}}', c), 'b a');
  assert.equal(renderTemplate('{{item.n}}', c), 'null');
  assert.equal(renderTemplate('{{item.nested}}', c), '{"deep":{"v":3}}');
  assert.equal(renderTemplate('{{sample.output_json.answer}}', c), '42');
  assert.equal(renderTemplate('{{sample.output_json.tags[0]}}', c), 'x');
  assert.equal(renderTemplate('{{sample.output_json.obj}}', c), '{"k":true}');
  assert.equal(renderTemplate('{{sample.output_text}}', c), '{"answer": 42, "tags": ["x", "y"], "obj": {"k": true}}');
  assert.equal(renderTemplate('{{sample.output_tools}}', c), '[]');
  assert.equal(renderTemplate('no templates { here }', c), 'no templates { here }');
});

test('missing variables and non-JSON samples are TemplateErrors of their kind', () => {
  const c = ctx('plain text', { label: 'x' });
  assert.throws(() => renderTemplate('{{item.missing}}', c), (e: Error) => e instanceof TemplateError && e.kind === 'invalid_variable');
  assert.throws(() => renderTemplate('{{item.label.sub}}', c), (e: Error) => e instanceof TemplateError && e.kind === 'invalid_variable');
  assert.throws(() => renderTemplate('{{sample.output_json.a}}', c), (e: Error) => e instanceof TemplateError && e.kind === 'sample_parse');
  // Prototype keys are not data.
  assert.throws(() => renderTemplate('{{item.constructor}}', c), TemplateError);
});

test('checkTemplate: namespaces and sample fields', () => {
  assert.equal(checkTemplate('{{item.anything.deep}} {{sample.output_text}} {{ sample.output_json.x }}'), null);
  assert.match(checkTemplate('x {{foo.bar}}')!, /unknown namespace 'foo'/);
  assert.match(checkTemplate('{{sample.text}}')!, /sample namespace has output_text/);
  assert.match(checkTemplate('{{item.a + 1}}')!, /not a variable/);
});
