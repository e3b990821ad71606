// Inference speed on a Llama-shaped model with random weights (default: SmolLM2-135M's shape).
//   npm run bench:infer -- --layers 30 --hidden 576 --inter 1536 --heads 9 --kv 3 --vocab 49152
//                          --prompt 128 --gen 128 --runs 5 --batch 4 [--threads 2] [--arena 1]
// Prints, after compiling each step shape once (reported separately as compile_s):
//   ttft_ms          prompt → first token (prefill of --prompt tokens + one sampling), median of runs
//   prefill_tok_s    prompt tokens per second in that prefill
//   decode_tok_s     generated tokens per second over --gen greedy decode steps (KV cache), median
//   batch_decode_tok_s  tokens per second summed over --batch sequences decoding together
//                    (one batched step per token for all of them, as concurrent requests do)
//   sample_ms        top-p sampling of one token over the vocabulary (the JS part of a decode step;
//                    random weights give a flat distribution, top-p's slowest case)
// Reference, same run, same weights at the same precision (f32): node-llama-cpp (llama.cpp) on a GGUF
// written by our exporter, greedy, same prompt, same thread count, its runs alternating with ours;
// printed as llamacpp_* plus ratios.
// --llamacpp 0 skips it.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { writeModelGguf } from '../src/engine/export/index.ts';
import { LLAMA_FEATURES, type ModelConfig } from '../src/engine/models/config.ts';
import { llamaWeightShapes } from '../src/engine/models/llama.ts';
import { inferenceWeights } from '../src/engine/infer/decoder.ts';
import { DecoderSteps } from '../src/engine/infer/steps.ts';
import { indexOfMax, sampleToken } from '../src/engine/infer/sampling.ts';
import { SeededRandom } from '../src/engine/data/random.ts';

const { values: a } = parseArgs({
  options: Object.fromEntries(
    ['layers', 'hidden', 'inter', 'heads', 'kv', 'vocab', 'prompt', 'gen', 'runs', 'threads', 'arena', 'tied', 'batch', 'llamacpp'].map((k) => [k, { type: 'string' as const }]),
  ),
});
const num = (k: string, d: number) => (a[k] !== undefined ? Number(a[k]) : d);
const [L, D, I, H, KV, V, P, N, runs] = [
  num('layers', 30), num('hidden', 576), num('inter', 1536), num('heads', 9), num('kv', 3),
  num('vocab', 49152), num('prompt', 128), num('gen', 128), num('runs', 5),
];
const cfg: ModelConfig = {
  ...LLAMA_FEATURES,
  architecture: 'llama', vocabSize: V, hiddenSize: D, intermediateSize: I, numLayers: L, numHeads: H, numKvHeads: KV,
  headDim: D / H, rmsNormEps: 1e-5, ropeTheta: 100000, ropeScaling: null, tieWordEmbeddings: num('tied', 1) === 1,
  attentionBias: false, outputBias: false, mlpBias: false, maxPositionEmbeddings: 8192, slidingWindow: null,
  bosTokenId: 1, eosTokenId: 2, padTokenId: 0, torchDtype: 'float32',
};

const rng = new SeededRandom(0);
const hf = new Map<string, Float32Array>();
for (const [name, shape] of llamaWeightShapes(cfg)) {
  const w = new Float32Array(shape.reduce((x, y) => x * y, 1));
  if (name.endsWith('norm.weight')) w.fill(1);
  else for (let i = 0; i < w.length; i++) w[i] = (rng.next() * 2 - 1) * 0.035;
  hf.set(name, w);
}
const params = [...hf.values()].reduce((s, w) => s + w.length, 0);
const threads = num('threads', 2);
const ggufDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tuneforge-bench-infer-'));
const ggufFile = path.join(ggufDir, 'bench-f32.gguf');
if (num('llamacpp', 1) === 1) {
  const shapes = llamaWeightShapes(cfg);
  const weights = new Map([...hf].map(([name, data]) => [name, { shape: shapes.get(name)!, data }]));
  writeModelGguf({ config: cfg, weights, tokenizerDir: null, name: 'bench' }, ggufFile, 'f32');
}
const steps = new DecoderSteps(cfg, inferenceWeights(cfg, (name) => hf.get(name)!), {
  intraOpNumThreads: threads,
  enableCpuMemArena: num('arena', 1) === 1,
});
hf.clear();

const prompt = Array.from({ length: P }, () => rng.nextInt(V));
const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
const sampling = { temperature: 0.8, topP: 0.95, presencePenalty: 0, frequencyPenalty: 0 };

// Warm-up: compiles the prefill shape and every decode capacity the runs will touch.
let t0 = performance.now();
{
  const cache = steps.newCache();
  let logits = await steps.forward(cache, prompt);
  for (let i = 0; i < N; i++) logits = await steps.forward(cache, [indexOfMax(logits)]);
}
const compileSeconds = (performance.now() - t0) / 1000;

/**
 * The same measurements with llama.cpp: time to first token, then greedy decode tokens/s. Loaded
 * once; `run()` is one measured generation, so the runs can alternate with ours (this machine's
 * speed drifts by tens of percent over minutes; alternating keeps both sides under the same load).
 */
