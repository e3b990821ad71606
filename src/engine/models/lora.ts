// LoRA (Hu et al. 2021) as PEFT does it: y = W x + (α/r) · B A dropout(x), with A [r, in] drawn
// kaiming-uniform(a=√5) (i.e. U(±1/√in)) and B [out, r] zeros, so training starts at the base model.
// Adapter tensors are named "<module path>.lora_A.weight" / ".lora_B.weight": PEFT's keys without
// its "base_model.model." prefix.

import type { ModelConfig } from './config.ts';
import type { SeededRandom } from '../data/random.ts';

export interface LoraSpec {
  rank: number;
  alpha: number;
  dropout: number;
  /** Module names as in HF/PEFT: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj. */
  targetModules: string[];
}

export const ALL_LINEAR = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

export interface LoraModule {
  /** "model.layers.3.self_attn.q_proj" */
  path: string;
  inFeatures: number;
  outFeatures: number;
}

/** Phi-3's fused modules, and the Llama modules each stands for in a target list. */
const FUSED: Record<string, string[]> = { qkv_proj: ['q_proj', 'k_proj', 'v_proj'], gate_up_proj: ['gate_proj', 'up_proj'] };

/** The linear layers of a Llama-family decoder with their shapes, in model order. */
export function linearModules(cfg: ModelConfig): LoraModule[] {
  const d = cfg.hiddenSize;
  const q = cfg.numHeads * cfg.headDim;
  const kv = cfg.numKvHeads * cfg.headDim;
  const I = cfg.intermediateSize;
  const shapes: Record<string, [string, number, number]> = cfg.fusedProjections
    ? { qkv_proj: ['self_attn', d, q + 2 * kv], o_proj: ['self_attn', q, d], gate_up_proj: ['mlp', d, 2 * I], down_proj: ['mlp', I, d] }
    : {
        q_proj: ['self_attn', d, q],
        k_proj: ['self_attn', d, kv],
        v_proj: ['self_attn', d, kv],
        o_proj: ['self_attn', q, d],
        gate_proj: ['mlp', d, I],
        up_proj: ['mlp', d, I],
        down_proj: ['mlp', I, d],
      };
  const out: LoraModule[] = [];
  for (let l = 0; l < cfg.numLayers; l++) {
    for (const [name, [block, inFeatures, outFeatures]] of Object.entries(shapes)) {
      out.push({ path: `model.layers.${l}.${block}.${name}`, inFeatures, outFeatures });
    }
  }
  return out;
}

/**
 * The modules a target list names. A fused module (Phi-3) is adapted as a whole, named by itself or
 * by any of the Llama modules it holds (q_proj → qkv_proj), so one list serves every architecture.
 */
export function loraTargets(cfg: ModelConfig, spec: LoraSpec): LoraModule[] {
  const wanted = spec.targetModules.includes('all-linear') ? ALL_LINEAR : spec.targetModules;
  const unknown = wanted.filter((m) => !ALL_LINEAR.includes(m) && !(cfg.fusedProjections && m in FUSED));
  if (unknown.length) throw new Error(`LoRA target modules not in this model: ${unknown.join(', ')}`);
  const names = (m: LoraModule) => {
    const name = moduleName(m);
    return [name, ...(cfg.fusedProjections ? (FUSED[name] ?? []) : [])];
  };
  return linearModules(cfg).filter((m) => names(m).some((n) => wanted.includes(n)));
}

/** "q_proj" of "model.layers.3.self_attn.q_proj". */
export const moduleName = (m: LoraModule) => m.path.slice(m.path.lastIndexOf('.') + 1);

export const loraAName = (path: string) => `${path}.lora_A.weight`;
export const loraBName = (path: string) => `${path}.lora_B.weight`;

/** PEFT's initialisation: A ~ kaiming_uniform(a=√5) = U(−1/√in, 1/√in), B = 0. */
export function initLora(targets: LoraModule[], spec: LoraSpec, rng: SeededRandom): Map<string, { shape: number[]; data: Float32Array }> {
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const m of targets) {
    const bound = 1 / Math.sqrt(m.inFeatures);
    const a = new Float32Array(spec.rank * m.inFeatures);
    for (let i = 0; i < a.length; i++) a[i] = (rng.next() * 2 - 1) * bound;
    out.set(loraAName(m.path), { shape: [spec.rank, m.inFeatures], data: a });
    out.set(loraBName(m.path), { shape: [m.outFeatures, spec.rank], data: new Float32Array(m.outFeatures * spec.rank) });
  }
  return out;
}
