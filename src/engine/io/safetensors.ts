// The safetensors format (https://huggingface.co/docs/safetensors): an 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets: [begin, end]}, __metadata__?: {str: str}},
// then the raw little-endian tensor bytes. The engine computes in f32, so reads widen f16/bf16 to
// Float32Array and writes narrow on the way out; frozen weights may instead stay 2-byte (readHalf),
// widened inside the step graphs where they are read (models/llama.ts's widen).
//
// Reads go tensor by tensor through a file handle, so a multi-gigabyte checkpoint is never held twice
// (once as file bytes, once as floats), on the calling thread or on libuv's (readBytesAsync); writes
// stream tensor by tensor for the same reason.

import { closeSync, openSync, read, readSync, writeSync, fstatSync, renameSync } from 'node:fs';
import { promisify } from 'node:util';

export type SafetensorsDtype = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';
/** The dtypes the engine writes. */
export type FloatDtype = 'F32' | 'F16' | 'BF16';

/** A tensor's shape and f32 values in memory, as files hold them (graph/ir.ts's Tensor is a graph's symbolic one). */
export interface HostTensor {
  shape: number[];
  data: Float32Array;
}

/** The 2-byte float formats. */
export type HalfDtype = 'F16' | 'BF16';

/** A 2-byte float tensor's raw bits as stored (half of f32's memory). */
export interface HalfTensor {
  shape: number[];
  dtype: HalfDtype;
  bits: Uint16Array;
}

export interface TensorInfo {
  dtype: SafetensorsDtype;
  shape: number[];
  /** Byte range inside the data section (after the header). */
  dataOffsets: [number, number];
}

const littleEndianHost = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

const BYTES_PER_ELEMENT: Record<SafetensorsDtype, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
};

/** Header larger than this is certainly not a safetensors file (the reference reader caps it at 100 MB). */
const MAX_HEADER_BYTES = 100_000_000;

export function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

// ---------------------------------------------------------------------------------------------------
// Half-precision conversions. Node 20 has no Float16Array, so these work on the raw bit patterns.

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

export function bf16BitsToF32(bits: number): number {
  u32Scratch[0] = bits << 16;
  return f32Scratch[0];
}

/** Round to nearest even, as torch does; NaN stays NaN. */
export function f32ToBf16Bits(value: number): number {
  f32Scratch[0] = value;
  const bits = u32Scratch[0];
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits >>> 16) | 0x0040) & 0xffff; // quiet NaN
  const roundingBias = 0x7fff + ((bits >>> 16) & 1);
  return ((bits + roundingBias) >>> 16) & 0xffff;
}

export function f16BitsToF32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >>> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24; // zero and subnormals
  if (exponent === 0x1f) return mantissa ? NaN : sign * Infinity;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

let f16LookupTable: Float32Array | null = null;
/** All 65536 f16 values as f32 (256 KiB): decoding a large f16 checkpoint becomes one lookup per value. */
function f16Table(): Float32Array {
  if (!f16LookupTable) {
    f16LookupTable = new Float32Array(65536);
    for (let bits = 0; bits < 65536; bits++) f16LookupTable[bits] = f16BitsToF32(bits);
  }
  return f16LookupTable;
}

/** Every 2-byte pattern of `dtype` as f32 (256 KiB): the table the step graphs widen frozen weights with. */
export function halfToF32Table(dtype: HalfDtype): Float32Array {
  if (dtype === 'F16') return f16Table().slice();
  return new Float32Array(Uint32Array.from({ length: 65536 }, (_, bits) => bits << 16).buffer);
}

