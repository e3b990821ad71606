// DPO: the loss graph's gradient against finite differences (f64), the starting point (policy =
// reference: loss log 2, rewards 0), training on the pirate preference set widening the
// chosen-over-rejected margin on held-out pairs, determinism, resume equivalence, and pause.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import * as op from '../../../src/engine/graph/ops.ts';
import type { Tensor } from '../../../src/engine/graph/ir.ts';
import { llamaHidden, llamaWeightShapes } from '../../../src/engine/models/llama.ts';
import { dpoTerms, logSigmoid, sequenceLogps } from '../../../src/engine/train/dpo-loss.ts';
import { DpoRunner, dpoMeans, makeDpoPlan, pairMicroBatch, referenceLogps } from '../../../src/engine/train/dpo.ts';
import { freshOptimizerState } from '../../../src/engine/train/runner.ts';
import { initialTensors, modelSetup } from '../../../src/engine/train/setup.ts';
import { train } from '../../../src/engine/train/train.ts';
import { loadHfModel } from '../../../src/engine/io/hf-model.ts';
import type { TrainEvent, TrainSpec } from '../../../src/engine/contract.ts';
import { gradCheck, rng } from '../graph/gradcheck.ts';
import { randomWeights, tinyConfig } from '../models/llama-fixtures.ts';

const root = resolve(import.meta.dirname, '../../..');
const tmp = mkdtempSync(join(tmpdir(), 'tuneforge-dpo-'));
const trainLines = readFileSync(join(root, 'samples/dpo-train.jsonl'), 'utf8').trim().split('\n');
const small = join(tmp, 'train-small.jsonl');
writeFileSync(small, trainLines.slice(0, 12).join('\n') + '\n');

const spec = (over: Partial<TrainSpec> = {}): TrainSpec => ({
  baseModelDir: join(root, 'models/tiny-llama'),
  method: 'dpo',
  trainingFile: small,
  validationFile: join(root, 'samples/dpo-valid.jsonl'),
  hyperparameters: { n_epochs: 2, batch_size: 4, learning_rate_multiplier: 2, beta: 0.1 },
  seed: 7,
  lora: { rank: 4, alpha: 8, dropout: 0.1, targetModules: ['q_proj', 'v_proj', 'up_proj'] },
  outputDir: mkdtempSync(join(tmp, 'out-')),
  ...over,
});

async function run(s: TrainSpec, options: { signal?: AbortSignal; onEvent?: (e: TrainEvent) => void } = {}) {
  const events: TrainEvent[] = [];
  const result = await train(s, { signal: options.signal, onEvent: (e) => void (events.push(e), options.onEvent?.(e)) });
  const metrics = events.flatMap((e) => (e.type === 'metrics' ? [e.metrics] : []));
  return { result, events, metrics, losses: metrics.map((m) => m.train_loss) };
}

test('log-sigmoid: values and gradient (finite differences, f64), stable for large |z|', async () => {
  const z = Float64Array.from([-60, -8, -1.5, -0.2, 0.3, 1, 7, 60]);
  await gradCheck([{ name: 'z', shape: [8], data: z }], (x) => logSigmoid(x));
  await gradCheck([{ name: 'z', shape: [3, 4] }], (x) => logSigmoid(op.mul(x, 5)));
});

test('DPO loss through a tiny Llama: gradient of weights and LoRA-free forward vs finite differences (f64)', async () => {
  const cfg = tinyConfig();
  const P = 2;
  const T = 6;
  const rows = 2 * P;
  const r = rng(11);
  const ids = BigInt64Array.from({ length: rows * T }, () => BigInt(1 + Math.floor(r() * (cfg.vocabSize - 1))));
  const labels = BigInt64Array.from({ length: rows * T }, () => BigInt(Math.floor(r() * cfg.vocabSize)));
  const positions = BigInt64Array.from({ length: rows * T }, (_, i) => BigInt(i % T));
  const segments = new BigInt64Array(rows * T).fill(1n);
  // Response tokens: the last three predictions of each row.
  const weights = Float64Array.from({ length: rows * T }, (_, i) => (i % T >= 2 && i % T < 5 ? 1 : 0));
  const shapes = [...llamaWeightShapes(cfg)];
  const base = randomWeights(cfg, 3, true);
  const checked = new Set(['model.layers.0.self_attn.q_proj.weight', 'model.layers.1.mlp.down_proj.weight', 'model.embed_tokens.weight']);
  await gradCheck(
    [
      { name: 'input_ids', shape: [rows, T], dtype: 'int64', data: ids },
      { name: 'position_ids', shape: [rows, T], dtype: 'int64', data: positions },
      { name: 'segment_ids', shape: [rows, T], dtype: 'int64', data: segments },
      { name: 'labels', shape: [rows * T], dtype: 'int64', data: labels },
      { name: 'loss_weights', shape: [rows * T], data: weights, check: false },
      { name: 'ref_chosen_logps', shape: [P], data: Float64Array.from([-9, -11]) },
      { name: 'ref_rejected_logps', shape: [P], data: Float64Array.from([-10, -8.5]) },
      { name: 'pair_weights', shape: [P], data: Float64Array.from([1, 1]), check: false },
      ...shapes.map(([name, shape]) => ({ name, shape, data: base.get(name)!, check: checked.has(name) })),
    ],
    (inputIds, positionIds, segmentIds, lbl, lw, rc, rr, pw, ...ws) => {
      const g = inputIds.graph;
      const byName = new Map<string, Tensor>(shapes.map(([name], i) => [name, ws[i]]));
      const head = llamaHidden(g, cfg, { inputIds, positionIds, segmentIds }, { weight: (n) => byName.get(n)! });
      return dpoTerms(sequenceLogps(head, lbl, lw, rows), rc, rr, pw, 0.5).lossSum;
    },
    { tol: 1e-5, maxProbes: 12 },
  );
});

