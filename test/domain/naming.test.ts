import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  checkpointModelName,
  fineTunedModelName,
  newId,
  parseFineTunedModelName,
  shortIdForJob,
  type IdPrefix,
} from '../../src/domain/naming.ts';

test('newId: prefix + 24 URL-safe base62 characters', () => {
  const prefixes: IdPrefix[] = ['file-', 'ftjob-', 'ftevent-', 'ftckpt_', 'upload_', 'part_', 'cp_', 'evt_'];
  for (const prefix of prefixes) {
    const id = newId(prefix);
    assert.ok(id.startsWith(prefix), id);
    assert.match(id.slice(prefix.length), /^[0-9A-Za-z]{24}$/);
    assert.equal(encodeURIComponent(id), id);
  }
});

test('newId: unique over many draws', () => {
  const ids = new Set<string>();
  for (let i = 0; i < 20_000; i++) ids.add(newId('ftjob-'));
  assert.equal(ids.size, 20_000);
});

test('fineTunedModelName: ft:{base}:{org}:{suffix}:{short}', () => {
  const name = fineTunedModelName('gpt-4o-mini-2024-07-18', 'acme', 'custom-model-name', 'ftjob-abc123');
  assert.match(name, /^ft:gpt-4o-mini-2024-07-18:acme:custom-model-name:[0-9A-Za-z]{8}$/);
});

test('fineTunedModelName: no suffix leaves the segment empty', () => {
  const name = fineTunedModelName('tiny', 'acme', null, 'ftjob-abc123');
  assert.match(name, /^ft:tiny:acme::[0-9A-Za-z]{8}$/);
});

test('fineTunedModelName: short id is derived from the job id (stable, differs between jobs)', () => {
  const a = fineTunedModelName('tiny', 'acme', null, 'ftjob-abc123');
  assert.equal(fineTunedModelName('tiny', 'acme', null, 'ftjob-abc123'), a);
  assert.notEqual(fineTunedModelName('tiny', 'acme', null, 'ftjob-abc124'), a);
  assert.equal(shortIdForJob('ftjob-abc123'), a.split(':').pop());
});

test('fineTunedModelName: tuning a fine-tuned model names the root base model', () => {
  const first = fineTunedModelName('tiny', 'acme', 'one', 'ftjob-1');
  const second = fineTunedModelName(first, 'acme', 'two', 'ftjob-2');
  assert.match(second, /^ft:tiny:acme:two:[0-9A-Za-z]{8}$/);
});

test('fineTunedModelName: refuses a ":" in org or suffix (it would make the name ambiguous)', () => {
  assert.throws(() => fineTunedModelName('tiny', 'a:b', null, 'ftjob-1'));
  assert.throws(() => fineTunedModelName('tiny', 'acme', 'x:y', 'ftjob-1'));
});

test('checkpointModelName: …:ckpt-step-{N}', () => {
  assert.equal(checkpointModelName('ft:tiny:acme::abcd1234', 100), 'ft:tiny:acme::abcd1234:ckpt-step-100');
  assert.throws(() => checkpointModelName('ft:tiny:acme::abcd1234', -1));
  assert.throws(() => checkpointModelName('ft:tiny:acme::abcd1234', 1.5));
});

test('parseFineTunedModelName: model, checkpoint, empty suffix, base with colons', () => {
  assert.deepEqual(parseFineTunedModelName('ft:gpt-4o-mini:acme:my-suffix:7p4lURel'), {
    base: 'gpt-4o-mini', org: 'acme', suffix: 'my-suffix', shortId: '7p4lURel', step: null,
  });
  assert.deepEqual(parseFineTunedModelName('ft:tiny:acme::abcd1234:ckpt-step-30'), {
    base: 'tiny', org: 'acme', suffix: null, shortId: 'abcd1234', step: 30,
  });
  assert.deepEqual(parseFineTunedModelName('ft:llama3:8b:acme:s:abcd1234'), {
    base: 'llama3:8b', org: 'acme', suffix: 's', shortId: 'abcd1234', step: null,
  });
});

test('parseFineTunedModelName: round-trips what fineTunedModelName builds', () => {
  const name = fineTunedModelName('HuggingFaceTB/SmolLM2-135M', 'org_1', 'v2', 'ftjob-xyz');
  const parts = parseFineTunedModelName(checkpointModelName(name, 7));
  assert.deepEqual(parts, { base: 'HuggingFaceTB/SmolLM2-135M', org: 'org_1', suffix: 'v2', shortId: shortIdForJob('ftjob-xyz'), step: 7 });
});

test('parseFineTunedModelName: null for names that are not fine-tuned models', () => {
  for (const name of ['gpt-4o-mini', 'ft:', 'ft:tiny', 'ft:tiny:acme:abcd1234', 'ft::acme::abcd1234', 'ft:tiny:::abcd1234', 'ft:tiny:acme::']) {
    assert.equal(parseFineTunedModelName(name), null, name);
  }
});
