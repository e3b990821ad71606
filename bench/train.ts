// Training-step throughput on a Llama-shaped model with random weights (default: SmolLM2-135M).
//   npm run bench:train -- --mode lora|full --layers 30 --hidden 576 --inter 1536 --heads 9 --kv 3
//                          --vocab 49152 --seq 512 --batch 4 --rank 16 --steps 3 [--threads 2] [--arena 1]
//                          [--recompute on|off|auto|N] [--memory-limit-gb G] [--dtype f32|bf16] [--any-length]
//                          [--huge-pages auto|on|off]
// --recompute auto (default) asks the memory estimate, as a job does, for the least recomputation
// (MLPs first, then whole layers: recomputeLevel) that fits --memory-limit-gb (default: 90% of this
// machine's memory); on = every layer, off = none, N = the first N layers whole. --steps 0 runs the warm-up step only (peak RSS).
// --dtype bf16: the random weights rounded to bf16, frozen ones kept as a job keeps a bf16
// checkpoint's: 2 bytes a value, widened in the step graph, unless the step has memory to spare
// with them in f32 (widenFrozenWhenSpare: then widened once, at load; a small --memory-limit-gb
// keeps them at 2 bytes); trainable ones stay f32.
// --huge-pages auto (default) keeps transparent huge pages as a job's training process does
// (hasMemoryToSpare: the estimate within 60% of the memory limit, nothing recomputed); on keeps them
// whatever the estimate; off turns them off.
// One optimizer step = one [batch, seq] micro-batch through forward, backward, clipping and AdamW
// (LoRA on all seven linears like ../shared/anchors/torch_llama_step.py). Prints GFLOP/s of model
// FLOPs, peak RSS, and last `tokens_per_s=` (median step after one warm-up), comparable with the anchor.

import { parseArgs } from 'node:util';
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import { LLAMA_FEATURES, type ModelConfig } from '../src/engine/models/config.ts';
import { StepRunner, freshOptimizerState, type FrozenValues, type MicroBatch } from '../src/engine/train/runner.ts';
import { halfFrozen } from '../src/engine/train/step.ts';
import { bf16BitsToF32, f32ToBf16Bits } from '../src/engine/io/safetensors.ts';
import { initialTensors, modelSetup } from '../src/engine/train/setup.ts';
import { DEFAULT_ADAMW } from '../src/engine/train/adamw.ts';
import { SeededRandom } from '../src/engine/data/random.ts';
import { ALL_LINEAR } from '../src/engine/models/lora.ts';
import { autoRecompute, estimateStep, hasMemoryToSpare, measureMatmulGflops, recomputeLevel, widenFrozenWhenSpare } from '../src/engine/train/memory-estimate.ts';
import { CHILD_GLIBC_TUNABLES } from '../src/scheduler/train-process.ts';
import { disableHugePages, hugePagesAllowed } from '../src/engine/runtime/huge-pages.ts';

// Measure what a job's training process runs like: glibc tunables apply at process start, so
// re-run this script with the training process's settings unless the environment sets its own.
if (process.env.GLIBC_TUNABLES === undefined) {
  const env = { ...process.env, GLIBC_TUNABLES: CHILD_GLIBC_TUNABLES };
  process.exit(spawnSync(process.execPath, [...process.execArgv, ...process.argv.slice(1)], { stdio: 'inherit', env }).status ?? 1);
}

const a = parseArgs({
  options: {
    ...Object.fromEntries(
      ['mode', 'layers', 'hidden', 'inter', 'heads', 'kv', 'vocab', 'seq', 'batch', 'rank', 'steps', 'threads', 'arena', 'mempattern', 'profile', 'recompute', 'memory-limit-gb', 'dtype', 'huge-pages'].map((k) => [k, { type: 'string' as const }]),
    ),
    'any-length': { type: 'boolean' as const },
  },
}).values as Record<string, string | boolean | undefined>;
const num = (k: string, d: number) => (a[k] !== undefined ? Number(a[k]) : d);
const mode = (a.mode as string | undefined) ?? 'lora';
const [L, D, I, H, KV, V, T, B, R, steps] = [
  num('layers', 30), num('hidden', 576), num('inter', 1536), num('heads', 9), num('kv', 3),
  num('vocab', 49152), num('seq', 512), num('batch', 4), num('rank', 16), num('steps', 3),
];
const hd = D / H;
const cfg: ModelConfig = {
  ...LLAMA_FEATURES,
  architecture: 'llama', vocabSize: V, hiddenSize: D, intermediateSize: I, numLayers: L, numHeads: H, numKvHeads: KV,
  headDim: hd, rmsNormEps: 1e-5, ropeTheta: 10000, ropeScaling: null, tieWordEmbeddings: true, attentionBias: false,
  outputBias: false, mlpBias: false, maxPositionEmbeddings: 8192, slidingWindow: null, bosTokenId: 1, eosTokenId: 2,
  padTokenId: 0, torchDtype: 'float32',
};

