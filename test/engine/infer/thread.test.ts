// The worker-thread host: generation runs in the worker while the main thread's timers keep firing;
// streamed deltas arrive before the result; abort, unknown models and concurrent streams.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InferenceHost } from '../../../src/engine/infer/thread.ts';
import { loadModelForInference, chatPrompt } from '../../../src/engine/infer/model.ts';

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

    await assert.rejects(host.generate('nope', prompt), /model nope is not loaded/);
    await host.unload('tiny');
    await assert.rejects(host.chatPrompt('tiny', conversation), /not loaded/);
  } finally {
    await host.close();
  }
});
