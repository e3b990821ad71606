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

test('parseJobMethod: only the settings of method.type, and a reinforcement job needs its grader', () => {
  // Each field's own shape is the route schema's (test/api/fine-tuning-jobs.test.ts); these rules span fields.
  rejects400(() => parseJobMethod({ method: { type: 'supervised', dpo: {} } }), 'method.dpo', /cannot be set when 'method.type' is 'supervised'/);
  rejects400(() => parseJobMethod({ method: { type: 'dpo', reinforcement: { grader } } }), 'method.reinforcement');
  rejects400(() => parseJobMethod({ method: { type: 'reinforcement' } }), 'method.reinforcement.grader', /Missing required parameter/);
  rejects400(() => parseJobMethod({ method: { type: 'reinforcement', reinforcement: {} } }), 'method.reinforcement.grader');
  // The job object's enum has no "auto": an absent or "auto" reasoning_effort shows as "default" at once.
  for (const hyperparameters of [{}, { reasoning_effort: 'auto' }]) {
    const parsed = parseJobMethod({ method: { type: 'reinforcement', reinforcement: { grader, hyperparameters } } });
    assert.equal(parsed.type === 'reinforcement' && parsed.hyperparameters.reasoning_effort, 'default');
  }
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

test('resolveSeed: given seed kept, absent seed generated in range', () => {
  assert.equal(resolveSeed(0), 0);
  assert.equal(resolveSeed(42), 42);
  assert.equal(resolveSeed(2147483647), 2147483647);
  const seeds = new Set<number>();
  for (let i = 0; i < 100; i++) {
    const seed = resolveSeed();
    assert.ok(Number.isInteger(seed) && seed >= 0 && seed <= 2147483647);
    seeds.add(seed);
  }
  assert.ok(seeds.size > 90);
  assert.ok(Number.isInteger(resolveSeed(null)));
});
