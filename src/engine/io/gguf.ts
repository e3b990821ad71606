// GGUF v3, the file format of llama.cpp (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md):
//   magic "GGUF", version u32, tensor count u64, metadata count u64,
//   metadata: key (u64 length + UTF-8) · value type u32 · value (arrays: item type u32, count u64, items),
//   tensor infos: name · n_dims u32 · dims u64[n_dims] (innermost first: [in, out] for a [out, in]
//   weight) · ggml type u32 · offset u64 (from the start of the data section, aligned),
//   padding to `general.alignment` (32 by default), then the tensor data, each tensor aligned.
// All little-endian. Tensors here are F32 or F16 (what an unquantized export needs); the reader is
// for tests and tools that check what was written.

import { closeSync, fstatSync, openSync, readSync, renameSync } from 'node:fs';
import { encodeFromF32, decodeToF32, writeAll } from './safetensors.ts';

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
export const GGUF_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;

export enum GgufType {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
}

/** ggml tensor types this module writes and reads. */
export enum GgmlType {
  F32 = 0,
  F16 = 1,
}

type Scalar = number | bigint | boolean | string;
export type GgufValue =
  | { type: Exclude<GgufType, GgufType.ARRAY>; value: Scalar }
  | { type: GgufType.ARRAY; itemType: Exclude<GgufType, GgufType.ARRAY>; value: Scalar[] };

/** Typed metadata values: gguf.u32(4096), gguf.str('llama'), gguf.array(GgufType.STRING, tokens). */
export const gguf = {
  u32: (value: number): GgufValue => ({ type: GgufType.UINT32, value }),
  i32: (value: number): GgufValue => ({ type: GgufType.INT32, value }),
  u64: (value: number | bigint): GgufValue => ({ type: GgufType.UINT64, value }),
  f32: (value: number): GgufValue => ({ type: GgufType.FLOAT32, value }),
  bool: (value: boolean): GgufValue => ({ type: GgufType.BOOL, value }),
  str: (value: string): GgufValue => ({ type: GgufType.STRING, value }),
  array: (itemType: Exclude<GgufType, GgufType.ARRAY>, value: Scalar[]): GgufValue => ({ type: GgufType.ARRAY, itemType, value }),
};

export interface GgufTensor {
  name: string;
  /** Row-major shape as in safetensors/numpy ([out, in]); written reversed as GGUF dims. */
  shape: number[];
  type: GgmlType;
  data: Float32Array;
}

const BYTES: Record<GgmlType, number> = { [GgmlType.F32]: 4, [GgmlType.F16]: 2 };

// ---------------------------------------------------------------------------------------------------
// Writing

/** Grows as values are appended; used for the header (metadata can be megabytes of vocabulary). */
class ByteSink {
  private buffer = new Uint8Array(1 << 16);
  private view = new DataView(this.buffer.buffer);
  length = 0;

  private reserve(n: number) {
    if (this.length + n <= this.buffer.length) return;
    let size = this.buffer.length * 2;
    while (size < this.length + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buffer.subarray(0, this.length));
    this.buffer = next;
    this.view = new DataView(next.buffer);
  }
  u8(v: number) { this.reserve(1); this.view.setUint8(this.length, v); this.length += 1; }
  i8(v: number) { this.reserve(1); this.view.setInt8(this.length, v); this.length += 1; }
  u16(v: number) { this.reserve(2); this.view.setUint16(this.length, v, true); this.length += 2; }
  i16(v: number) { this.reserve(2); this.view.setInt16(this.length, v, true); this.length += 2; }
  u32(v: number) { this.reserve(4); this.view.setUint32(this.length, v, true); this.length += 4; }
  i32(v: number) { this.reserve(4); this.view.setInt32(this.length, v, true); this.length += 4; }
  f32(v: number) { this.reserve(4); this.view.setFloat32(this.length, v, true); this.length += 4; }
  f64(v: number) { this.reserve(8); this.view.setFloat64(this.length, v, true); this.length += 8; }
  u64(v: number | bigint) { this.reserve(8); this.view.setBigUint64(this.length, BigInt(v), true); this.length += 8; }
  i64(v: number | bigint) { this.reserve(8); this.view.setBigInt64(this.length, BigInt(v), true); this.length += 8; }
  bytes(b: Uint8Array) { this.reserve(b.length); this.buffer.set(b, this.length); this.length += b.length; }
  string(s: string) { const b = utf8.encode(s); this.u64(b.length); this.bytes(b); }
  zeros(n: number) { this.reserve(n); this.buffer.fill(0, this.length, this.length + n); this.length += n; }
  get contents(): Uint8Array { return this.buffer.subarray(0, this.length); }
}

const utf8 = new TextEncoder();

