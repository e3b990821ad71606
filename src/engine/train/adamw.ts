// AdamW (Loshchilov & Hutter; torch.optim.AdamW) with global-norm clipping, applied on the host
// and in place. The step graphs output gradients only: returning new weights and both moments
// from ONNX Runtime instead meant copying three times the trainable bytes out of it every step,
// into fresh memory, where a gradient is one times and an in-place update allocates nothing.

import wabt from 'wabt';
import type { TrainSpec } from '../contract.ts';

export interface AdamWSettings {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Clip the global gradient norm to this (0 = no clipping). */
  maxGradNorm: number;
}

export const DEFAULT_ADAMW: AdamWSettings = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.0, maxGradNorm: 1.0 };

/** The job's AdamW: the defaults with its weight decay and gradient clip. */
export const adamwSettings = (spec: TrainSpec): AdamWSettings => ({ ...DEFAULT_ADAMW, ...spec.optimizer });

/** One trainable tensor and its moments, updated in place, with its gradient. */
export interface AdamWTensor {
  param: Float32Array;
  m: Float32Array;
  v: Float32Array;
  grad: Float32Array;
  /** Decoupled weight decay applies (matrices only, like HF's Trainer: no biases or norms). */
  decay: boolean;
}

/**
 * AdamW step number `t` (1-based) over `tensors` with learning rate `lr`, given the squared global
 * gradient norm. Returns the norm before clipping.
 */
export async function adamwStep(tensors: AdamWTensor[], gradNormSq: number, t: number, lr: number, s: AdamWSettings): Promise<number> {
  const norm = Math.sqrt(gradNormSq);
  // torch.nn.utils.clip_grad_norm_: coef = max_norm / (norm + 1e-6), capped at 1.
  const coef = s.maxGradNorm > 0 ? Math.min(1, s.maxGradNorm / (norm + 1e-6)) : 1;
  // On the clipped gradient c·g, with bias corrections bc1 = 1 − β1^t and bc2 = 1 − β2^t:
  //   m' = β1·m + ((1−β1)·c)·g        v' = β2·v + ((1−β2)·c²)·g²
  //   p' = p·(1 − lr·wd) − (lr/bc1)·m' / (√v'/√bc2 + ε) = p·(1 − lr·wd) − k·m' / (√v' + ε·√bc2),
  // k = lr·√bc2/bc1: one square root and one division per element.
  const sqrtBc2 = Math.sqrt(1 - Math.pow(s.beta2, t));
  const stepSize = (lr * sqrtBc2) / (1 - Math.pow(s.beta1, t));
  const kernel = await (adamwKernel ??= compileKernel());
  for (const x of tensors) {
    const keep = x.decay ? 1 - lr * s.weightDecay : 1;
    kernel(x, [s.beta1, s.beta2, (1 - s.beta1) * coef, (1 - s.beta2) * coef * coef, stepSize, s.eps * sqrtBc2, keep]);
  }
  return norm;
}

// The update is a few flops per 28 bytes moved, so it runs where it can use SIMD: a WebAssembly
// kernel, f32 like torch's, four lanes at a time (0.29 s against 0.6–0.8 s for a scalar JS loop
// over 134.5M parameters).
// The tensors stay in JS memory (ONNX Runtime reads the weights from there); the kernel works on
// L2-sized chunks copied in and out of its own memory.
const KERNEL_WAT = `
(module
  (memory (export "memory") 4)
  ;; For i in [0, n) over f32 arrays at byte offsets p, g, m, v (n rounded up to a multiple of 4):
  ;;   m[i] = b1·m[i] + ms·g[i];  v[i] = b2·v[i] + vs·g[i]²;  p[i] = keep·p[i] − k·m[i] / (√v[i] + eps)
  (func (export "adamw") (param $n i32) (param $p i32) (param $g i32) (param $m i32) (param $v i32)
        (param $b1 f32) (param $b2 f32) (param $ms f32) (param $vs f32) (param $k f32) (param $eps f32) (param $keep f32)
    (local $i i32) (local $end i32) (local $d v128) (local $mi v128) (local $vi v128)
    (local $B1 v128) (local $B2 v128) (local $MS v128) (local $VS v128) (local $K v128) (local $EPS v128) (local $KEEP v128)
    (local.set $B1 (f32x4.splat (local.get $b1)))
    (local.set $B2 (f32x4.splat (local.get $b2)))
    (local.set $MS (f32x4.splat (local.get $ms)))
    (local.set $VS (f32x4.splat (local.get $vs)))
    (local.set $K (f32x4.splat (local.get $k)))
    (local.set $EPS (f32x4.splat (local.get $eps)))
    (local.set $KEEP (f32x4.splat (local.get $keep)))
    (local.set $end (i32.shl (local.get $n) (i32.const 2)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (local.set $d (v128.load (i32.add (local.get $g) (local.get $i))))
        (local.set $mi (f32x4.add (f32x4.mul (local.get $B1) (v128.load (i32.add (local.get $m) (local.get $i))))
                                  (f32x4.mul (local.get $MS) (local.get $d))))
        (local.set $vi (f32x4.add (f32x4.mul (local.get $B2) (v128.load (i32.add (local.get $v) (local.get $i))))
                                  (f32x4.mul (local.get $VS) (f32x4.mul (local.get $d) (local.get $d)))))
        (v128.store (i32.add (local.get $m) (local.get $i)) (local.get $mi))
        (v128.store (i32.add (local.get $v) (local.get $i)) (local.get $vi))
        (v128.store (i32.add (local.get $p) (local.get $i))
          (f32x4.sub (f32x4.mul (local.get $KEEP) (v128.load (i32.add (local.get $p) (local.get $i))))
                     (f32x4.div (f32x4.mul (local.get $K) (local.get $mi))
                                (f32x4.add (f32x4.sqrt (local.get $vi)) (local.get $EPS)))))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $next)))))`;

/** Elements per array per kernel call: four arrays of 64 KB fill the kernel's 4 pages. */
const CHUNK = 16384;

type Kernel = (x: AdamWTensor, factors: number[]) => void;
let adamwKernel: Promise<Kernel> | undefined;

async function compileKernel(): Promise<Kernel> {
  const wat = (await wabt()).parseWat('adamw.wat', KERNEL_WAT);
  const instance = new WebAssembly.Instance(new WebAssembly.Module(wat.toBinary({}).buffer as Uint8Array<ArrayBuffer>));
  wat.destroy();
  const { adamw, memory } = instance.exports as { adamw: (...args: number[]) => void; memory: WebAssembly.Memory };
  const heap = new Float32Array(memory.buffer);
  const [P, G, M, V] = [0, 1, 2, 3].map((k) => heap.subarray(k * CHUNK, (k + 1) * CHUNK));
  const bytes = 4 * CHUNK;
  return ({ param: p, m, v, grad: g }, factors) => {
    for (let at = 0; at < p.length; at += CHUNK) {
      const end = Math.min(at + CHUNK, p.length);
      const n = end - at;
      P.set(p.subarray(at, end));
      G.set(g.subarray(at, end));
      M.set(m.subarray(at, end));
      V.set(v.subarray(at, end));
      adamw(n, 0, bytes, 2 * bytes, 3 * bytes, ...factors);
      p.set(P.subarray(0, n), at);
      m.set(M.subarray(0, n), at);
      v.set(V.subarray(0, n), at);
    }
  };
}