/** IEEE round-to-nearest-even; overflow goes to ±Infinity like numpy's astype(float16). */
export function f32ToF16Bits(value: number): number {
  f32Scratch[0] = value;
  const x = u32Scratch[0];
  const sign = (x >>> 16) & 0x8000;
  const exponent = (x >>> 23) & 0xff;
  let mantissa = x & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa ? 0x200 : 0);
  let e = exponent - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign; // underflows to ±0
    mantissa |= 0x800000; // make the implicit bit explicit, then shift into a subnormal
    const shift = 14 - e;
    const halfway = 1 << (shift - 1);
    const remainder = mantissa & ((1 << shift) - 1);
    let result = mantissa >>> shift;
    if (remainder > halfway || (remainder === halfway && result & 1)) result += 1;
    return sign | result;
  }
  const remainder = mantissa & 0x1fff;
  let result = (e << 10) | (mantissa >>> 13);
  if (remainder > 0x1000 || (remainder === 0x1000 && result & 1)) result += 1; // may carry into exponent: correct
  return sign | result;
}

/** Decode raw little-endian bytes of `dtype` into f32. */
export function decodeToF32(bytes: Uint8Array, dtype: SafetensorsDtype): Float32Array {
  const count = bytes.byteLength / BYTES_PER_ELEMENT[dtype];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(count);
  switch (dtype) {
    case 'F32':
      if (littleEndianHost && bytes.byteOffset % 4 === 0) {
        out.set(new Float32Array(bytes.buffer, bytes.byteOffset, count));
      } else {
        for (let i = 0; i < count; i++) out[i] = view.getFloat32(i * 4, true);
      }
      break;
    case 'F16': {
      const table = f16Table();
      for (let i = 0; i < count; i++) out[i] = table[view.getUint16(i * 2, true)];
      break;
    }
    case 'BF16': {
      const wide = new Uint32Array(out.buffer);
      for (let i = 0; i < count; i++) wide[i] = view.getUint16(i * 2, true) << 16;
      break;
    }
    case 'F64':
      for (let i = 0; i < count; i++) out[i] = view.getFloat64(i * 8, true);
      break;
    case 'I64':
      for (let i = 0; i < count; i++) out[i] = Number(view.getBigInt64(i * 8, true));
      break;
    case 'I32':
      for (let i = 0; i < count; i++) out[i] = view.getInt32(i * 4, true);
      break;
    case 'I16':
      for (let i = 0; i < count; i++) out[i] = view.getInt16(i * 2, true);
      break;
    case 'I8':
      for (let i = 0; i < count; i++) out[i] = view.getInt8(i);
      break;
    case 'U8':
    case 'BOOL':
      for (let i = 0; i < count; i++) out[i] = view.getUint8(i);
      break;
  }
  return out;
}

/** Encode f32 values as little-endian bytes of `dtype`. */
export function encodeFromF32(data: Float32Array, dtype: FloatDtype): Uint8Array {
  const bytes = new Uint8Array(data.length * BYTES_PER_ELEMENT[dtype]);
  const view = new DataView(bytes.buffer);
  switch (dtype) {
    case 'F32':
      for (let i = 0; i < data.length; i++) view.setFloat32(i * 4, data[i], true);
      break;
    case 'F16':
      for (let i = 0; i < data.length; i++) view.setUint16(i * 2, f32ToF16Bits(data[i]), true);
      break;
    case 'BF16':
      for (let i = 0; i < data.length; i++) view.setUint16(i * 2, f32ToBf16Bits(data[i]), true);
      break;
  }
  return bytes;
}

// ---------------------------------------------------------------------------------------------------
// Reading

function readExactly(fd: number, length: number, position: number): Uint8Array {
  const buffer = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const n = readSync(fd, buffer, done, length - done, position + done);
    if (n === 0) throw new Error(`safetensors: unexpected end of file at byte ${position + done}`);
    done += n;
  }
  return buffer;
}

const readAsync = promisify(read);

/** readExactly on one of libuv's threads: the calling thread is free until the bytes are there. */
async function readExactlyAsync(fd: number, length: number, position: number): Promise<Uint8Array> {
  const buffer = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await readAsync(fd, buffer, done, length - done, position + done);
    if (bytesRead === 0) throw new Error(`safetensors: unexpected end of file at byte ${position + done}`);
    done += bytesRead;
  }
  return buffer;
}

