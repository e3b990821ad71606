import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ApiError } from '../../src/domain/errors.ts';
import {
  autoBatchSize,
  autoEpochs,
  autoEvalInterval,
  autoLearningRateMultiplier,
  parseJobMethod,
  resolveHyperparameters,
  resolveSeed,
  validateMetadata,
  validateSuffix,
} from '../../src/domain/hyperparameters.ts';

/** Asserts `fn` throws a 400 ApiError naming `param`. */
function rejects400(fn: () => unknown, param: string, message?: RegExp) {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ApiError, String(err));
    assert.equal(err.status, 400);
    assert.equal(err.type, 'invalid_request_error');
    assert.equal(err.param, param);
    if (message) assert.match(err.message, message);
    return true;
  });
}

const grader = { type: 'string_check', name: 'g', input: '{{sample.output_text}}', reference: '{{item.answer}}', operation: 'eq' };

test('parseJobMethod: nothing given → supervised, all auto', () => {
  assert.deepEqual(parseJobMethod({}), {
    type: 'supervised',
    hyperparameters: { batch_size: 'auto', learning_rate_multiplier: 'auto', n_epochs: 'auto' },
  });
});

test('parseJobMethod: deprecated top-level hyperparameters → supervised', () => {
  assert.deepEqual(parseJobMethod({ hyperparameters: { n_epochs: 4, batch_size: 'auto', learning_rate_multiplier: 0.5 } }), {
    type: 'supervised',
    hyperparameters: { batch_size: 'auto', learning_rate_multiplier: 0.5, n_epochs: 4 },
  });
});

test('parseJobMethod: method supervised / dpo / reinforcement normalised', () => {
  assert.deepEqual(parseJobMethod({ method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 2 } } } }), {
    type: 'supervised',
    hyperparameters: { batch_size: 'auto', learning_rate_multiplier: 'auto', n_epochs: 2 },
  });
  assert.deepEqual(parseJobMethod({ method: { type: 'dpo', dpo: { hyperparameters: { beta: 0.2 } } } }), {
    type: 'dpo',
    hyperparameters: { batch_size: 'auto', learning_rate_multiplier: 'auto', n_epochs: 'auto', beta: 0.2 },
  });
  assert.deepEqual(parseJobMethod({ method: { type: 'dpo' } }).hyperparameters, {
    batch_size: 'auto', learning_rate_multiplier: 'auto', n_epochs: 'auto', beta: 'auto',
  });
  assert.deepEqual(
    parseJobMethod({ method: { type: 'reinforcement', reinforcement: { grader, hyperparameters: { reasoning_effort: 'low', eval_samples: 3 } } } }),
    {
      type: 'reinforcement',
      hyperparameters: {
        batch_size: 'auto', learning_rate_multiplier: 'auto', n_epochs: 'auto',
        compute_multiplier: 'auto', eval_interval: 'auto', eval_samples: 3, reasoning_effort: 'low',
      },
      grader,
    },
  );
});

test('parseJobMethod: null values count as auto', () => {
  assert.equal(parseJobMethod({ hyperparameters: { batch_size: null } }).hyperparameters.batch_size, 'auto');
  assert.equal(parseJobMethod({ method: null, hyperparameters: null }).type, 'supervised');
});

test('parseJobMethod: range checks name the exact param (method form)', () => {
  const sup = (h: object) => () => parseJobMethod({ method: { type: 'supervised', supervised: { hyperparameters: h } } });
  const p = 'method.supervised.hyperparameters';
  for (const bad of [0, 51, 2.5, '3', true, -1]) rejects400(sup({ n_epochs: bad }), `${p}.n_epochs`);
  for (const bad of [0, 257, 1.5, 'big']) rejects400(sup({ batch_size: bad }), `${p}.batch_size`);
  for (const bad of [0, -0.1, 'x', Infinity]) rejects400(sup({ learning_rate_multiplier: bad }), `${p}.learning_rate_multiplier`);
  for (const ok of [1, 50, 'auto']) assert.doesNotThrow(sup({ n_epochs: ok }));
  for (const ok of [1, 256]) assert.doesNotThrow(sup({ batch_size: ok }));
  for (const ok of [1e-6, 10]) assert.doesNotThrow(sup({ learning_rate_multiplier: ok }));
  rejects400(sup({ n_epochs: 51 }), `${p}.n_epochs`, /Invalid 'method\.supervised\.hyperparameters\.n_epochs': expected 'auto' or an integer between 1 and 50, but got 51/);
});

