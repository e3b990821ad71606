// Hugging Face model folders: config.json plus model.safetensors, or shards listed by
// model.safetensors.index.json ({"metadata": {"total_size"}, "weight_map": {tensor: shard file}}).
// Tensor names are kept exactly as transformers writes them ("model.layers.0.self_attn.q_proj.weight").

import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseHfConfig, type ModelConfig } from '../models/config.ts';
import { SafetensorsFile, storedBytes, writeSafetensors, type FloatDtype, type HalfTensor, type HostTensor, type SafetensorsDtype } from './safetensors.ts';


export const SINGLE_FILE = 'model.safetensors';
export const INDEX_FILE = 'model.safetensors.index.json';

export interface HfModel {
  config: ModelConfig;
  /** config.json as written, for saving a fine-tuned copy with the same fields. */
  rawConfig: Record<string, unknown>;
  weights: Map<string, HostTensor>;
  /** The tensors LoadOptions.keepHalf kept as 2-byte floats (not in `weights`). */
  halfWeights: Map<string, HalfTensor>;
}

export function readHfConfig(dir: string): { config: ModelConfig; rawConfig: Record<string, unknown> } {
  const path = join(dir, 'config.json');
  if (!existsSync(path)) throw new Error(`${dir}: no config.json (not a Hugging Face model folder)`);
  const rawConfig = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  return { config: parseHfConfig(rawConfig), rawConfig };
}

/** The safetensors files of a model folder, in the order their tensors should be read. */
export function listWeightFiles(dir: string): string[] {
  const indexPath = join(dir, INDEX_FILE);
  if (existsSync(indexPath)) {
    const index = JSON.parse(readFileSync(indexPath, 'utf8')) as { weight_map?: Record<string, string> };
    if (!index.weight_map) throw new Error(`${indexPath}: no weight_map`);
    return [...new Set(Object.values(index.weight_map))].map((file) => join(dir, file));
  }
  if (existsSync(join(dir, SINGLE_FILE))) return [join(dir, SINGLE_FILE)];
  // Some exports use other single-file names; accept any *.safetensors when there is exactly one.
  const candidates = readdirSync(dir).filter((f) => f.endsWith('.safetensors'));
  if (candidates.length === 1) return [join(dir, candidates[0])];
  throw new Error(`${dir}: no ${SINGLE_FILE} or ${INDEX_FILE}`);
}

export interface LoadOptions {
  /** Only load tensors this returns true for (e.g. skip lm_head when it is tied). */
  filter?: (name: string) => boolean;
  /** Tensors to keep as stored (2-byte floats, in `halfWeights`) instead of widening them to f32. */
  keepHalf?: ReadonlySet<string>;
}

/** Every tensor's stored dtype, from the files' headers (no tensor is read). */
export function storedDtypes(dir: string): Map<string, SafetensorsDtype> {
  const dtypes = new Map<string, SafetensorsDtype>();
  for (const path of listWeightFiles(dir)) {
    const file = SafetensorsFile.open(path);
    try {
      for (const [name, info] of file.tensors) dtypes.set(name, info.dtype);
    } finally {
      file.close();
    }
  }
  return dtypes;
}

/** Load config and all weights of a HF folder, widened to f32 (but keepHalf), one tensor at a time. */
export function loadHfModel(dir: string, options: LoadOptions = {}): HfModel {
  const model: HfModel = { ...readHfConfig(dir), weights: new Map(), halfWeights: new Map() };
  const seen = new Set<string>();
  for (const path of listWeightFiles(dir)) {
    const file = SafetensorsFile.open(path);
    try {
      for (const name of wantedTensors(dir, file, options, seen)) {
        if (options.keepHalf?.has(name)) model.halfWeights.set(name, file.readHalf(name));
        else model.weights.set(name, file.read(name));
      }
    } finally {
      file.close();
    }
  }
  return model;
}