const rng = new SeededRandom(0);
const dtype = (a.dtype as string | undefined) ?? 'f32';
if (!['f32', 'bf16'].includes(dtype)) throw new Error(`--dtype must be f32 or bf16, got ${dtype}`);
const modelOnly = {
  ...modelSetup(cfg, mode === 'lora' ? { rank: R, alpha: 2 * R, dropout: 0, targetModules: ALL_LINEAR } : null),
  frozenDtype: dtype === 'bf16' ? ('BF16' as const) : undefined,
};
const policy = (a.recompute as string | undefined) ?? 'auto';
const fixed = policy === 'on' ? L : policy === 'off' ? 0 : /^\d+$/.test(policy) && Number(policy) <= L ? Number(policy) : undefined;
if (policy !== 'auto' && fixed === undefined) throw new Error(`--recompute must be on, off, auto or a number of layers 0…${L}, got ${policy}`);
const limitBytes = num('memory-limit-gb', (0.9 * os.totalmem()) / 1e9) * 1e9;
// One example per row, no padding: a job whose rows never pack runs the unpacked step graph;
// --any-length runs the graph a job's one-example steps run (any length up to anyLengthLimit) at --seq.
const stepShape = a['any-length'] ? { rows: 1, seqLen: T, packs: false, anyLength: true } : { rows: B, seqLen: T, packs: false };
if (a['any-length'] && B !== 1) throw new Error('--any-length takes one row: --batch 1');
let estimates = 0;
const estimateWith = (level: number) => {
  estimates++;
  return estimateStep({ ...modelOnly, ...recomputeLevel(level, L) }, stepShape, 1);
};
const choosing = performance.now();
const levelled = { ...modelOnly, ...(fixed === undefined ? recomputeLevel(autoRecompute(estimateWith, 2 * L, limitBytes), L) : { recompute: fixed, recomputeMlp: 0 }) };
const chose = policy === 'auto' ? `, chosen by ${estimates} estimates in ${((performance.now() - choosing) / 1000).toFixed(1)} s` : '';
const hugePolicy = (a['huge-pages'] as string | undefined) ?? 'auto';
if (!['auto', 'on', 'off'].includes(hugePolicy)) throw new Error(`--huge-pages must be auto, on or off, got ${hugePolicy}`);
if (hugePolicy === 'off') disableHugePages();
// Calibration in the same run: one fp32 matrix product (ENGINE-NOTES: 216–242 GFLOP/s when idle).
// If this is low, other processes share the cores and the step numbers below are low too.
const calibratedGflops = await measureMatmulGflops(num('threads', 2));
console.log(`calibration: matmul 4096×576×1536 at ${calibratedGflops.toFixed(1)} GFLOP/s`);
// The estimate a job is checked with (memory-estimate.ts), to compare with what this run measures,
// for the frozen weights' width a job would choose.
const estimateFor = (s: typeof levelled) => estimateStep(s, stepShape, calibratedGflops);
const { setup, need: estimate } = widenFrozenWhenSpare(levelled, estimateFor(levelled), limitBytes, estimateFor);
if (hugePolicy === 'auto' && !hasMemoryToSpare(setup, estimate.peakBytes, limitBytes)) disableHugePages();
const frozenWidth = modelOnly.frozenDtype ? (setup.frozenDtype ? ' (frozen 2 bytes a value)' : ' (frozen widened to f32 at load)') : '';
console.log(`recompute=${setup.recompute} of ${L} layers, the MLP of ${setup.recomputeMlp} more (${policy}, memory limit ${(limitBytes / 1e9).toFixed(1)} GB${chose}) dtype=${dtype}${frozenWidth} huge_pages=${hugePagesAllowed() ? 'on' : 'off'}`);
const half = halfFrozen(setup);
const base = new Map<string, FrozenValues>();
// Written straight into the arrays the runner keeps: no f32 garbage left for V8 to collect late.
const round = dtype === 'bf16' ? (x: number) => bf16BitsToF32(f32ToBf16Bits(x)) : (x: number) => x;
for (const [name, shape] of setup.shapes) {
  if (name.includes('.lora_')) continue;
  const n = shape.reduce((x, y) => x * y, 1);
  const value = name.endsWith('norm.weight') ? () => 1 : () => (rng.next() * 2 - 1) * 0.035; // ≈ N(0, 0.02²) in variance
  if (half.has(name)) {
    const bits = new Uint16Array(n);
    for (let i = 0; i < n; i++) bits[i] = f32ToBf16Bits(value());
    base.set(name, bits);
  } else {
    const w = new Float32Array(n);
    for (let i = 0; i < n; i++) w[i] = round(value());
    base.set(name, w);
  }
}
const { frozen, params } = initialTensors(setup, base, 0);
const runner = new StepRunner(setup, stepShape, frozen, freshOptimizerState(params), DEFAULT_ADAMW, {
  intraOpNumThreads: num('threads', 2),
  enableCpuMemArena: num('arena', 1) === 1,
  enableMemPattern: num('mempattern', 0) === 1,
  profilePrefix: a.profile as string | undefined,
});

