// The grade callback of reinforcement jobs: every grader type through runGrader, in order, errors
// scoring 0; score_model served by our own inference on a base model of MODELS_DIR.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { jobGrader, ownCallModel } from '../../src/scheduler/rft-grading.ts';
import type { CallModel, PythonSandboxOptions } from '../../src/graders/index.ts';
import type { Store } from '../../src/store/index.ts';
import { tempStore } from '../support/store.ts';
import { pythonSandboxSkip } from '../support/python-sandbox.ts';

const MODELS_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../models');
// A real store with no tuned models: every model these graders name is a base model of MODELS_DIR.
let noStore: Store;
let cleanup: () => Promise<void>;
before(async () => ({ store: noStore, cleanup } = await tempStore()));
after(() => cleanup());
const python: PythonSandboxOptions = { limits: { wallSeconds: 5, cpuSeconds: 2, memoryBytes: 256 * 1024 * 1024, diskBytes: 8 * 1024 * 1024 }, hidePaths: [process.cwd()] };
const samples = [
  { outputText: 'Arr, the sky be blue', item: { answer: 'blue' } },
  { outputText: 'green', item: { answer: 'blue' } },
  { outputText: 'blue', item: { answer: 'blue' } },
  { outputText: 'Blue skies', item: { answer: 'blue' } },
  { outputText: 'nothing', item: {} }, // {{item.answer}} missing: scores 0
];

test('string_check, text_similarity and multi rewards, in sample order; grading errors score 0', async () => {
  const like = { type: 'string_check', name: 'like', operation: 'like', input: '{{sample.output_text}}', reference: '{{item.answer}}' };
  const g1 = jobGrader(like, { modelsDir: MODELS_DIR, store: noStore, organization: 'org-local' });
  assert.deepEqual(await g1.grade(samples), [1, 0, 1, 0, 0]);
  const multi = {
    type: 'multi',
    name: 'both',
    graders: {
      exact: { type: 'string_check', name: 'exact', operation: 'eq', input: '{{sample.output_text}}', reference: '{{item.answer}}' },
      sim: { type: 'text_similarity', name: 'sim', input: '{{sample.output_text}}', reference: '{{item.answer}}', evaluation_metric: 'fuzzy_match' },
    },
    calculate_output: '0.5 * exact + 0.5 * sim',
  };
  const g2 = jobGrader(multi, { modelsDir: MODELS_DIR, store: noStore, organization: 'org-local' });
  const rewards = await g2.grade(samples);
  assert.equal(rewards.length, 5);
  assert.equal(rewards[2], 1);
  assert.ok(rewards[1] < 0.5 && rewards[3] > rewards[1], JSON.stringify(rewards));
  await g1.close();
  await g2.close();
});

test('python grader in its sandbox', { skip: pythonSandboxSkip(python) }, async () => {
  const source = 'def grade(sample, item):\n    return 1.0 if item.get("answer", "?") in sample["output_text"] else 0.25\n';
  const g = jobGrader({ type: 'python', name: 'py', source }, { modelsDir: MODELS_DIR, store: noStore, organization: 'org-local', python });
  assert.deepEqual(await g.grade(samples), [1, 0.25, 1, 0.25, 0.25]);
  await g.close();
});

test('score_model: an injected model service, and our own inference on a base model', async () => {
  const grader = { type: 'score_model', name: 'judge', model: 'tiny-llama', input: [{ role: 'user', content: 'Reference: {{item.answer}}\nAnswer: {{sample.output_text}}' }] };
  const callModel: CallModel = async (_model, messages) => ({ text: JSON.stringify({ result: messages.some((m) => String(m.content).includes('Answer: blue')) ? 0.9 : 0.1 }) });
  const injected = jobGrader(grader, { modelsDir: MODELS_DIR, store: noStore, organization: 'org-local', callModel });
  assert.deepEqual(await injected.grade(samples.slice(0, 3)), [0.1, 0.1, 0.9]);

  // The random tiny model answers nonsense: a parse error scoring 0, but graded (no throw).
  const own = jobGrader({ ...grader, sampling_params: { max_completions_tokens: 8 } }, { modelsDir: MODELS_DIR, store: noStore, organization: 'org-local' });
  const rewards = await own.grade(samples.slice(0, 2));
  assert.equal(rewards.length, 2);
  for (const r of rewards) assert.ok(r >= 0 && r <= 1);
  await own.close();
  // What the judge was asked and answered, on our own inference.
  const direct = ownCallModel({ modelsDir: MODELS_DIR, store: noStore, organization: 'org-local' });
  const reply = await direct.callModel('tiny-llama', [{ role: 'user', content: 'Score this.' }], { max_tokens: 5 });
  assert.equal(typeof reply, 'object');
  const r = reply as { usage?: { completion_tokens: number; prompt_tokens: number }; model?: string };
  assert.equal(r.model, 'tiny-llama');
  assert.ok(r.usage!.completion_tokens >= 1 && r.usage!.completion_tokens <= 5 && r.usage!.prompt_tokens > 3, JSON.stringify(reply));
  await direct.close();
  // An unknown model is a grading error (0), not a crash.
  const missing = jobGrader({ ...grader, model: 'no-such-model' }, { modelsDir: MODELS_DIR, store: noStore, organization: 'org-local' });
  assert.deepEqual(await missing.grade(samples.slice(0, 1)), [0]);
  await missing.close();
});
