// The worker-thread host: generation runs in the worker while the main thread's timers keep firing;
// streamed deltas arrive before the result; abort, unknown models and concurrent streams.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InferenceHost } from '../../../src/engine/infer/thread.ts';
import { EngineError } from '../../../src/engine/errors.ts';
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

    // Responsiveness without timing thresholds: a main-thread timer set when the first token
    // arrives fires (and aborts) while the worker is still generating. With EOS banned the
    // generation would run to the context limit (~480 tokens), far longer than a timer turn.
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const controller = new AbortController();
    let streamed = 0;
    const long = host.generate('tiny', prompt, { temperature: 0.8, seed: 7, logitBias: { 677: -100, 679: -100 }, signal: controller.signal }, () => {
      if (streamed++ === 0) setTimeout(() => controller.abort(), 5);
    });
    await assert.rejects(long, { name: 'AbortError' });
    clearInterval(timer);
    assert.ok(streamed > 0 && streamed < info.contextLength - prompt.length, `${streamed} tokens streamed`);
    assert.ok(ticks > 0);

    const deltas: string[] = [];
    let finishSeen: string | undefined;
    const options = { maxTokens: 200, temperature: 0.8, seed: 7 };
    const result = await host.generate('tiny', prompt, options, (delta, token) => {
      deltas.push(delta);
      finishSeen = token.finishReason;
    });
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
    // A refused request comes back from the worker as an EngineError with its code (callers act on
    // the code, never on the wording).
    const refused = await host.generate('tiny', [999_999]).then(() => assert.fail('an id outside the vocabulary was accepted'), (err: unknown) => err);
    assert.ok(refused instanceof EngineError, String(refused));
    assert.equal(refused.code, 'invalid_prompt');
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

test('closing a host mid-generation or mid-load, 10 times, ends its requests without taking the process down', async () => {
  // Terminating the thread inside an ONNX Runtime call (a step, a session being created) aborts
  // the whole process (Napi::Error), so close() waits for the worker to stop and release its
  // sessions first: a crash here ends this file. Even rounds close on the first streamed token,
  // odd ones after a delay that lands in loading, prompting or generating.
  const ended = (e: Error) => e.name === 'AbortError' || (e instanceof EngineError && (e.code === 'inference_worker_exited' || e.code === 'inference_host_closed'));
  for (let i = 0; i < 10; i++) {
    const host = new InferenceHost();
    let closed: Promise<void> | undefined;
    const close = () => (closed ??= host.close());
    const work = (async () => {
      await host.load('tiny', { baseModelDir }, { intraOpNumThreads: 1 });
      const prompt = await host.chatPrompt('tiny', conversation);
      const options = (seed: number) => ({ temperature: 0.8, seed, logitBias: { 677: -100, 679: -100 } }); // EOS banned: runs to the context limit
      const generations = [0, 1].map((j) => host.generate('tiny', prompt, options(i * 2 + j), () => void (i % 2 === 0 && close())));
      const another = host.load('tiny-2', { baseModelDir }, { intraOpNumThreads: 1 }); // a load in flight too
      await Promise.all([...generations, another]);
    })();
    if (i % 2 === 1) setTimeout(close, (i * 53) % 300);
    await assert.rejects(work, ended);
    await close();
    await assert.rejects(host.chatPrompt('tiny', conversation), { name: 'EngineError', code: 'inference_host_closed' });
    await host.close(); // again: a no-op
  }
});
