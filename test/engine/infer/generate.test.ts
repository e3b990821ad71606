// Generation on models/tiny-llama: greedy equals argmax of full forwards; seeds; stop strings and
// max tokens; LoRA merged at load (B = 0 → the base; B ≠ 0 → the W + (α/r)·B·A logits).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadHfModel, saveHfModel } from '../../../src/engine/io/hf-model.ts';
import { Graph, type Tensor } from '../../../src/engine/graph/ir.ts';
import { CompiledGraph } from '../../../src/engine/runtime/session.ts';
import { llamaLogits, llamaInputs } from '../../../src/engine/models/llama.ts';
import { loraTargets } from '../../../src/engine/models/lora.ts';
import { chatPrompt, loadModelForInference, loadSharedBase, textPrompt, type InferenceModel } from '../../../src/engine/infer/model.ts';
import { indexOfMax } from '../../../src/engine/infer/sampling.ts';
import { SeededRandom } from '../../../src/engine/data/random.ts';
import { fullForward, maxAbsDiff, writeAdapter } from './fixtures.ts';

const baseModelDir = new URL('../../../models/tiny-llama/', import.meta.url).pathname;
const base = loadHfModel(baseModelDir);
const baseWeights = new Map([...base.weights].map(([k, v]) => [k, v.data]));
const cfg = base.config;
const settings = { intraOpNumThreads: 1 };
const conversation = [
  { role: 'system' as const, content: 'You are Captain Byte, a helpful pirate.' },
  { role: 'user' as const, content: 'What colour is the sky?' },
];

let model: InferenceModel;
test.before(async () => {
  model = await loadModelForInference({ baseModelDir }, settings);
});
test.after(async () => {
  await model.release();
});

test('chatPrompt renders the ChatML generation prompt', () => {
  const text = model.tokenizer.decode(chatPrompt(model, conversation));
  assert.ok(text.startsWith('<|im_start|>system\nYou are Captain Byte'), text);
  assert.ok(text.endsWith('<|im_start|>assistant\n'), text);
  assert.deepEqual(model.eosTokenIds.sort(), [677, 679]);
});

test('greedy generation equals step-by-step argmax of full forwards', async () => {
  const prompt = chatPrompt(model, conversation);
  const result = await model.generate(prompt, { maxTokens: 12, temperature: 0 });
  const ids = [...prompt];
  for (let i = 0; i < result.tokenIds.length; i++) {
    const logits = await fullForward(cfg, baseWeights, ids);
    const next = indexOfMax(logits.subarray((ids.length - 1) * cfg.vocabSize));
    assert.equal(result.tokenIds[i], next, `token ${i}`);
    ids.push(next);
  }
  assert.equal(result.promptTokens, prompt.length);
  assert.equal(result.completionTokens, result.tokenIds.length);
  if (result.finishReason === 'length') assert.equal(result.tokenIds.length, 12);
});

test('same seed, same output; different seeds differ; streamed deltas add up to the text', async () => {
  const prompt = chatPrompt(model, conversation);
  const options = { maxTokens: 24, temperature: 1, topP: 0.95, seed: 42 };
  const deltas: string[] = [];
  const a = await model.generate(prompt, options, (delta) => deltas.push(delta));
  const b = await model.generate(prompt, options);
  assert.deepEqual(b.tokenIds, a.tokenIds);
  assert.equal(deltas.length, a.tokenIds.length);
  assert.equal(deltas.join(''), a.text);
  const others = await Promise.all([1, 2, 3].map((seed) => model.generate(prompt, { ...options, seed })));
  assert.ok(others.some((o) => o.tokenIds.join() !== a.tokenIds.join()));
});

test('maxTokens ends with length; a stop string ends with stop and is cut from the text', async () => {
  const prompt = chatPrompt(model, conversation);
  const long = await model.generate(prompt, { maxTokens: 30, temperature: 0.7, seed: 3 });
  const eos = new Set(model.eosTokenIds);
  if (!long.tokenIds.some((id) => eos.has(id))) {
    assert.equal(long.finishReason, 'length');
    assert.equal(long.tokenIds.length, 30);
  }
  // Stop on a piece of text the same seeded run produces: output is the text before it.
  const at = Math.floor(long.text.length / 2);
  const stop = long.text.slice(at, at + 3);
  assert.ok(stop.length === 3, long.text);
  const stopped = await model.generate(prompt, { maxTokens: 30, temperature: 0.7, seed: 3, stop: ['\u0000never', stop] });
  assert.equal(stopped.finishReason, 'stop');
  assert.equal(stopped.text, long.text.slice(0, long.text.indexOf(stop)));
  assert.ok(stopped.tokenIds.length < long.tokenIds.length);
});

