// Starts a real server on port 0 with a temporary DATA_DIR and MODELS_DIR (rows in SQLite, or in a
// fresh PostgreSQL schema with `backend: 'postgres'`), and an `openai` SDK client whose every
// response is validated against OpenAI's spec as it arrives.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { loadConfig, type Config } from '../../src/config.ts';
import { startServer, type RunningServer, type ServerOptions } from '../../src/api/server.ts';
import { freshDatabase, type SqlBackend } from './database.ts';
import { assertMatches, assertResponseMatches } from './openapi.ts';

export interface TestServer extends RunningServer {
  config: Config;
  dataDir: string;
  modelsDir: string;
  /** An SDK client for `key` (none: the open, keyless mode). */
  client(key?: string): OpenAI;
  /** Every JSON response the SDK clients received, already validated against the spec. */
  exchanges: { method: string; path: string; status: number; schema: string | null }[];
  /** Responses that did not match the spec (the SDK call also failed). */
  specFailures: string[];
  /** Raw request helper for what the SDK cannot send (bad bodies, wrong keys). */
  request(method: string, urlPath: string, init?: { key?: string; body?: BodyInit; headers?: Record<string, string> }): Promise<{ status: number; body: any }>;
}

export const BASE_MODEL = 'tiny-test';
/** A config.json the engine can train (the bundled tiny model's): base models are the folders that have one. */
export const TINY_CONFIG = path.resolve(import.meta.dirname, '../../models/tiny-llama/config.json');

export async function startTestServer(
  overrides: Partial<Config> & { env?: Record<string, string>; backend?: SqlBackend } = {},
  options: ServerOptions = {},
): Promise<TestServer> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tuneforge-test-'));
  const dataDir = path.join(root, 'data');
  const modelsDir = path.join(root, 'models');
  fs.mkdirSync(path.join(modelsDir, BASE_MODEL), { recursive: true });
  fs.copyFileSync(TINY_CONFIG, path.join(modelsDir, BASE_MODEL, 'config.json'));
  const { env = {}, backend = 'sqlite', ...configOverrides } = overrides;
  const database = await freshDatabase(backend);
  const config = loadConfig({ host: '127.0.0.1', port: 0, dataDir, databaseUrl: database.url, modelsDir, ...configOverrides }, { ...env });
  const server = await startServer(config, { logger: false, ...options });
  const exchanges: TestServer['exchanges'] = [];
  const specFailures: string[] = [];

  const recordingFetch: typeof fetch = async (input, init) => {
    const res = await fetch(input, init);
    const url = new URL(typeof input === 'string' || input instanceof URL ? input : input.url);
    const method = (init?.method ?? 'GET').toUpperCase();
    if ((res.headers.get('content-type') ?? '').includes('application/json')) {
      const body = await res.clone().json();
      try {
        const schema = assertResponseMatches(method, url.pathname, res.status, body);
        exchanges.push({ method, path: url.pathname, status: res.status, schema });
      } catch (err) {
        // The SDK would report this as a connection error: keep the real reason for the test.
        specFailures.push((err as Error).message);
        throw err;
      }
    }
    return res;
  };

  return {
    ...server,
    config,
    dataDir,
    modelsDir,
    exchanges,
    specFailures,
    client: (key = 'unused') => new OpenAI({ apiKey: key, adminAPIKey: key, baseURL: `${server.url}/v1`, fetch: recordingFetch, maxRetries: 0 }),
    async request(method, urlPath, init = {}) {
      const headers: Record<string, string> = { ...(init.headers ?? {}) };
      if (init.key) headers.authorization = `Bearer ${init.key}`;
      const res = await fetch(`${server.url}${urlPath}`, { method, headers, body: init.body });
      const text = await res.text();
      let body: any = text;
      try {
        body = JSON.parse(text);
      } catch {
        // not JSON
      }
      return { status: res.status, body };
    },
    async close() {
      await server.close();
      await database.drop();
      fs.rmSync(root, { recursive: true, force: true });
    },
  };
}

/** A chat-format JSONL training file with `n` examples. */
export function chatJsonl(n: number, tag = 'x'): string {
  const lines: string[] = [];
  for (let i = 0; i < n; i++) {
    lines.push(
      JSON.stringify({
        messages: [
          { role: 'system', content: 'You are terse.' },
          { role: 'user', content: `Question ${tag} ${i}?` },
          { role: 'assistant', content: `Answer ${i}.` },
        ],
      }),
    );
  }
  return lines.join('\n') + '\n';
}

/**
 * Polls `read` until `done` holds, and fails with the last value read once `timeoutMs` has passed
 * (a deadline, not a timing assertion: generous, and shorter than the runner's --test-timeout, so
 * that a stuck wait says what it was waiting on).
 */
export async function waitFor<T>(read: () => Promise<T>, done: (value: T) => boolean, intervalMs = 20, timeoutMs = 300_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (done(value)) return value;
    if (Date.now() > deadline) {
      throw new Error(`waitFor: still not done after ${timeoutMs / 1000} s; last value read: ${JSON.stringify(value)?.slice(0, 2000)}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Asserts an OpenAI error envelope with `status` (and `param`/`code` when given). */
export function expectError(
  res: { status: number; body: any },
  status: number,
  expected: { param?: string | null; code?: string | null; message?: RegExp } = {},
): void {
  assert.equal(res.status, status, `expected ${status}, got ${res.status}: ${JSON.stringify(res.body)}`);
  assertMatches('ErrorResponse', res.body);
  assert.deepEqual(Object.keys(res.body.error).sort(), ['code', 'message', 'param', 'type']);
  if (expected.param !== undefined) assert.equal(res.body.error.param, expected.param, JSON.stringify(res.body));
  if (expected.code !== undefined) assert.equal(res.body.error.code, expected.code, JSON.stringify(res.body));
  if (expected.message) assert.match(res.body.error.message, expected.message);
}

/** A JSON request body for `TestServer.request`. */
export const json = (value: unknown) => ({ body: JSON.stringify(value), headers: { 'content-type': 'application/json' } });

/** A multipart body with text fields and an optional file field. */
export function form(fields: Record<string, string>, file?: { field: string; name: string; content: string | Buffer }): { body: FormData } {
  const data = new FormData();
  for (const [k, v] of Object.entries(fields)) data.append(k, v);
  if (file) data.append(file.field, new Blob([typeof file.content === "string" ? file.content : new Uint8Array(file.content)]), file.name);
  return { body: data };
}