/**
 * loadHfModel with the tensors read on libuv's threads: the reads start before this returns, and
 * the calling thread is free until they are in (a training process compiles its step graph meanwhile).
 */
export async function loadHfModelAsync(dir: string, options: LoadOptions = {}): Promise<HfModel> {
  const model: HfModel = { ...readHfConfig(dir), weights: new Map(), halfWeights: new Map() };
  const seen = new Set<string>();
  const files: SafetensorsFile[] = [];
  // Each tensor is decoded as its bytes arrive, so that widened ones do not hold their bytes meanwhile.
  const reads: { name: string; half: boolean; tensor: Promise<HostTensor | HalfTensor> }[] = [];
  let settled: PromiseSettledResult<HostTensor | HalfTensor>[] = [];
  try {
    for (const path of listWeightFiles(dir)) {
      const file = SafetensorsFile.open(path);
      files.push(file);
      for (const name of wantedTensors(dir, file, options, seen)) {
        const half = options.keepHalf?.has(name) ?? false;
        reads.push({ name, half, tensor: file.readBytesAsync(name).then((bytes) => (half ? file.asHalf(name, bytes) : file.asF32(name, bytes))) });
      }
    }
  } finally {
    settled = await Promise.allSettled(reads.map((r) => r.tensor)); // every read ends before its file closes
    for (const file of files) file.close();
  }
  for (const [i, { name, half }] of reads.entries()) {
    const read = settled[i];
    if (read.status === 'rejected') throw read.reason;
    if (half) model.halfWeights.set(name, read.value as HalfTensor);
    else model.weights.set(name, read.value as HostTensor);
  }
  return model;
}

/** The tensors of `file` to load: those options.filter takes, none `seen` in an earlier shard. */
function wantedTensors(dir: string, file: SafetensorsFile, options: LoadOptions, seen: Set<string>): string[] {
  const names = [...file.tensors.keys()].filter((name) => !options.filter || options.filter(name));
  for (const name of names) {
    if (seen.has(name)) throw new Error(`${dir}: tensor ${name} appears in more than one shard`);
    seen.add(name);
  }
  return names;
}

export interface SaveOptions {
  /** Start a new shard once a shard would exceed this many bytes (default 2 GiB). */
  maxShardBytes?: number;
}

const TORCH_DTYPE: Record<FloatDtype, string> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' };

/**
 * Write a HF folder: config.json (with torch_dtype set to `dtype`) and model.safetensors, or
 * numbered shards with an index when the weights exceed `maxShardBytes`.
 */
export function saveHfModel(
  dir: string,
  rawConfig: Record<string, unknown>,
  weights: Map<string, HostTensor>,
  dtype: FloatDtype = 'F32',
  options: SaveOptions = {},
): void {
  const maxShardBytes = options.maxShardBytes ?? 2 * 1024 ** 3;
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...rawConfig, torch_dtype: TORCH_DTYPE[dtype] }, null, 2) + '\n');

  const shards: [string, HostTensor][][] = [[]];
  let shardBytes = 0;
  let totalBytes = 0;
  for (const entry of weights) {
    const bytes = storedBytes(entry[1].shape, dtype);
    if (shardBytes > 0 && shardBytes + bytes > maxShardBytes) {
      shards.push([]);
      shardBytes = 0;
    }
    shards[shards.length - 1].push(entry);
    shardBytes += bytes;
    totalBytes += bytes;
  }
  const metadata = { format: 'pt' };
  if (shards.length === 1) {
    writeSafetensors(join(dir, SINGLE_FILE), shards[0], { dtype, metadata });
    return;
  }
  const weightMap: Record<string, string> = {};
  shards.forEach((shard, i) => {
    const file = `model-${String(i + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`;
    writeSafetensors(join(dir, file), shard, { dtype, metadata });
    for (const [name] of shard) weightMap[name] = file;
  });
  writeFileSync(join(dir, INDEX_FILE), JSON.stringify({ metadata: { total_size: totalBytes }, weight_map: weightMap }, null, 2) + '\n');
}
