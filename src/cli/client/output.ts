// How the client commands print: aligned tables and `key  value` lines for people, JSON with --json,
// and failures as one line on stderr (the server's message from OpenAI's error envelope).
import OpenAI from 'openai';
import { bold } from '../terminal.ts';

/** A mistake in the command line itself (exit code 2). */
export class UsageError extends Error {}

export function printJson(value: unknown): void {
  console.log(JSON.stringify(value, null, 2));
}

/** A cell or field as text: nothing as '-', objects as compact JSON. */
function text(value: unknown): string {
  if (value === null || value === undefined) return '-';
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

/** Unix seconds as a UTC date and time. */
/** A delete's answer: the object with --json, otherwise one line. */
export function printDeleted(deleted: { id: string }, json: boolean): void {
  if (json) printJson(deleted);
  else console.log(`deleted ${deleted.id}`);
}

export function timestamp(seconds: number | null | undefined): string {
  return seconds ? new Date(seconds * 1000).toISOString().replace('T', ' ').slice(0, 19) : '-';
}

export type Column<T> = [header: string, cell: (row: T) => unknown];

/** Plain columns padded to their widest cell, the header in bold on a terminal. */
export function printTable<T>(rows: readonly T[], columns: Column<T>[]): void {
  const cells = rows.map((row) => columns.map(([, cell]) => text(cell(row))));
  const widths = columns.map(([header], i) => Math.max(header.length, ...cells.map((c) => c[i].length)));
  const line = (values: string[]) => values.map((v, i) => (i === values.length - 1 ? v : v.padEnd(widths[i]))).join('  ');
  console.log(bold(line(columns.map(([header]) => header))));
  for (const c of cells) console.log(line(c));
}

/** An object's top-level fields, one per line. */
export function printFields(object: object): void {
  const entries = Object.entries(object);
  const width = Math.max(...entries.map(([key]) => key.length));
  for (const [key, value] of entries) console.log(`${key.padEnd(width)}  ${text(value)}`);
}

/** The innermost cause of a failed request, e.g. "connect ECONNREFUSED 127.0.0.1:9". */
function rootCause(error: unknown): string {
  let current = error as { cause?: unknown; message?: string; code?: string; errors?: unknown[] } | undefined;
  while (current?.cause || current?.errors?.length) current = (current.cause ?? current.errors![0]) as typeof current;
  return current?.message || current?.code || String(current);
}

/** The one line a failure prints, and the exit code it ends with. */
export function describeFailure(error: unknown, baseURL: string): { message: string; exitCode: number } {
  if (error instanceof UsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
    return { message: (error as Error).message, exitCode: 2 };
  }
  if (error instanceof OpenAI.APIConnectionTimeoutError) return { message: `no answer from ${baseURL} in time`, exitCode: 1 };
  if (error instanceof OpenAI.APIConnectionError) return { message: `cannot reach ${baseURL}: ${rootCause(error)}`, exitCode: 1 };
  if (error instanceof OpenAI.APIError) {
    const body = error.error as { message?: unknown } | undefined;
    const details = [error.param ? `param: ${error.param}` : '', error.code ? `code: ${error.code}` : ''].filter(Boolean).join(', ');
    const message = typeof body?.message === 'string' ? body.message : error.message;
    return { message: details ? `${message} (${details})` : message, exitCode: 1 };
  }
  return { message: error instanceof Error ? error.message : String(error), exitCode: 1 };
}