test('parseJobMethod: range checks name the exact param (deprecated form)', () => {
  rejects400(() => parseJobMethod({ hyperparameters: { batch_size: 0 } }), 'hyperparameters.batch_size');
  rejects400(() => parseJobMethod({ hyperparameters: { n_epochs: 100 } }), 'hyperparameters.n_epochs');
  rejects400(() => parseJobMethod({ hyperparameters: { learning_rate_multiplier: 0 } }), 'hyperparameters.learning_rate_multiplier');
  rejects400(() => parseJobMethod({ hyperparameters: 'auto' }), 'hyperparameters');
  rejects400(() => parseJobMethod({ hyperparameters: { beta: 0.1 } }), 'hyperparameters.beta', /Unknown hyperparameter 'beta'/);
  rejects400(() => parseJobMethod({ hyperparameters: { constructor: 1 } }), 'hyperparameters.constructor');
  rejects400(() => parseJobMethod(JSON.parse('{"hyperparameters": {"__proto__": {"n_epochs": 1}}}')), 'hyperparameters.__proto__');
});

test('parseJobMethod: DPO beta in (0, 2]', () => {
  const dpo = (beta: unknown) => () => parseJobMethod({ method: { type: 'dpo', dpo: { hyperparameters: { beta } } } });
  for (const bad of [0, -1, 2.01, 'high']) rejects400(dpo(bad), 'method.dpo.hyperparameters.beta');
  for (const ok of [0.0001, 0.1, 2, 'auto']) assert.doesNotThrow(dpo(ok));
});

test('parseJobMethod: reinforcement ranges and enum', () => {
  const rft = (h: object) => () => parseJobMethod({ method: { type: 'reinforcement', reinforcement: { grader, hyperparameters: h } } });
  const p = 'method.reinforcement.hyperparameters';
  for (const bad of [0, 10.5, -2]) rejects400(rft({ compute_multiplier: bad }), `${p}.compute_multiplier`);
  for (const ok of [0.001, 10, 'auto']) assert.doesNotThrow(rft({ compute_multiplier: ok }));
  for (const bad of [0, 1.5]) rejects400(rft({ eval_interval: bad }), `${p}.eval_interval`);
  for (const bad of [0, -3]) rejects400(rft({ eval_samples: bad }), `${p}.eval_samples`);
  assert.doesNotThrow(rft({ eval_interval: 1000, eval_samples: 1 }));
  rejects400(rft({ reasoning_effort: 'extreme' }), `${p}.reasoning_effort`);
  for (const ok of ['default', 'low', 'medium', 'high', 'auto']) assert.doesNotThrow(rft({ reasoning_effort: ok }));
  // The job object's enum has no "auto": an absent or "auto" reasoning_effort shows as "default" at once.
  for (const h of [{}, { reasoning_effort: 'auto' }]) {
    const parsed = rft(h)();
    assert.equal(parsed.type === 'reinforcement' && parsed.hyperparameters.reasoning_effort, 'default');
  }
  rejects400(rft({ n_epochs: 0 }), `${p}.n_epochs`);
});

test('parseJobMethod: method shape errors', () => {
  rejects400(() => parseJobMethod({ method: 'supervised' }), 'method');
  rejects400(() => parseJobMethod({ method: {} }), 'method.type', /Missing required parameter/);
  rejects400(() => parseJobMethod({ method: { type: 'rlhf' } }), 'method.type');
  rejects400(() => parseJobMethod({ method: { type: 'supervised', dpo: {} } }), 'method.dpo', /cannot be set when 'method.type' is 'supervised'/);
  rejects400(() => parseJobMethod({ method: { type: 'supervised', extra: 1 } }), 'method.extra');
  rejects400(() => parseJobMethod({ method: { type: 'supervised', supervised: [] } }), 'method.supervised');
  rejects400(() => parseJobMethod({ method: { type: 'supervised', supervised: { grader } } }), 'method.supervised.grader');
  rejects400(() => parseJobMethod({ method: { type: 'dpo', dpo: { hyperparameters: 5 } } }), 'method.dpo.hyperparameters');
  rejects400(
    () => parseJobMethod({ method: { type: 'supervised', supervised: { hyperparameters: { beta: 0.1 } } } }),
    'method.supervised.hyperparameters.beta',
  );
});

