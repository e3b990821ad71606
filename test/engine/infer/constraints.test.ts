// Constrained decoding (constraints/): the JSON grammar on its own, then generation from the
// bundled tiny model, whose weights are random: whatever it would say, the output parses, follows
// the schema's structure, and is complete within max_tokens.
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { JsonGrammar, type JsonSchema } from '../../../src/engine/infer/constraints/json.ts';
import { loadModelForInference, chatPrompt, type InferenceModel } from '../../../src/engine/infer/index.ts';

const MODEL_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../models/tiny-llama');

function verdict(grammar: JsonGrammar, text: string, prefix = '', suffix = ''): 'complete' | 'prefix' | 'rejected' {
  const state = grammar.feed(grammar.initial(prefix, suffix), text);
  if (state === undefined) return 'rejected';
  return grammar.isComplete(state) ? 'complete' : 'prefix';
}

const PERSON: JsonSchema = {
  type: 'object',
  properties: {
    name: { type: 'string' },
    age: { type: 'integer' },
    tags: { type: 'array', items: { enum: ['a', 'bb'] }, minItems: 1 },
    ok: { type: 'boolean' },
    note: { type: ['string', 'null'] },
    nested: { $ref: '#/$defs/point' },
  },
  required: ['name', 'age', 'tags', 'ok', 'note', 'nested'],
  additionalProperties: false,
  $defs: { point: { type: 'object', properties: { x: { type: 'number' } }, required: ['x'] } },
};

describe('JSON grammar', () => {
  it('accepts JSON objects and nothing else in json_object mode', () => {
    const g = new JsonGrammar();
    assert.equal(verdict(g, '{}'), 'complete');
    assert.equal(verdict(g, '{"a": 1, "b": [1, -2.5e3, "x\\n\\u00e9"], "c": {"d": null, "e": true}}'), 'complete');
    assert.equal(verdict(g, ' {"a": '), 'prefix');
    for (const bad of ['[1]', '"s"', '{"a":01}', '{"a":tru}', '{"a" 1}', '{"a":1,}', '{}x', '{"a":"\n"}', '{"a":1.}']) {
      assert.equal(verdict(g, bad), 'rejected', bad);
    }
  });

  it('follows a schema: declared keys in order, required ones present, value types, enums, $ref', () => {
    const g = new JsonGrammar(PERSON);
    assert.equal(verdict(g, '{"name": "x", "age": 3, "tags": ["bb", "a"], "ok": false, "note": null, "nested": {"x": 1.5}}'), 'complete');
    assert.equal(verdict(g, '{"name":"x","age":3,"tags":["a"],"ok":true,"note":"n","nested":{"x":0}}'), 'complete');
    for (const bad of [
      '{"age": 3', // a required key skipped
      '{"name": 1', // wrong type
      '{"name": "x", "age": 3.5', // integer
      '{"name": "x", "age": 3, "tags": []', // minItems
      '{"name": "x", "age": 3, "tags": ["c"', // enum
      '{"name": "x", "extra"', // undeclared key
      '{"name": "x", "age": 3, "tags": ["a"], "ok": true, "note": null, "nested": {}}', // nested required
    ]) assert.equal(verdict(g, bad), 'rejected', bad);
  });

  it('anyOf: branches are followed side by side until the text picks one', () => {
    const g = new JsonGrammar({
      anyOf: [
        { type: 'object', properties: { kind: { const: 'ship' }, guns: { type: 'integer' } }, required: ['kind', 'guns'] },
        { type: 'object', properties: { kind: { const: 'island' }, palms: { type: 'array', items: { type: 'string' } } }, required: ['kind', 'palms'] },
        { type: 'string' },
      ],
    });
    assert.equal(verdict(g, '{"kind": "ship", "guns": 12}'), 'complete');
    assert.equal(verdict(g, '{"kind": "island", "palms": ["a"]}'), 'complete');
    assert.equal(verdict(g, '"parrot"'), 'complete');
    assert.equal(verdict(g, '{"kind": "ship", "palms"'), 'rejected');
    assert.equal(verdict(g, '{"kind": "island", "guns"'), 'rejected');
    assert.equal(g.closingLength(g.initial()), 2); // ""
    assert.equal(g.closingLength(g.feed(g.initial(), '{"kind": "i')!), 'sland","palms":[]}'.length);
  });

  it('knows the fewest characters that complete a document', () => {
    const g = new JsonGrammar(PERSON);
    const minimal = '{"name":"","age":0,"tags":["a"],"ok":true,"note":"","nested":{"x":0}}';
    assert.equal(g.closingLength(g.initial()), minimal.length);
    for (let i = 0; i <= minimal.length; i++) {
      assert.equal(g.closingLength(g.feed(g.initial(), minimal.slice(0, i))!), minimal.length - i, minimal.slice(0, i));
    }
    const t = new JsonGrammar({ type: 'object' });
    assert.equal(t.closingLength(t.feed(t.initial(), '{"a": [1, {"b": "x')!), '"}]}'.length);
    assert.equal(verdict(t, '<f>{"a": 1}</f>', '<f>', '</f>'), 'complete');
    assert.equal(verdict(t, '{"a": 1}', '<f>', '</f>'), 'rejected');
  });
});

describe('constrained generation from a random model', () => {
  let model: InferenceModel;
  let prompt: number[];
  before(async () => {
    model = await loadModelForInference({ baseModelDir: MODEL_DIR });
    prompt = chatPrompt(model, [{ role: 'user', content: 'Reply in JSON.' }]);
  });
  after(() => model?.release());

  it('json_object: always a complete JSON object within max_tokens, at any temperature', async () => {
    for (let seed = 0; seed < 8; seed++) {
      const maxTokens = 8 + seed * 6;
      const result = await model.generate(prompt, { seed, temperature: 1.5, maxTokens, constraint: { type: 'json' } });
      assert.ok(result.completionTokens <= maxTokens);
      const value = JSON.parse(result.text);
      assert.equal(typeof value, 'object', result.text);
      assert.ok(value !== null && !Array.isArray(value), result.text);
    }
  });

  it('json_schema: the value has every required key with the declared types', async () => {
    for (let seed = 0; seed < 4; seed++) {
      const result = await model.generate(prompt, { seed, temperature: 1, maxTokens: 120, constraint: { type: 'json', schema: PERSON } });
      const value = JSON.parse(result.text);
      assert.deepEqual(Object.keys(value), ['name', 'age', 'tags', 'ok', 'note', 'nested'], result.text);
      assert.equal(typeof value.name, 'string');
      assert.ok(Number.isInteger(value.age));
      assert.ok(value.tags.length >= 1 && value.tags.every((t: string) => t === 'a' || t === 'bb'));
      assert.equal(typeof value.ok, 'boolean');
      assert.ok(value.note === null || typeof value.note === 'string');
      assert.equal(typeof value.nested.x, 'number');
    }
  });

  it('fixed text around the value (a forced tool call)', async () => {
    const schema = { type: 'object', properties: { name: { const: 'get_weather' }, arguments: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } }, required: ['name', 'arguments'] };
    const result = await model.generate(prompt, { seed: 3, maxTokens: 60, constraint: { type: 'json', schema, prefix: '<tool_call>\n', suffix: '\n</tool_call>' } });
    const match = /^<tool_call>\n(.*)\n<\/tool_call>$/s.exec(result.text);
    assert.ok(match, result.text);
    const call = JSON.parse(match[1]);
    assert.equal(call.name, 'get_weather');
    assert.equal(typeof call.arguments.city, 'string');
  });
});