test('EOS ends generation with stop, and its id counts but is not text', async () => {
  // The random tiny model emits EOS now and then when sampled hot; seeds are deterministic, so
  // the first seed that does is always the same one.
  const prompt = chatPrompt(model, conversation);
  const eos = new Set(model.eosTokenIds);
  for (let seed = 0; seed < 40; seed++) {
    const r = await model.generate(prompt, { maxTokens: 40, temperature: 1.5, seed });
    const last = r.tokenIds[r.tokenIds.length - 1];
    if (eos.has(last)) {
      assert.equal(r.finishReason, 'stop');
      assert.ok(!r.text.includes('<|im_end|>') && !r.text.includes('<|endoftext|>'));
      return;
    }
  }
  assert.fail('no seed produced EOS within 40 tokens');
});

test('logprobs: chosen token and top alternatives are log-softmax of the raw logits', async () => {
  const prompt = chatPrompt(model, conversation);
  const r = await model.generate(prompt, { maxTokens: 3, temperature: 0, logprobs: true, topLogprobs: 3 });
  assert.equal(r.logprobs!.length, r.tokenIds.length);
  const logits = await model.nextTokenLogits(prompt);
  let z = 0;
  for (const l of logits) z += Math.exp(l);
  const first = r.logprobs![0];
  assert.equal(first.tokenId, r.tokenIds[0]);
  assert.ok(Math.abs(first.logprob - (logits[first.tokenId] - Math.log(z))) < 1e-4);
  assert.equal(first.topLogprobs.length, 3);
  assert.equal(first.topLogprobs[0].tokenId, first.tokenId); // greedy picks the most likely
  assert.ok(first.topLogprobs[0].logprob >= first.topLogprobs[1].logprob);
  for (const lp of r.logprobs!) if (!lp.token.includes('\uFFFD')) assert.equal(Buffer.from(lp.bytes).toString('utf8'), lp.token);
});

