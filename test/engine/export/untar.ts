// A small ustar reader for the tests: regular files and directories, base-256 sizes, prefix field.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

export interface TarEntry {
  path: string;
  type: 'file' | 'directory';
  data: Buffer;
}

export function readTar(archive: Buffer): TarEntry[] {
  const entries: TarEntry[] = [];
  let pos = 0;
  const text = (start: number, length: number) => {
    const raw = archive.subarray(start, start + length);
    const end = raw.indexOf(0);
    return raw.subarray(0, end < 0 ? length : end).toString('utf8');
  };
  while (pos + 512 <= archive.length) {
    const header = archive.subarray(pos, pos + 512);
    if (header.every((b) => b === 0)) break;
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : header[i];
    if (parseInt(text(pos + 148, 8).trim(), 8) !== sum) throw new Error(`tar: bad checksum at ${pos}`);
    if (text(pos + 257, 6) !== 'ustar') throw new Error(`tar: not ustar at ${pos}`);
    const prefix = text(pos + 345, 155);
    const name = text(pos + 0, 100);
    const size = header[124] & 0x80 ? Number(header.subarray(125, 136).readUIntBE(5, 6)) : parseInt(text(pos + 124, 12), 8);
    const type = header[156] === 0x35 ? 'directory' : 'file';
    pos += 512;
    entries.push({ path: prefix ? `${prefix}/${name}` : name, type, data: Buffer.from(archive.subarray(pos, pos + size)) });
    pos += Math.ceil(size / 512) * 512;
  }
  return entries;
}

/** Writes the archive's files under `dir`; returns the paths written. */
export function extractTar(archive: Buffer, dir: string): string[] {
  const written: string[] = [];
  for (const entry of readTar(archive)) {
    if (entry.path.split('/').includes('..')) throw new Error(`tar: unsafe path ${entry.path}`);
    const target = join(dir, entry.path);
    if (entry.type === 'directory') mkdirSync(target, { recursive: true });
    else {
      mkdirSync(dirname(target), { recursive: true });
      writeFileSync(target, entry.data);
      written.push(entry.path);
    }
  }
  return written;
}