function writeScalar(sink: ByteSink, type: GgufType, value: Scalar, key: string) {
  const n = () => {
    if (typeof value !== 'number' && typeof value !== 'bigint') throw new Error(`gguf: ${key}: expected a number, got ${typeof value}`);
    return Number(value);
  };
  switch (type) {
    case GgufType.UINT8: return sink.u8(n());
    case GgufType.INT8: return sink.i8(n());
    case GgufType.UINT16: return sink.u16(n());
    case GgufType.INT16: return sink.i16(n());
    case GgufType.UINT32: return sink.u32(n());
    case GgufType.INT32: return sink.i32(n());
    case GgufType.FLOAT32: return sink.f32(n());
    case GgufType.FLOAT64: return sink.f64(n());
    case GgufType.UINT64: return sink.u64(value as number | bigint);
    case GgufType.INT64: return sink.i64(value as number | bigint);
    case GgufType.BOOL: return sink.u8(value ? 1 : 0);
    case GgufType.STRING:
      if (typeof value !== 'string') throw new Error(`gguf: ${key}: expected a string`);
      return sink.string(value);
    default:
      throw new Error(`gguf: ${key}: unsupported value type ${type}`);
  }
}

const alignUp = (n: number, alignment: number) => Math.ceil(n / alignment) * alignment;

function tensorBytes(tensor: GgufTensor): Uint8Array {
  const count = tensor.shape.reduce((a, b) => a * b, 1);
  if (count !== tensor.data.length) throw new Error(`gguf: tensor ${tensor.name} has shape [${tensor.shape}] but ${tensor.data.length} values`);
  return encodeFromF32(tensor.data, tensor.type === GgmlType.F32 ? 'F32' : 'F16');
}

/**
 * Write a GGUF v3 file: `metadata` in insertion order (general.alignment is honoured when given),
 * then `tensors` in order. Tensor data is encoded one tensor at a time; the file is written under a
 * temporary name and renamed, so a crash never leaves a truncated model behind.
 */
export function writeGguf(path: string, metadata: Map<string, GgufValue>, tensors: GgufTensor[]): void {
  const alignmentValue = metadata.get('general.alignment');
  const alignment = alignmentValue ? Number(alignmentValue.value) : GGUF_DEFAULT_ALIGNMENT;
  if (!Number.isInteger(alignment) || alignment <= 0 || alignment % 8 !== 0) throw new Error(`gguf: alignment ${alignment} must be a positive multiple of 8`);

  const header = new ByteSink();
  header.u32(GGUF_MAGIC);
  header.u32(GGUF_VERSION);
  header.u64(tensors.length);
  header.u64(metadata.size);
  for (const [key, entry] of metadata) {
    header.string(key);
    header.u32(entry.type);
    if (entry.type === GgufType.ARRAY) {
      header.u32(entry.itemType);
      header.u64(entry.value.length);
      for (const item of entry.value) writeScalar(header, entry.itemType, item, key);
    } else {
      writeScalar(header, entry.type, entry.value, key);
    }
  }
  const names = new Set<string>();
  let offset = 0;
  for (const tensor of tensors) {
    if (names.has(tensor.name)) throw new Error(`gguf: duplicate tensor ${tensor.name}`);
    names.add(tensor.name);
    header.string(tensor.name);
    header.u32(tensor.shape.length);
    for (let i = tensor.shape.length - 1; i >= 0; i--) header.u64(tensor.shape[i]);
    header.u32(tensor.type);
    header.u64(offset);
    offset = alignUp(offset + tensor.data.length * BYTES[tensor.type], alignment);
  }
  header.zeros(alignUp(header.length, alignment) - header.length);

  const temporary = `${path}.tmp-${process.pid}`;
  const fd = openSync(temporary, 'w');
  try {
    writeAll(fd, header.contents);
    const padding = new Uint8Array(alignment);
    for (const tensor of tensors) {
      const bytes = tensorBytes(tensor);
      writeAll(fd, bytes);
      const pad = alignUp(bytes.length, alignment) - bytes.length;
      if (pad > 0) writeAll(fd, padding.subarray(0, pad));
    }
  } finally {
    closeSync(fd);
  }
  renameSync(temporary, path);
}

// ---------------------------------------------------------------------------------------------------
// Reading

export interface GgufTensorInfo {
  name: string;
  /** GGUF order (innermost first). */
  dims: number[];
  /** Row-major order ([out, in]), i.e. dims reversed. */
  shape: number[];
  type: number;
  /** From the start of the data section. */
  offset: number;
}

export interface GgufFile {
  version: number;
  metadata: Map<string, Scalar | Scalar[]>;
  /** Value types as stored, for checking that a key has the type llama.cpp expects. */
  metadataTypes: Map<string, { type: GgufType; itemType?: GgufType }>;
  tensors: GgufTensorInfo[];
  alignment: number;
  /** Absolute file offset of the data section. */
  dataStart: number;
  /** One tensor widened to f32 (F32 and F16 tensors only). */
  readTensor(name: string): Float32Array;
}