test('parseJobMethod: reinforcement needs a grader object', () => {
  rejects400(() => parseJobMethod({ method: { type: 'reinforcement' } }), 'method.reinforcement.grader', /Missing required parameter/);
  rejects400(() => parseJobMethod({ method: { type: 'reinforcement', reinforcement: {} } }), 'method.reinforcement.grader');
  rejects400(() => parseJobMethod({ method: { type: 'reinforcement', reinforcement: { grader: 'eq' } } }), 'method.reinforcement.grader');
  rejects400(() => parseJobMethod({ method: { type: 'reinforcement', reinforcement: { grader: { name: 'x' } } } }), 'method.reinforcement.grader');
});

test('parseJobMethod: both forms given consistently are accepted', () => {
  const parsed = parseJobMethod({
    hyperparameters: { n_epochs: 3 },
    method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 3 } } },
  });
  assert.equal(parsed.hyperparameters.n_epochs, 3);
  // an empty top level says nothing; an explicit "auto" agrees with a method value left out
  assert.equal(parseJobMethod({ hyperparameters: {}, method: { type: 'dpo' } }).type, 'dpo');
  assert.equal(
    parseJobMethod({ hyperparameters: {}, method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 3 } } } }).hyperparameters.n_epochs,
    3,
  );
  assert.equal(parseJobMethod({ hyperparameters: { batch_size: 'auto' }, method: { type: 'supervised' } }).hyperparameters.batch_size, 'auto');
});

test('parseJobMethod: both forms given inconsistently are rejected', () => {
  rejects400(
    () => parseJobMethod({ hyperparameters: { n_epochs: 3 }, method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 4 } } } }),
    'hyperparameters',
    /conflicts with 'method\.supervised\.hyperparameters\.n_epochs'/,
  );
  rejects400(() => parseJobMethod({ hyperparameters: { batch_size: 8 }, method: { type: 'dpo' } }), 'hyperparameters');
  rejects400(
    () => parseJobMethod({ hyperparameters: { n_epochs: 'auto' }, method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 4 } } } }),
    'hyperparameters',
  );
});

test('autoEpochs: the cookbook rule', () => {
  assert.equal(autoEpochs(10), 10); // 30 < 100 → 100 // 10
  assert.equal(autoEpochs(3), 25); // min(25, 33)
  assert.equal(autoEpochs(1), 25);
  assert.equal(autoEpochs(33), 3); // 99 < 100 → 100 // 33 = 3
  assert.equal(autoEpochs(34), 3);
  assert.equal(autoEpochs(8333), 3); // 24999 ≤ 25000
  assert.equal(autoEpochs(8334), 2); // 25002 > 25000 → 25000 // 8334
  assert.equal(autoEpochs(30_000), 1);
  assert.equal(autoEpochs(1_000_000), 1);
});

test('autoBatchSize: 0.2% of examples, 1..256', () => {
  assert.equal(autoBatchSize(10), 1);
  assert.equal(autoBatchSize(749), 1);
  assert.equal(autoBatchSize(750), 2);
  assert.equal(autoBatchSize(5000), 10);
  assert.equal(autoBatchSize(10_000_000), 256);
});

test('autoLearningRateMultiplier: 1.8 × √batch', () => {
  assert.equal(autoLearningRateMultiplier(1), 1.8);
  assert.equal(autoLearningRateMultiplier(4), 3.6);
  assert.equal(autoLearningRateMultiplier(256), 28.8);
});

test('autoEvalInterval: about 4 evaluations per epoch', () => {
  assert.equal(autoEvalInterval(10, 1), 3);
  assert.equal(autoEvalInterval(2, 1), 1);
  assert.equal(autoEvalInterval(1000, 2), 125);
});