async function llamaCpp(): Promise<{ run: () => Promise<{ ttftMs: number; decodeTokS: number }>; dispose: () => Promise<void> } | null> {
  if (!fs.existsSync(ggufFile)) return null;
  const { getLlama } = await import('node-llama-cpp');
  // gpu: false and build: 'never': the prebuilt CPU binary, never a download or a compile.
  const llama = await getLlama({ gpu: false, build: 'never', progressLogs: false, logLevel: 'error' as never });
  const model = await llama.loadModel({ modelPath: ggufFile, gpuLayers: 0 });
  const context = await model.createContext({ contextSize: P + N + 8, batchSize: P, threads });
  const run = async () => {
    const sequence = context.getSequence();
    let count = 0;
    let first = 0;
    const start = performance.now();
    for await (const _token of sequence.evaluate(prompt as never[], { temperature: 0, yieldEogToken: true })) {
      if (count === 0) first = performance.now();
      if (++count > N) break;
    }
    const end = performance.now();
    sequence.dispose();
    return { ttftMs: first - start, decodeTokS: N / ((end - first) / 1000) };
  };
  const dispose = async () => {
    await context.dispose();
    await model.dispose();
    await llama.dispose();
  };
  return { run, dispose };
}
const reference = await llamaCpp();
await reference?.run(); // warm-up
const referenceTtft: number[] = [];
const referenceRates: number[] = [];

const ttft: number[] = [];
const decodeRates: number[] = [];
const sampleMs: number[] = [];
for (let r = 0; r < runs; r++) {
  const cache = steps.newCache();
  t0 = performance.now();
  let logits = await steps.forward(cache, prompt);
  let next = sampleToken(logits, sampling, rng);
  ttft.push(performance.now() - t0);
  t0 = performance.now();
  for (let i = 0; i < N; i++) {
    logits = await steps.forward(cache, [next]);
    next = indexOfMax(logits);
  }
  decodeRates.push(N / ((performance.now() - t0) / 1000));
  t0 = performance.now();
  for (let i = 0; i < 10; i++) sampleToken(logits, sampling, rng);
  sampleMs.push((performance.now() - t0) / 10);
  if (reference) {
    const { ttftMs, decodeTokS } = await reference.run();
    referenceTtft.push(ttftMs);
    referenceRates.push(decodeTokS);
  }
}
await reference?.dispose();
const ttftMs = median(ttft);

// Batched decode: --batch sequences with the same prompt, one step per token for all.
const batch = num('batch', 4);
const batchRates: number[] = [];
if (batch > 1) {
  for (let r = 0; r < runs; r++) {
    const cache = steps.newCache(batch);
    let next = 0;
    for (let b = 0; b < batch; b++) next = indexOfMax(await steps.forward(cache, prompt, undefined, b));
    if (r === 0) await steps.decodeBatch(cache, new Array(batch).fill(next)); // compile this shape
    t0 = performance.now();
    for (let i = 0; i < N; i++) {
      const logits = await steps.decodeBatch(cache, new Array(batch).fill(next));
      next = indexOfMax(logits[0]!);
    }
    batchRates.push((batch * N) / ((performance.now() - t0) / 1000));
  }
}
const shapes = steps.compiledShapes;
await steps.release();

fs.rmSync(ggufDir, { recursive: true, force: true });

console.log(`model: layers=${L} hidden=${D} inter=${I} heads=${H} kv=${KV} vocab=${V} tied=${cfg.tieWordEmbeddings} params=${(params / 1e6).toFixed(1)}M f32`);
console.log(`threads=${threads} prompt=${P} gen=${N} runs=${runs} shapes=${shapes.join(',')}`);
console.log(`compile_s=${compileSeconds.toFixed(2)} (first pass: compiling the prefill and decode shapes, then running them)`);
console.log(`ttft_ms=${ttftMs.toFixed(1)}`);
console.log(`prefill_tok_s=${(P / (ttftMs / 1000)).toFixed(0)}`);
console.log(`decode_tok_s=${median(decodeRates).toFixed(1)}`);
if (batch > 1) console.log(`batch_decode_tok_s=${median(batchRates).toFixed(1)} (batch=${batch})`);
console.log(`sample_ms=${median(sampleMs).toFixed(2)}`);
if (reference) {
  const decode = median(decodeRates);
  const [refTtft, refDecode] = [median(referenceTtft), median(referenceRates)];
  console.log(`llamacpp_ttft_ms=${refTtft.toFixed(1)} llamacpp_prefill_tok_s=${(P / (refTtft / 1000)).toFixed(0)} llamacpp_decode_tok_s=${refDecode.toFixed(1)}`);
  console.log(`ratio_vs_llamacpp: prefill=${(refTtft / ttftMs).toFixed(2)} decode=${(decode / refDecode).toFixed(2)}`);
}
console.log(`peak_rss_mb=${(process.resourceUsage().maxRSS / 1024).toFixed(0)}`);