test('with the adapter off (B = 0) the policy is the reference: loss log 2, rewards 0, margin 0', async () => {
  const s = spec();
  const model = loadHfModel(s.baseModelDir);
  const plan = makeDpoPlan(s, model.config);
  const setup = modelSetup(model.config, s.lora);
  const { frozen, params } = initialTensors(setup, new Map([...model.weights].map(([n, t]) => [n, t.data])), s.seed);
  const P = plan.pairsPerMicro;
  const ref = await referenceLogps(setup, frozen, plan.valid!.pairs, { pairsPerMicro: P, seqLen: plan.seqLen, padId: plan.padId });
  assert.ok([...ref.chosen, ...ref.rejected].every((x) => Number.isFinite(x) && x < 0));
  // The pirate framing adds tokens: the chosen response has a lower log-prob under the base model.
  const runner = new DpoRunner(setup, { rows: 2 * P, seqLen: plan.seqLen, pairs: P }, frozen, freshOptimizerState(params), 0.1);
  const batches = plan.validPairs().map((ids) => pairMicroBatch(plan.valid!.pairs, ids, plan.seqLen, plan.padId, ref));
  const m = dpoMeans(await runner.dpoEvaluate(batches));
  await runner.release();
  assert.ok(Math.abs(m.loss - Math.LN2) < 1e-4, `loss ${m.loss}`);
  assert.ok(Math.abs(m.rewardsChosen) < 1e-4 && Math.abs(m.rewardsRejected) < 1e-4, JSON.stringify(m));
  assert.ok(Math.abs(m.rewardMargin) < 1e-4);
});

test('training on pirate-vs-plain pairs widens the chosen-over-rejected margin on held-out pairs', async () => {
  const a = await run(spec({ trainingFile: join(root, 'samples/dpo-train.jsonl'), hyperparameters: { n_epochs: 2, batch_size: 4, learning_rate_multiplier: 2, beta: 0.1 }, lora: { rank: 8, alpha: 16, dropout: 0, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] } }));
  const first = a.metrics[0];
  const last = a.metrics[a.metrics.length - 1];
  assert.equal(a.result.steps, 20);
  // Every metrics event carries the DPO fields; accuracy is the reward accuracy.
  for (const m of a.metrics) {
    for (const k of ['train_rewards_chosen', 'train_rewards_rejected', 'train_reward_accuracy', 'train_reward_margin'] as const) assert.equal(typeof m[k], 'number', k);
    assert.equal(m.train_mean_token_accuracy, m.train_reward_accuracy);
  }
  assert.ok(Math.abs(first.train_loss - Math.LN2) < 0.05, `first loss ${first.train_loss}`);
  const margin = last.full_valid_reward_margin!;
  console.log(`held-out (10 pairs): margin ${margin.toFixed(3)}, accuracy ${last.full_valid_reward_accuracy}, loss ${last.full_valid_loss!.toFixed(4)}; chosen ${last.full_valid_rewards_chosen!.toFixed(3)}, rejected ${last.full_valid_rewards_rejected!.toFixed(3)}; train loss ${first.train_loss.toFixed(4)} → ${last.train_loss.toFixed(4)}`);
  assert.ok(margin > 0.5, `held-out margin ${margin}`);
  assert.ok(last.full_valid_reward_accuracy! >= 0.9, `held-out reward accuracy ${last.full_valid_reward_accuracy}`);
  assert.ok(last.full_valid_loss! < Math.LN2 - 0.1);
  assert.ok(last.train_loss < first.train_loss);
  assert.equal(a.events.filter((e) => e.type === 'checkpoint').length, 2);
});