const n = B * T;
const batch: MicroBatch = {
  inputIds: BigInt64Array.from({ length: n }, () => BigInt(Math.floor(rng.next() * V))),
  positionIds: BigInt64Array.from({ length: n }, (_, i) => BigInt(i % T)),
  segmentIds: new BigInt64Array(n).fill(1n),
  labels: BigInt64Array.from({ length: n }, () => BigInt(Math.floor(rng.next() * V))),
  lossWeights: new Float32Array(n).fill(1),
};

// Model FLOPs per step: linear layers 2·params·tokens forward; backward 2× that for full
// fine-tuning (input and weight gradients), 1× for LoRA (input gradients only; adapters are tiny).
const linearParams = L * (D * H * hd + 2 * D * KV * hd + H * hd * D + 3 * D * I) + V * D;
const attention = L * 2 * 2 * B * H * T * T * hd; // QKᵀ and PV, forward
const forward = 2 * linearParams * n + attention;
const flops = forward * (mode === 'lora' ? 2 : 3);

// Wall time is what counts; CPU time / threads is shown too, because on a shared machine it
// estimates what the step would take with both cores to itself.
// What the host holds before any session exists (weights, trainable state): the rest of the peak is ORT's.
console.log(`before the first step: rss ${(process.memoryUsage().rss / 1e9).toFixed(2)} GB, peak so far ${((process.resourceUsage().maxRSS * 1024) / 1e9).toFixed(2)} GB`);
const times: number[] = [];
const cpuTimes: number[] = [];
for (let s = 0; s <= steps; s++) {
  const t = performance.now();
  const cpu = process.cpuUsage();
  const faults = process.resourceUsage().minorPageFault;
  const r = await runner.step([batch], 1e-4);
  const dt = (performance.now() - t) / 1000;
  const used = process.cpuUsage(cpu);
  const cpuS = (used.user + used.system) / 1e6;
  const pageFaults = process.resourceUsage().minorPageFault - faults;
  if (s > 0) times.push(dt), cpuTimes.push(cpuS);
  console.log(`step ${s}${s === 0 ? ' (warm-up, includes graph build + session creation)' : ''}: ${dt.toFixed(2)} s wall, ${cpuS.toFixed(2)} s cpu, ${(pageFaults / 1e3).toFixed(0)}k page faults, loss ${(r.lossSum / r.weightSum).toFixed(4)}`);
}
const rssGb = (process.resourceUsage().maxRSS * 1024) / 1e9;
if (steps === 0) {
  console.log(`mode=${mode} layers=${L} hidden=${D} seq=${T} batch=${B} peak_rss_gb=${rssGb.toFixed(2)} (warm-up step only)`);
  console.log(`estimate_peak_gb=${(estimate.peakBytes / 1e9).toFixed(2)} (host ${(estimate.hostBytes / 1e9).toFixed(2)}, of which frozen ${(estimate.frozenBytes / 1e9).toFixed(2)}; graph ${(estimate.graphBytes / 1e9).toFixed(2)}) measured/estimate=${((rssGb * 1e9) / estimate.peakBytes).toFixed(2)}`);
  process.exit(0);
}
const med = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
const median = med(times);
const threads = num('threads', 2);
console.log(`cpu_s=${med(cpuTimes).toFixed(2)} tokens_per_s_if_cores_were_free≈${(n / (med(cpuTimes) / threads)).toFixed(1)}`);
console.log(`mode=${mode} layers=${L} hidden=${D} seq=${T} batch=${B} trainable=${setup.trainable.reduce((s, k) => s + params.get(k)!.length, 0)}`);
console.log(`step_s=${median.toFixed(3)} gflops=${(flops / median / 1e9).toFixed(1)} peak_rss_gb=${rssGb.toFixed(2)}`);
console.log(
  `estimate_peak_gb=${(estimate.peakBytes / 1e9).toFixed(2)} (host ${(estimate.hostBytes / 1e9).toFixed(2)}, of which frozen ${(estimate.frozenBytes / 1e9).toFixed(2)}; graph ${(estimate.graphBytes / 1e9).toFixed(2)}) ` +
    `measured/estimate=${((rssGb * 1e9) / estimate.peakBytes).toFixed(2)} estimate_step_s=${estimate.stepSeconds.toFixed(3)} measured/estimate=${(median / estimate.stepSeconds).toFixed(2)}`,
);
console.log(`tokens_per_s=${(n / median).toFixed(1)}`);
await runner.release();