/** An open safetensors file: the header is parsed up front, tensors are read on demand. */
export class SafetensorsFile {
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  readonly metadata: Record<string, string>;
  private fd: number | null;
  private readonly dataStart: number;

  private constructor(
    readonly path: string,
    fd: number,
    dataStart: number,
    tensors: Map<string, TensorInfo>,
    metadata: Record<string, string>,
  ) {
    this.fd = fd;
    this.dataStart = dataStart;
    this.tensors = tensors;
    this.metadata = metadata;
  }

  static open(path: string): SafetensorsFile {
    const fd = openSync(path, 'r');
    try {
      const fileSize = fstatSync(fd).size;
      if (fileSize < 8) throw new Error(`${path}: not a safetensors file (too short)`);
      const headerLength = Number(new DataView(readExactly(fd, 8, 0).buffer).getBigUint64(0, true));
      if (headerLength > MAX_HEADER_BYTES || 8 + headerLength > fileSize) {
        throw new Error(`${path}: not a safetensors file (header length ${headerLength})`);
      }
      const header = JSON.parse(new TextDecoder().decode(readExactly(fd, headerLength, 8))) as Record<string, unknown>;
      const dataStart = 8 + headerLength;
      const dataLength = fileSize - dataStart;
      const tensors = new Map<string, TensorInfo>();
      let metadata: Record<string, string> = {};
      for (const [name, entry] of Object.entries(header)) {
        if (name === '__metadata__') {
          metadata = (entry ?? {}) as Record<string, string>;
          continue;
        }
        const { dtype, shape, data_offsets } = entry as { dtype: SafetensorsDtype; shape: number[]; data_offsets: [number, number] };
        const width = BYTES_PER_ELEMENT[dtype];
        if (width === undefined) throw new Error(`${path}: tensor ${name} has unsupported dtype ${dtype}`);
        const [begin, end] = data_offsets;
        if (end - begin !== elementCount(shape) * width || end > dataLength || begin < 0) {
          throw new Error(`${path}: tensor ${name} has inconsistent offsets ${begin}..${end} for ${dtype}${JSON.stringify(shape)}`);
        }
        tensors.set(name, { dtype, shape, dataOffsets: [begin, end] });
      }
      return new SafetensorsFile(path, fd, dataStart, tensors, metadata);
    } catch (error) {
      closeSync(fd);
      throw error;
    }
  }

  /** Raw bytes of one tensor, as stored. */
  readBytes(name: string): Uint8Array {
    const { length, position } = this.extent(name);
    return readExactly(this.fd!, length, position);
  }

  /** readBytes on one of libuv's threads. */
  readBytesAsync(name: string): Promise<Uint8Array> {
    const { length, position } = this.extent(name);
    return readExactlyAsync(this.fd!, length, position);
  }

  private extent(name: string): { length: number; position: number } {
    const [begin, end] = this.info(name).dataOffsets;
    if (this.fd === null) throw new Error(`${this.path}: already closed`);
    return { length: end - begin, position: this.dataStart + begin };
  }

  /** One tensor widened to f32 (an f32 one is its own read buffer: no copy). */
  read(name: string): HostTensor {
    return this.asF32(name, this.readBytes(name));
  }

  /** One 2-byte float tensor as its raw bits (no widening). */
  readHalf(name: string): HalfTensor {
    return this.asHalf(name, this.readBytes(name));
  }

  /** Tensor `name` from its bytes (readBytes' own buffer, starting at 0), widened to f32. */
  asF32(name: string, bytes: Uint8Array): HostTensor {
    const info = this.info(name);
    const data = info.dtype === 'F32' && littleEndianHost ? new Float32Array(bytes.buffer, 0, bytes.byteLength / 4) : decodeToF32(bytes, info.dtype);
    return { shape: [...info.shape], data };
  }

