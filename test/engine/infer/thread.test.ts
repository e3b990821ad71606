// The worker-thread host: generation runs in the worker while the main thread's timers keep firing;
// streamed deltas arrive before the result; abort, unknown models and concurrent streams.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InferenceHost } from '../../../src/engine/infer/thread.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModelForInference, chatPrompt } from '../../../src/engine/infer/model.ts';
import { readHfConfig } from '../../../src/engine/io/hf-model.ts';
import { SeededRandom } from '../../../src/engine/data/random.ts';
import { writeAdapter } from './fixtures.ts';

const baseModelDir = new URL('../../../models/tiny-llama/', import.meta.url).pathname;
const conversation = [{ role: 'user' as const, content: 'What is two plus two?' }];

test('the worker generates what the model generates in-thread, while the main thread stays responsive', async () => {
  const host = new InferenceHost();
  try {
    const info = await host.load('tiny', { baseModelDir }, { intraOpNumThreads: 1 });
    assert.equal(info.vocabSize, 704);
    assert.equal(info.hasChatTemplate, true);
    const prompt = await host.chatPrompt('tiny', conversation);

    let ticks = 0;
    let ticksAtFirstToken = -1;
    const timer = setInterval(() => ticks++, 1);
    const deltas: string[] = [];
    let finishSeen: string | undefined;
    const options = { maxTokens: 200, temperature: 0.8, seed: 7 };
    const result = await host.generate('tiny', prompt, options, (delta, token) => {
      if (ticksAtFirstToken < 0) ticksAtFirstToken = ticks;
      deltas.push(delta);
      finishSeen = token.finishReason;
    });
    const ticksAtEnd = ticks;
    clearInterval(timer);
    // The timer kept firing during generation (no timing thresholds: only that it ran at all). This
    // seed's sample is 45 tokens long, long enough for a 1 ms timer to get turns between them.
    assert.ok(result.completionTokens >= 20, `${result.completionTokens} tokens`);
    assert.ok(ticksAtEnd > ticksAtFirstToken, `ticks ${ticksAtFirstToken} → ${ticksAtEnd}`);
    assert.equal(deltas.join(''), result.text);
    assert.equal(finishSeen, result.finishReason);

    const local = await loadModelForInference({ baseModelDir }, { intraOpNumThreads: 1 });
    assert.deepEqual(chatPrompt(local, conversation), prompt);
    assert.deepEqual((await local.generate(prompt, options)).tokenIds, result.tokenIds);
    await local.release();
  } finally {
    await host.close();
  }
});

test('concurrent streams, abort, unload and unknown models', async () => {
  const host = new InferenceHost();
  try {
    await host.load('tiny', { baseModelDir }, { intraOpNumThreads: 1 });
    const prompt = await host.chatPrompt('tiny', conversation);
    const local = await loadModelForInference({ baseModelDir }, { intraOpNumThreads: 1 });
    await local.release();
    const [a, b] = await Promise.all([
      host.generate('tiny', prompt, { maxTokens: 20, temperature: 0 }),
      host.generate('tiny', prompt, { maxTokens: 20, temperature: 0 }),
    ]);
    assert.deepEqual(a.tokenIds, b.tokenIds);

    const controller = new AbortController();
    let streamed = 0;
    const aborted = host.generate('tiny', prompt, { maxTokens: 400, temperature: 1, seed: 1, signal: controller.signal }, () => {
      if (++streamed === 3) controller.abort();
    });
    await assert.rejects(aborted, { name: 'AbortError' });
    assert.ok(streamed < 400);
    // A consumer that throws ends its own generation with that error; the host keeps serving.
    await assert.rejects(host.generate('tiny', prompt, { maxTokens: 50, temperature: 0 }, () => { throw new Error('client went away'); }), /client went away/);
    assert.deepEqual((await host.generate('tiny', prompt, { maxTokens: 3, temperature: 0 })).tokenIds, a.tokenIds.slice(0, 3));

    assert.deepEqual(await host.textPrompt('tiny', 'Ahoy'), local.tokenizer.encode('Ahoy', { addSpecialTokens: true }));
    await assert.rejects(host.generate('nope', prompt), /model nope is not loaded/);
    await host.unload('tiny');
    await assert.rejects(host.chatPrompt('tiny', conversation), /not loaded/);
  } finally {
    await host.close();
  }
});

test('adapters loaded with shareBase run over one base and generate what their merged models do', async () => {
  const { config } = readHfConfig(baseModelDir);
  const dirs = [0, 1].map(() => mkdtempSync(join(tmpdir(), 'tuneforge-lora-')));
  const host = new InferenceHost();
  try {
    dirs.forEach((dir, i) => {
      const r = new SeededRandom(40 + i);
      writeAdapter(config, dir, (_, n) => new Float32Array(n).map(() => (r.next() * 2 - 1) * 0.3), 50 + i);
    });
    const settings = { intraOpNumThreads: 1 };
    await Promise.all([
      host.load('ft-a', { baseModelDir, adapterDir: dirs[0] }, { ...settings, shareBase: true }),
      host.load('ft-b', { baseModelDir, adapterDir: dirs[1] }, { ...settings, shareBase: true }),
      host.load('merged-a', { baseModelDir, adapterDir: dirs[0] }, settings),
      host.load('merged-b', { baseModelDir, adapterDir: dirs[1] }, settings),
    ]);
    const prompt = await host.chatPrompt('ft-a', conversation);
    const options = { maxTokens: 12, temperature: 0.7, seed: 3 };
    const [a, b, mergedA, mergedB] = await Promise.all(['ft-a', 'ft-b', 'merged-a', 'merged-b'].map((key) => host.generate(key, prompt, options)));
    assert.deepEqual(a.tokenIds, mergedA.tokenIds);
    assert.deepEqual(b.tokenIds, mergedB.tokenIds);
    await host.unload('ft-a');
    assert.deepEqual((await host.generate('ft-b', prompt, options)).tokenIds, b.tokenIds); // the base outlives one user
  } finally {
    await host.close();
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  }
});