test('LoRA with B = 0 generates exactly what the base does', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tuneforge-lora-'));
  try {
    writeAdapter(cfg, dir, (_, n) => new Float32Array(n));
    const adapted = await loadModelForInference({ baseModelDir, adapterDir: dir }, settings);
    const prompt = chatPrompt(model, conversation);
    const options = { maxTokens: 16, temperature: 0.9, seed: 11 };
    assert.deepEqual((await adapted.generate(prompt, options)).tokenIds, (await model.generate(prompt, options)).tokenIds);
    await adapted.release();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a non-zero adapter changes logits as W x + (α/r)·B A x predicts', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tuneforge-lora-'));
  try {
    const r = new SeededRandom(9);
    const { spec, tensors } = writeAdapter(cfg, dir, (_, n) => new Float32Array(n).map(() => (r.next() * 2 - 1) * 0.2));
    const adapted = await loadModelForInference({ baseModelDir, adapterDir: dir }, settings);
    const prompt = chatPrompt(model, conversation);
    const merged = await adapted.nextTokenLogits(prompt);
    // Reference: the training graph with unmerged LoRA matmuls.
    const T = prompt.length;
    const g = new Graph('float32');
    const inputs = llamaInputs(g, 1, T);
    const seen = new Map<string, Tensor>();
    const targets = new Set(loraTargets(cfg, spec).map((m) => m.path));
    g.output('logits', llamaLogits(g, cfg, inputs, {
      weight: (name, shape) => seen.get(name) ?? seen.set(name, g.input(name, shape)).get(name)!,
      lora: { ...spec, targets },
    }));
    const session = await CompiledGraph.compile(g, settings);
    const out = await session.run({
      input_ids: BigInt64Array.from(prompt.map(BigInt)),
      position_ids: BigInt64Array.from(prompt.map((_, i) => BigInt(i))),
      segment_ids: new BigInt64Array(T).fill(1n),
      ...Object.fromEntries(baseWeights),
      ...Object.fromEntries([...tensors].map(([k, v]) => [k, v.data])),
    });
    await session.release();
    const reference = (out.logits as Float32Array).subarray((T - 1) * cfg.vocabSize);
    assert.ok(maxAbsDiff(merged, reference) < 2e-4, `max |Δ| ${maxAbsDiff(merged, reference)}`);
    const baseLogits = await model.nextTokenLogits(prompt);
    assert.ok(maxAbsDiff(merged, baseLogits) > 1e-2, 'the adapter changed nothing');
    await adapted.release();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('concurrent generations interleave up to the limit; beyond it they wait their turn (FIFO)', async () => {
  const prompt = chatPrompt(model, conversation);
  const order: string[] = [];
  const run = (m: InferenceModel, name: string) => m.generate(prompt, { maxTokens: 5, temperature: 0 }, () => order.push(name));
  await Promise.all([run(model, 'a'), run(model, 'b')]);
  assert.notEqual(order.join(''), 'aaaaabbbbb', 'two streams under the default limit interleave');
  const single = await loadModelForInference({ baseModelDir }, { ...settings, maxConcurrentGenerations: 1 });
  order.length = 0;
  await Promise.all([run(single, 'a'), run(single, 'b'), run(single, 'c')]);
  assert.equal(order.join(''), 'aaaaabbbbbccccc');
  await single.release();
});

test('a shared base runs adapters unmerged with the logits and tokens of the merged adapter', async () => {
  const dirs = [0, 1].map(() => mkdtempSync(join(tmpdir(), 'tuneforge-lora-')));
  try {
    dirs.forEach((dir, i) => {
      const r = new SeededRandom(20 + i);
      writeAdapter(cfg, dir, (_, n) => new Float32Array(n).map(() => (r.next() * 2 - 1) * 0.2), 30 + i, i === 0 ? ['q_proj', 'k_proj', 'v_proj', 'o_proj'] : ['gate_proj', 'up_proj', 'down_proj', 'v_proj']);
    });
    const shared = await loadSharedBase(baseModelDir, settings);
    const prompt = chatPrompt(model, conversation);
    const bare = shared.withAdapter();
    assert.ok(maxAbsDiff(await bare.nextTokenLogits(prompt), await model.nextTokenLogits(prompt)) < 1e-5);
    for (const dir of dirs) {
      const unmerged = shared.withAdapter(dir);
      const merged = await loadModelForInference({ baseModelDir, adapterDir: dir }, settings);
      const diff = maxAbsDiff(await unmerged.nextTokenLogits(prompt), await merged.nextTokenLogits(prompt));
      assert.ok(diff < 2e-4, `max |Δ| ${diff}`);
      const options = { maxTokens: 10, temperature: 0 };
      const tokens = (await unmerged.generate(prompt, options)).tokenIds;
      assert.deepEqual(tokens, (await merged.generate(prompt, options)).tokenIds);
      await merged.release();
    }
    assert.notDeepEqual(await shared.withAdapter(dirs[0]).nextTokenLogits(prompt), await shared.withAdapter(dirs[1]).nextTokenLogits(prompt));
    await shared.release();
  } finally {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  }
});

test('logit_bias +100 forces a token; −100 bans one; textPrompt encodes plain text', async () => {
  const prompt = textPrompt(model, 'The sky is');
  assert.deepEqual(prompt, model.tokenizer.encode('The sky is', { addSpecialTokens: true }));
  const forced = await model.generate(prompt, { maxTokens: 4, temperature: 1, seed: 1, logitBias: { 300: 100 } });
  assert.deepEqual(forced.tokenIds, [300, 300, 300, 300]);
  const greedy = await model.generate(prompt, { maxTokens: 1, temperature: 0 });
  const banned = await model.generate(prompt, { maxTokens: 1, temperature: 0, logitBias: { [greedy.tokenIds[0]]: -100 } });
  assert.notEqual(banned.tokenIds[0], greedy.tokenIds[0]);
  await assert.rejects(model.generate(prompt, { logitBias: { 99999: 1 } }), /outside the vocabulary/);
});

test('a full fine-tune folder (modelDir) brings its own weights; the tokenizer falls back to the base', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tuneforge-full-'));
  try {
    // The base weights with lm_head doubled: logits double, and nothing in dir but config + weights.
    const weights = new Map([...base.weights].map(([name, t]) => [name, name === 'lm_head.weight' ? { shape: t.shape, data: t.data.map((v) => 2 * v) } : t]));
    saveHfModel(dir, base.rawConfig, weights);
    const full = await loadModelForInference({ baseModelDir, modelDir: dir }, settings);
    const prompt = chatPrompt(full, conversation);
    const doubled = (await model.nextTokenLogits(prompt)).map((v) => 2 * v);
    assert.ok(maxAbsDiff(await full.nextTokenLogits(prompt), doubled) < 1e-4);
    await full.release();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