  /** 2-byte float tensor `name` from its bytes (readBytes' own buffer: aligned for a Uint16Array view), as its raw bits. */
  asHalf(name: string, bytes: Uint8Array): HalfTensor {
    const info = this.info(name);
    if (info.dtype !== 'F16' && info.dtype !== 'BF16') throw new Error(`${this.path}: tensor ${name} is ${info.dtype}, not a 2-byte float`);
    const bits = new Uint16Array(bytes.buffer, 0, bytes.byteLength / 2);
    if (!littleEndianHost) {
      const view = new DataView(bytes.buffer);
      for (let i = 0; i < bits.length; i++) bits[i] = view.getUint16(i * 2, true);
    }
    return { shape: [...info.shape], dtype: info.dtype, bits };
  }

  info(name: string): TensorInfo {
    const info = this.tensors.get(name);
    if (!info) throw new Error(`${this.path}: no tensor named ${name}`);
    return info;
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}

/** Read every tensor of a file as f32. */
export function readSafetensors(path: string): { tensors: Map<string, HostTensor>; metadata: Record<string, string> } {
  const file = SafetensorsFile.open(path);
  try {
    const tensors = new Map<string, HostTensor>();
    for (const name of file.tensors.keys()) tensors.set(name, file.read(name));
    return { tensors, metadata: file.metadata };
  } finally {
    file.close();
  }
}

// ---------------------------------------------------------------------------------------------------
// Writing

export interface WriteOptions {
  dtype?: FloatDtype;
  /** String-to-string metadata, stored as `__metadata__` (PEFT and transformers write {"format": "pt"}). */
  metadata?: Record<string, string>;
}

/**
 * Write tensors (in the iteration order given) to `path`, converting f32 to `dtype` (default F32).
 * Written to a temporary name and renamed, so a crash never leaves a truncated file behind.
 */
export function writeSafetensors(
  path: string,
  tensors: Map<string, HostTensor> | Iterable<[string, HostTensor]>,
  options: WriteOptions = {},
): void {
  const dtype = options.dtype ?? 'F32';
  const width = BYTES_PER_ELEMENT[dtype];
  const entries = [...tensors];
  const header: Record<string, unknown> = {};
  if (options.metadata) header.__metadata__ = options.metadata;
  let offset = 0;
  for (const [name, tensor] of entries) {
    if (name === '__metadata__') throw new Error('safetensors: "__metadata__" is not a valid tensor name');
    const count = elementCount(tensor.shape);
    if (count !== tensor.data.length) {
      throw new Error(`safetensors: tensor ${name} has shape ${JSON.stringify(tensor.shape)} but ${tensor.data.length} values`);
    }
    header[name] = { dtype, shape: tensor.shape, data_offsets: [offset, offset + count * width] };
    offset += count * width;
  }
  // The data section must start 8-byte aligned; the spec pads the header with spaces.
  let headerBytes = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(headerBytes.length / 8) * 8;
  if (padded !== headerBytes.length) {
    const withPadding = new Uint8Array(padded).fill(0x20);
    withPadding.set(headerBytes);
    headerBytes = withPadding;
  }
  const prefix = new Uint8Array(8);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(headerBytes.length), true);

  const temporary = `${path}.tmp-${process.pid}`;
  const fd = openSync(temporary, 'w');
  try {
    writeAll(fd, prefix);
    writeAll(fd, headerBytes);
    for (const [, tensor] of entries) {
      // F32 on a little-endian host is the array's own bytes; everything else is converted.
      const bytes =
        dtype === 'F32' && littleEndianHost
          ? new Uint8Array(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength)
          : encodeFromF32(tensor.data, dtype);
      writeAll(fd, bytes);
    }
  } finally {
    closeSync(fd);
  }
  renameSync(temporary, path);
}

/** writeSync until every byte is written (it may write fewer than asked). */
export function writeAll(fd: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.byteLength) done += writeSync(fd, bytes, done, bytes.byteLength - done);
}

/** Bytes a tensor occupies on disk in `dtype`. */
export function storedBytes(shape: readonly number[], dtype: FloatDtype): number {
  return elementCount(shape) * BYTES_PER_ELEMENT[dtype];
}
