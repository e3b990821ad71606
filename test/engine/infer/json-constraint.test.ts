// response_format json_object: the byte-level recogniser, and constrained generation on tiny-llama.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isCompleteJsonObject } from '../../../src/engine/infer/json-constraint.ts';
import { chatPrompt, loadModelForInference } from '../../../src/engine/infer/model.ts';

test('the recogniser accepts JSON objects and nothing else', () => {
  for (const ok of ['{}', ' {"a": 1}', '{"a":[1,-2.5e+3,0.0,true,false,null,{"b":"x\\"\\u00e9\\n"}],"é":"ü"}', '{"n": 0e1}', '{ "a" : [ ] }']) {
    assert.equal(isCompleteJsonObject(ok), true, ok);
    JSON.parse(ok);
  }
  for (const bad of ['[]', '"x"', '1', '{', '{"a"}', '{"a":}', '{"a":01}', '{"a":1,}', '{a:1}', '{"a":tru}', '{"a":"\n"}', '{"a":1}}', '{"a":-}', '{"a":1.}', '{} ']) {
    assert.equal(isCompleteJsonObject(bad), false, bad);
  }
});

test('json_object generation: every completed output parses as an object; the rest ran out of tokens', async () => {
  const model = await loadModelForInference({ baseModelDir: new URL('../../../models/tiny-llama/', import.meta.url).pathname }, { intraOpNumThreads: 1 });
  const prompt = chatPrompt(model, [{ role: 'user', content: 'Give me JSON' }]);
  let completed = 0;
  for (let seed = 0; seed < 6; seed++) {
    const r = await model.generate(prompt, { maxTokens: 64, temperature: 1, seed, responseFormat: { type: 'json_object' } });
    if (r.finishReason === 'stop') {
      completed++;
      const value: unknown = JSON.parse(r.text);
      assert.ok(value !== null && typeof value === 'object' && !Array.isArray(value), r.text);
    } else {
      assert.equal(r.completionTokens, 64);
      assert.ok(r.text.trimStart().startsWith('{'), r.text);
    }
  }
  assert.ok(completed >= 1, 'no seed closed its object'); // seeds are deterministic: 1, 2 and 5 do
  await model.release();
});
