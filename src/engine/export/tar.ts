// A minimal POSIX ustar writer for handing a model folder out as one stream: a 512-byte header per
// file (name, mode, size, mtime, checksum, type, "ustar\0" "00"), the file's bytes padded to 512,
// and two zero blocks at the end. Files are read in 1 MiB pieces, so a multi-gigabyte model is never
// held in memory. Sizes past ustar's 11 octal digits (8 GiB) use the base-256 form GNU tar and
// bsdtar read.

import { createReadStream, readdirSync, statSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { Readable } from 'node:stream';

const BLOCK = 512;

export interface TarOptions {
  /** A folder name every entry is put under ("my-model/config.json"); none by default. */
  prefix?: string;
  /** Modification time of every entry (default: each file's own). */
  mtime?: Date;
}

function octal(value: number, width: number): string {
  return value.toString(8).padStart(width - 1, '0') + '\0';
}

function writeString(block: Uint8Array, offset: number, width: number, text: string) {
  const bytes = new TextEncoder().encode(text);
  if (bytes.length > width) throw new Error(`tar: "${text}" does not fit ${width} bytes`);
  block.set(bytes, offset);
}

/** ustar splits a long path into prefix (155 bytes) + "/" + name (100 bytes). */
function splitPath(path: string): { name: string; prefix: string } {
  const bytes = new TextEncoder().encode(path).length;
  if (bytes <= 100) return { name: path, prefix: '' };
  for (let i = path.indexOf('/'); i >= 0; i = path.indexOf('/', i + 1)) {
    const prefix = path.slice(0, i);
    const name = path.slice(i + 1);
    if (new TextEncoder().encode(prefix).length <= 155 && new TextEncoder().encode(name).length <= 100) return { name, prefix };
  }
  throw new Error(`tar: path "${path}" is too long for ustar`);
}

export function tarHeader(path: string, size: number, mtime: Date, type: 'file' | 'directory' = 'file'): Uint8Array {
  const block = new Uint8Array(BLOCK);
  const { name, prefix } = splitPath(path);
  writeString(block, 0, 100, name);
  writeString(block, 100, 8, octal(type === 'file' ? 0o644 : 0o755, 8));
  writeString(block, 108, 8, octal(0, 8)); // uid
  writeString(block, 116, 8, octal(0, 8)); // gid
  if (size < 8 ** 11) {
    writeString(block, 124, 12, octal(size, 12));
  } else {
    // base-256: high bit of the first byte set, the size big-endian in the rest.
    let rest = BigInt(size);
    for (let i = 135; i > 124; i--) {
      block[i] = Number(rest & 0xffn);
      rest >>= 8n;
    }
    block[124] = 0x80;
  }
  writeString(block, 136, 12, octal(Math.floor(mtime.getTime() / 1000), 12));
  block.fill(0x20, 148, 156); // checksum is computed with its own field as spaces
  block[156] = type === 'file' ? 0x30 : 0x35; // '0' regular file, '5' directory
  writeString(block, 257, 6, 'ustar\0');
  writeString(block, 263, 2, '00');
  writeString(block, 265, 32, 'root');
  writeString(block, 297, 32, 'root');
  writeString(block, 345, 155, prefix);
  let sum = 0;
  for (const byte of block) sum += byte;
  writeString(block, 148, 8, sum.toString(8).padStart(6, '0') + '\0 ');
  return block;
}

function listFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const entry of readdirSync(d, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
      const path = join(d, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.isFile()) out.push(path);
    }
  };
  walk(dir);
  return out;
}

/** Bytes the archive of `dir` will have (for Content-Length). */
export function tarSize(dir: string, options: TarOptions = {}): number {
  let total = options.prefix ? BLOCK : 0;
  for (const file of listFiles(dir)) total += BLOCK + Math.ceil(statSync(file).size / BLOCK) * BLOCK;
  return total + 2 * BLOCK;
}

async function* tarChunks(dir: string, options: TarOptions): AsyncGenerator<Uint8Array> {
  const prefix = options.prefix ? options.prefix.replace(/\/+$/, '') + '/' : '';
  if (prefix) yield tarHeader(prefix, 0, options.mtime ?? new Date(), 'directory');
  for (const file of listFiles(dir)) {
    const stat = statSync(file);
    const path = prefix + relative(dir, file).split(sep).join('/');
    yield tarHeader(path, stat.size, options.mtime ?? stat.mtime);
    let written = 0;
    for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) {
      written += (chunk as Buffer).length;
      yield chunk as Buffer;
    }
    if (written !== stat.size) throw new Error(`tar: ${file} changed size while being archived`);
    const pad = (BLOCK - (stat.size % BLOCK)) % BLOCK;
    if (pad) yield new Uint8Array(pad);
  }
  yield new Uint8Array(2 * BLOCK);
}

/** A ustar archive of every regular file under `dir`, in name order, as a stream. */
export function tarDirectory(dir: string, options: TarOptions = {}): Readable {
  return Readable.from(tarChunks(dir, options), { objectMode: false });
}