/** Parse a GGUF file's header; tensor data is read on demand (the file is read whole: small files). */
export function readGguf(path: string): GgufFile {
  const fd = openSync(path, 'r');
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(fstatSync(fd).size);
    let done = 0;
    while (done < bytes.length) {
      const n = readSync(fd, bytes, done, bytes.length - done, done);
      if (n === 0) break;
      done += n;
    }
  } finally {
    closeSync(fd);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const decoder = new TextDecoder('utf-8', { fatal: true });
  let pos = 0;
  const need = (n: number) => {
    if (pos + n > bytes.length) throw new Error(`${path}: GGUF truncated at byte ${pos}`);
  };
  const u32 = () => { need(4); const v = view.getUint32(pos, true); pos += 4; return v; };
  const u64 = () => { need(8); const v = view.getBigUint64(pos, true); pos += 8; if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`${path}: u64 too large`); return Number(v); };
  const str = () => { const n = u64(); need(n); const s = decoder.decode(bytes.subarray(pos, pos + n)); pos += n; return s; };
  const scalar = (type: GgufType): Scalar => {
    switch (type) {
      case GgufType.UINT8: need(1); return view.getUint8(pos++);
      case GgufType.INT8: need(1); return view.getInt8(pos++);
      case GgufType.UINT16: { need(2); const v = view.getUint16(pos, true); pos += 2; return v; }
      case GgufType.INT16: { need(2); const v = view.getInt16(pos, true); pos += 2; return v; }
      case GgufType.UINT32: return u32();
      case GgufType.INT32: { need(4); const v = view.getInt32(pos, true); pos += 4; return v; }
      case GgufType.FLOAT32: { need(4); const v = view.getFloat32(pos, true); pos += 4; return v; }
      case GgufType.FLOAT64: { need(8); const v = view.getFloat64(pos, true); pos += 8; return v; }
      case GgufType.UINT64: { need(8); const v = view.getBigUint64(pos, true); pos += 8; return v; }
      case GgufType.INT64: { need(8); const v = view.getBigInt64(pos, true); pos += 8; return v; }
      case GgufType.BOOL: need(1); return view.getUint8(pos++) !== 0;
      case GgufType.STRING: return str();
      default: throw new Error(`${path}: unknown GGUF value type ${type} at byte ${pos}`);
    }
  };

  if (u32() !== GGUF_MAGIC) throw new Error(`${path}: not a GGUF file`);
  const version = u32();
  if (version !== 2 && version !== 3) throw new Error(`${path}: GGUF version ${version} is not supported`);
  const tensorCount = u64();
  const kvCount = u64();
  const metadata = new Map<string, Scalar | Scalar[]>();
  const metadataTypes = new Map<string, { type: GgufType; itemType?: GgufType }>();
  for (let i = 0; i < kvCount; i++) {
    const key = str();
    const type = u32() as GgufType;
    if (type === GgufType.ARRAY) {
      const itemType = u32() as GgufType;
      const count = u64();
      const items: Scalar[] = new Array(count);
      for (let j = 0; j < count; j++) items[j] = scalar(itemType);
      metadata.set(key, items);
      metadataTypes.set(key, { type, itemType });
    } else {
      metadata.set(key, scalar(type));
      metadataTypes.set(key, { type });
    }
  }
  const tensors: GgufTensorInfo[] = [];
  for (let i = 0; i < tensorCount; i++) {
    const name = str();
    const nDims = u32();
    const dims: number[] = [];
    for (let d = 0; d < nDims; d++) dims.push(u64());
    const type = u32();
    const offset = u64();
    tensors.push({ name, dims, shape: [...dims].reverse(), type, offset });
  }
  const alignment = metadata.has('general.alignment') ? Number(metadata.get('general.alignment')) : GGUF_DEFAULT_ALIGNMENT;
  const dataStart = alignUp(pos, alignment);
  const byName = new Map(tensors.map((t) => [t.name, t]));
  return {
    version,
    metadata,
    metadataTypes,
    tensors,
    alignment,
    dataStart,
    readTensor(name) {
      const info = byName.get(name);
      if (!info) throw new Error(`${path}: no tensor ${name}`);
      const count = info.dims.reduce((a, b) => a * b, 1);
      const width = info.type === GgmlType.F32 ? 4 : info.type === GgmlType.F16 ? 2 : 0;
      if (!width) throw new Error(`${path}: tensor ${name} has ggml type ${info.type} (only F32/F16 are read)`);
      const start = dataStart + info.offset;
      if (start + count * width > bytes.length) throw new Error(`${path}: tensor ${name} runs past the end of the file`);
      return decodeToF32(bytes.slice(start, start + count * width), info.type === GgmlType.F32 ? 'F32' : 'F16');
    },
  };
}