test('resolveHyperparameters: auto → numbers, given values kept', () => {
  const dataset = { nExamples: 50, nTokens: 5000 };
  assert.deepEqual(resolveHyperparameters(parseJobMethod({}), dataset), { batch_size: 1, learning_rate_multiplier: 1.8, n_epochs: 3 });
  assert.deepEqual(resolveHyperparameters(parseJobMethod({ hyperparameters: { batch_size: 4, n_epochs: 7 } }), dataset), {
    batch_size: 4, learning_rate_multiplier: 3.6, n_epochs: 7,
  });
  assert.deepEqual(resolveHyperparameters(parseJobMethod({ method: { type: 'dpo' } }), dataset), {
    batch_size: 1, learning_rate_multiplier: 1.8, n_epochs: 3, beta: 0.1,
  });
  assert.deepEqual(resolveHyperparameters(parseJobMethod({ method: { type: 'dpo', dpo: { hyperparameters: { beta: 0.5 } } } }), dataset), {
    batch_size: 1, learning_rate_multiplier: 1.8, n_epochs: 3, beta: 0.5,
  });
  assert.deepEqual(resolveHyperparameters(parseJobMethod({ method: { type: 'reinforcement', reinforcement: { grader } } }), dataset), {
    batch_size: 1, learning_rate_multiplier: 1.8, n_epochs: 3,
    compute_multiplier: 1, eval_interval: 13, eval_samples: 1, reasoning_effort: 'default',
  });
});

test('validateMetadata: limits', () => {
  assert.equal(validateMetadata(undefined), null);
  assert.equal(validateMetadata(null), null);
  const sixteen = Object.fromEntries(Array.from({ length: 16 }, (_, i) => [`k${i}`, 'v']));
  assert.deepEqual(validateMetadata(sixteen), sixteen);
  assert.deepEqual(validateMetadata({ ['k'.repeat(64)]: 'v'.repeat(512) }), { ['k'.repeat(64)]: 'v'.repeat(512) });
  rejects400(() => validateMetadata({ ...sixteen, k16: 'v' }), 'metadata', /at most 16 properties, but got an object with 17/);
  rejects400(() => validateMetadata({ ['k'.repeat(65)]: 'v' }), 'metadata', /length 65/);
  rejects400(() => validateMetadata({ '': 'v' }), 'metadata');
  rejects400(() => validateMetadata({ k: 'v'.repeat(513) }), 'metadata', /maximum length 512, but got a string with length 513/);
  rejects400(() => validateMetadata({ k: 1 }), 'metadata', /expected a string/);
  rejects400(() => validateMetadata({ k: null }), 'metadata');
  rejects400(() => validateMetadata(['a']), 'metadata');
  assert.deepEqual(Object.keys(validateMetadata(JSON.parse('{"__proto__": "x", "b": "y"}'))!), ['__proto__', 'b']);
  rejects400(() => validateMetadata('a=b'), 'metadata');
});

test('validateSuffix: 1–64 characters, letters digits - _ .', () => {
  assert.equal(validateSuffix(undefined), null);
  assert.equal(validateSuffix(null), null);
  assert.equal(validateSuffix('custom-model_v1.2'), 'custom-model_v1.2');
  assert.equal(validateSuffix('s'.repeat(64)), 's'.repeat(64));
  rejects400(() => validateSuffix(''), 'suffix');
  rejects400(() => validateSuffix('s'.repeat(65)), 'suffix', /length 65/);
  for (const bad of ['a:b', 'a/b', 'a b', 'é', 'a?b']) rejects400(() => validateSuffix(bad), 'suffix', /only letters/);
  rejects400(() => validateSuffix(5), 'suffix');
});

test('resolveSeed: given seed kept, absent seed generated in range', () => {
  assert.equal(resolveSeed(0), 0);
  assert.equal(resolveSeed(42), 42);
  assert.equal(resolveSeed(2147483647), 2147483647);
  for (const bad of [-1, 2147483648, 1.5, '42', true]) rejects400(() => resolveSeed(bad), 'seed');
  const seeds = new Set<number>();
  for (let i = 0; i < 100; i++) {
    const seed = resolveSeed();
    assert.ok(Number.isInteger(seed) && seed >= 0 && seed <= 2147483647);
    seeds.add(seed);
  }
  assert.ok(seeds.size > 90);
  assert.ok(Number.isInteger(resolveSeed(null)));
});