test('same seed → same losses; resuming from a resume point gives the same later losses (LoRA with dropout, and full)', async () => {
  const a = await run(spec({ checkpointEverySteps: 2 }));
  const b = await run(spec());
  assert.deepEqual(b.losses, a.losses);
  const point = a.events.find((e) => e.type === 'resume_point' && e.step === 4) as { dir: string } | undefined;
  assert.ok(point);
  const resumed = await run(spec({ resumeFrom: point.dir }));
  assert.deepEqual(resumed.losses, a.losses.slice(4));
  assert.deepEqual(resumed.metrics.at(-1), a.metrics.at(-1));

  const full = await run(spec({ lora: null, checkpointEverySteps: 2, hyperparameters: { n_epochs: 1, batch_size: 4, learning_rate_multiplier: 1, beta: 0.1 } }));
  const fullPoint = full.events.find((e) => e.type === 'resume_point' && e.step === 2) as { dir: string };
  const fullResumed = await run(spec({ lora: null, resumeFrom: fullPoint.dir, hyperparameters: { n_epochs: 1, batch_size: 4, learning_rate_multiplier: 1, beta: 0.1 } }));
  assert.deepEqual(fullResumed.losses, full.losses.slice(2));
});

test('pause: an abort with {saveResumePoint: true} writes a resume point at the current step; resuming continues from there', async () => {
  for (const method of ['dpo', 'supervised'] as const) {
    const s = (over: Partial<TrainSpec> = {}) =>
      spec({
        method,
        ...(method === 'supervised' ? { trainingFile: join(tmp, 'sft.jsonl'), validationFile: undefined } : {}),
        checkpointEverySteps: 1000,
        ...over,
      });
    if (method === 'supervised') writeFileSync(join(tmp, 'sft.jsonl'), readFileSync(join(root, 'samples/demo-train.jsonl'), 'utf8').trim().split('\n').slice(0, 12).join('\n') + '\n');
    const reference = await run(s());
    const controller = new AbortController();
    const events: TrainEvent[] = [];
    await assert.rejects(
      train(s(), {
        signal: controller.signal,
        onEvent: async (e) => {
          events.push(e);
          if (e.type === 'metrics' && e.metrics.step === 2) controller.abort({ saveResumePoint: true });
        },
      }),
      (err: Error) => err.name === 'AbortError',
    );
    const points = events.filter((e) => e.type === 'resume_point') as { step: number; dir: string }[];
    assert.deepEqual(points.map((p) => p.step), [2], method);
    const resumed = await run(s({ resumeFrom: points[0].dir }));
    assert.deepEqual(resumed.losses, reference.losses.slice(2), method);
  }
});

test('DPO gradient accumulation over micro-batches equals one micro-batch of all the pairs', async () => {
  const s = spec({ lora: { rank: 4, alpha: 8, dropout: 0, targetModules: ['q_proj', 'v_proj', 'up_proj'] } });
  const model = loadHfModel(s.baseModelDir);
  const plan = makeDpoPlan(s, model.config);
  const setup = modelSetup(model.config, s.lora);
  const base = new Map([...model.weights].map(([n, t]) => [n, t.data]));
  const pairs = plan.train.pairs;
  const ref = await referenceLogps(setup, initialTensors(setup, base, s.seed).frozen, pairs, { pairsPerMicro: 4, seqLen: plan.seqLen, padId: plan.padId });
  const make = (P: number) => {
    const { frozen, params } = initialTensors(setup, base, s.seed);
    return new DpoRunner(setup, { rows: 2 * P, seqLen: plan.seqLen, pairs: P }, frozen, freshOptimizerState(params), 0.1, undefined, { intraOpNumThreads: 1 });
  };
  const big = make(4);
  const small = make(2);
  const ids = [0, 1, 2, 3];
  for (let step = 0; step < 3; step++) {
    const a = await big.dpoStep([pairMicroBatch(pairs, ids, plan.seqLen, plan.padId, ref)], 0.01);
      const b = await small.dpoStep([pairMicroBatch(pairs, [0, 1], plan.seqLen, plan.padId, ref), pairMicroBatch(pairs, [2, 3], plan.seqLen, plan.padId, ref)], 0.01);
    assert.equal(a.pairs, 4);
    assert.ok(Math.abs(a.lossSum - b.lossSum) < 1e-4, `step ${step}: ${a.lossSum} vs ${b.lossSum}`);
    assert.ok(Math.abs(a.gradNorm - b.gradNorm) / a.gradNorm < 1e-3, `grad norm ${a.gradNorm} vs ${b.gradNorm}`);
  }
  const pa = big.state.params.get(setup.trainable[1])!;
  const pb = small.state.params.get(setup.trainable[1])!;
  let maxDiff = 0;
  for (let i = 0; i < pa.length; i++) maxDiff = Math.max(maxDiff, Math.abs(pa[i] - pb[i]));
  assert.ok(maxDiff < 1e-4, `params differ by ${maxDiff}`);
  // Padding pairs carry no loss: three pairs and a padding one give the mean over three.
  const padded = await big.dpoEvaluate([pairMicroBatch(pairs, [0, 1, 2, -1], plan.seqLen, plan.padId, ref)]);
  assert.equal(padded.pairs, 3);
  await big.release();
  await small.release();
});
