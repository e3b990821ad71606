// Serving models over HTTP: what a `model` name means (a base model folder, a fine-tuned model — a
// PEFT adapter over its base or full weights —, a checkpoint `…:ckpt-step-N`, or a checkpoint
// another organization shared through permissions, a job's final one under the model's own name),
// one InferenceHost (worker thread) per server, created on first use and closed with the server
// (the graders' score_model / label_model models are served by it too), and what
// /v1/chat/completions and /v1/completions share: sampling parameters, server-sent events, aborting on disconnect.
import { randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ApiError } from '../domain/errors.ts';
import { inferenceSource, ModelNotFoundError, type CatalogueModel, type ModelCatalogue } from '../models/catalogue.ts';
import { EngineError, InferenceHost, type GenerateOptions, type GenerationResult, type ModelInfo, type ModelSourceMessage, type OnToken } from '../engine/index.ts';
import { chatCompletionRoutes } from './chat-completions.ts';
import { completionRoutes } from './completions.ts';

/** A `model` name resolved to weights the host can load. */
export interface ResolvedModel {
  /** The name the caller used (echoed in responses). */
  name: string;
  /** These weights (one loaded copy per key). */
  key: string;
  source: ModelSourceMessage;
  /** LoRA adapters (and bare bases) share one resident base model in the worker. */
  shareBase: boolean;
  /** The chat template text (tool-call syntax), null when the folder has none. */
  chatTemplate: string | null;
}

export interface InferenceSettings {
  /** Models kept loaded in the worker (least recently used beyond this are unloaded when idle). */
  maxLoadedModels?: number;
  /** Generations per model at once; more wait in FIFO order (the host's gate). */
  maxConcurrentGenerations?: number;
}

export function modelNotFound(name: string): ApiError {
  return new ApiError(404, `The model '${name}' does not exist or you do not have access to it.`, 'invalid_request_error', 'model', 'model_not_found');
}

export class InferenceService {
  private host: InferenceHost | null = null;
  /** Loaded (or loading) models in least-recently-used order, with their requests in flight. */
  private readonly loaded = new Map<string, { hostKey: string; info: Promise<ModelInfo>; users: number }>();
  private loads = 0;
  private readonly maxLoaded: number;
  private readonly maxConcurrent: number;
  private closed = false;
  /** Aborts every generation when the server closes. */
  private readonly shutdown = new AbortController();
  /** Work in the worker (loads, generations): closing waits for it, since terminating a thread inside an ONNX Runtime call aborts the process. */
  private readonly inflight = new Set<Promise<unknown>>();

  constructor(
    private readonly catalogue: ModelCatalogue,
    settings: InferenceSettings = {},
  ) {
    this.maxLoaded = settings.maxLoadedModels ?? 8;
    this.maxConcurrent = settings.maxConcurrentGenerations ?? 4;
  }

  /** The model `name` as `organization` may use it; anything else is a 404 model_not_found. */
  async resolve(name: string, organization: string): Promise<ResolvedModel> {
    let model: CatalogueModel;
    try {
      model = await this.catalogue.resolve(name, organization);
    } catch (error) {
      throw error instanceof ModelNotFoundError ? modelNotFound(name) : error;
    }
    return { name, ...inferenceSource(model), chatTemplate: model.chatTemplate };
  }

  /** Whether `organization` may use the model `name` (resolve's rules, without a 404). */
  async exists(name: string, organization: string): Promise<boolean> {
    return (await this.catalogue.find(name, organization)) !== null;
  }

  /**
   * Resolves `name` for `organization` and holds the model loaded while `use` runs; `use` gets it
   * with `key` set to the host key of the loaded copy (for the host's requests and generate).
   */
  async withModel<T>(name: string, organization: string, use: (model: ResolvedModel, info: ModelInfo) => Promise<T>): Promise<T> {
    const model = await this.resolve(name, organization);
    const { info, key, release } = await this.acquire(model);
    try {
      return await use({ ...model, key }, info);
    } finally {
      release();
    }
  }

  get inferenceHost(): InferenceHost {
    if (this.closed) throw new ApiError(503, 'The server is shutting down.', 'server_error', null, 'server_shutting_down');
    return (this.host ??= new InferenceHost());
  }

  /**
   * Loads the model (once; later requests share it) and holds it loaded until `release`.
   * Models nobody is using are unloaded, least recently used first, beyond maxLoadedModels.
   */
  async acquire(model: ResolvedModel): Promise<{ info: ModelInfo; key: string; release: () => void }> {
    const host = this.inferenceHost;
    let entry = this.loaded.get(model.key);
    if (entry) this.loaded.delete(model.key); // re-inserted below: most recently used
    else {
      // A fresh host key per load: unloading an evicted copy never touches a newer one.
      const hostKey = `${model.key}#${++this.loads}`;
      const info = this.track(host.load(hostKey, model.source, { shareBase: model.shareBase, maxConcurrentGenerations: this.maxConcurrent }));
      entry = { hostKey, info, users: 0 };
      info.catch(() => this.loaded.get(model.key) === entry && this.loaded.delete(model.key));
    }
    this.loaded.set(model.key, entry);
    entry.users++;
    const held = entry;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      held.users--;
      this.evict();
    };
    try {
      return { info: await entry.info, key: held.hostKey, release };
    } catch (error) {
      release();
      throw new ApiError(500, `The model '${model.name}' could not be loaded: ${(error as Error).message}`, 'server_error', 'model', 'model_load_failed');
    }
  }

  /** Generates with the host; ends early when `options.signal` fires or the server closes. */
  generate(key: string, promptIds: number[], options: GenerateOptions, onToken?: OnToken): Promise<GenerationResult> {
    const signal = options.signal ? AbortSignal.any([options.signal, this.shutdown.signal]) : this.shutdown.signal;
    return this.track(this.inferenceHost.generate(key, promptIds, { ...options, signal }, onToken));
  }

  /**
   * Awaits a request's generations (`run` starts every choice): null when the client left (they
   * ended as aborted). When one fails the others stop (`generations` aborts) and the failure comes
   * out as an API error (generationError); a server shutting down is a 503 server_shutting_down.
   */
  async settle<T>(generations: AbortController, run: () => Promise<T>): Promise<T | null> {
    try {
      return await run();
    } catch (error) {
      if (isAbort(error)) {
        if (this.closed) throw shuttingDown();
        return null;
      }
      generations.abort(); // the other choices are of no use now
      this.generationFailed(error);
      throw generationError(error);
    }
  }

  private track<T>(work: Promise<T>): Promise<T> {
    this.inflight.add(work);
    const done = () => this.inflight.delete(work);
    work.then(done, done);
    return work;
  }

  private evict(): void {
    for (const [key, entry] of this.loaded) {
      if (this.loaded.size <= this.maxLoaded) return;
      if (entry.users > 0) continue;
      this.loaded.delete(key);
      void this.host?.unload(entry.hostKey).catch(() => {});
    }
  }

  /**
   * A generation failed: when it was the worker itself that died (a crash, out of memory), the
   * next request starts a fresh one instead of failing forever.
   */
  generationFailed(error: unknown): void {
    const workerGone = error instanceof EngineError && (error.code === 'inference_worker_exited' || error.code === 'inference_host_closed');
    if (this.closed || !workerGone) return;
    const host = this.host;
    this.host = null;
    this.loaded.clear();
    void host?.close().catch(() => {});
  }

  async close(): Promise<void> {
    this.closed = true;
    this.shutdown.abort();
    await Promise.allSettled([...this.inflight]); // generations stop within a token
    const host = this.host;
    this.host = null;
    await host?.close();
  }
}

/**
 * Registers /chat/completions and /completions (under /v1) over the server's inference service
 * (the one the graders' score_model / label_model use too), closed with the server.
 */
export async function inferenceRoutes(app: FastifyInstance, service: InferenceService) {
  // Before the server waits for open connections: streams in flight end (with an error event)
  // instead of holding shutdown up until they finish.
  app.addHook('preClose', async () => service.close());
  await chatCompletionRoutes(app, service);
  await completionRoutes(app, service);
}

// ------------------------------------------------------------------------- request parameters

export function invalid(param: string, message: string, code = 'invalid_value'): ApiError {
  return new ApiError(400, message, 'invalid_request_error', param, code);
}

export type Body = Record<string, unknown>;

export function requireObjectBody(body: unknown): Body {
  if (!body || typeof body !== 'object' || Array.isArray(body)) {
    throw new ApiError(400, 'Invalid request: expected a JSON object body.', 'invalid_request_error', null, 'invalid_value');
  }
  return body as Body;
}

/** Unknown keys are a 400, as OpenAI answers them. */
export function rejectUnknown(body: Body, known: readonly string[]): void {
  const allowed = new Set(known);
  for (const key of Object.keys(body)) {
    if (!allowed.has(key)) throw invalid(key, `Unrecognized request argument supplied: ${key}`, 'unknown_parameter');
  }
}

export function optionalNumber(body: Body, key: string, min: number, max: number, integer = false): number | undefined {
  const value = body[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'number' || !Number.isFinite(value) || (integer && !Number.isInteger(value))) {
    throw invalid(key, `Invalid type for '${key}': expected ${integer ? 'an integer' : 'a number'}.`, 'invalid_type');
  }
  if (value < min || value > max) {
    const range = max === Infinity ? `>= ${min}` : `between ${min} and ${max}`;
    throw invalid(key, `Invalid '${key}': ${value}. It must be ${range}.`);
  }
  return value;
}

export function optionalBoolean(body: Body, key: string): boolean | undefined {
  const value = body[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'boolean') throw invalid(key, `Invalid type for '${key}': expected a boolean.`, 'invalid_type');
  return value;
}

export function requireModelName(body: Body): string {
  const model = body.model;
  if (model === undefined || model === null) throw invalid('model', "Missing required parameter: 'model'.", 'missing_required_parameter');
  if (typeof model !== 'string' || model.length === 0) throw invalid('model', "Invalid type for 'model': expected a non-empty string.", 'invalid_type');
  return model;
}

/** The sampling parameters both endpoints share (OpenAI's ranges). */
export function samplingOptions(body: Body): GenerateOptions {
  const options: GenerateOptions = {};
  const temperature = optionalNumber(body, 'temperature', 0, 2);
  if (temperature !== undefined) options.temperature = temperature;
  const topP = optionalNumber(body, 'top_p', 0, 1);
  if (topP !== undefined) options.topP = topP;
  const presence = optionalNumber(body, 'presence_penalty', -2, 2);
  if (presence !== undefined) options.presencePenalty = presence;
  const frequency = optionalNumber(body, 'frequency_penalty', -2, 2);
  if (frequency !== undefined) options.frequencyPenalty = frequency;
  const seed = optionalNumber(body, 'seed', Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, true);
  if (seed !== undefined) options.seed = seed;
  const stop = body.stop;
  if (stop !== undefined && stop !== null) {
    const list = typeof stop === 'string' ? [stop] : stop;
    if (!Array.isArray(list) || !list.every((s) => typeof s === 'string')) throw invalid('stop', "Invalid type for 'stop': expected a string or an array of strings.", 'invalid_type');
    if (list.length > 4) throw invalid('stop', `Invalid 'stop': at most 4 stop sequences are allowed (got ${list.length}).`);
    options.stop = list as string[];
  }
  const bias = body.logit_bias;
  if (bias !== undefined && bias !== null) {
    if (typeof bias !== 'object' || Array.isArray(bias)) throw invalid('logit_bias', "Invalid type for 'logit_bias': expected an object of token id → bias.", 'invalid_type');
    const logitBias: Record<number, number> = {};
    for (const [id, value] of Object.entries(bias)) {
      if (!/^\d+$/.test(id)) throw invalid('logit_bias', `Invalid 'logit_bias': key '${id}' is not a token id.`);
      if (typeof value !== 'number' || value < -100 || value > 100) throw invalid('logit_bias', `Invalid 'logit_bias': the bias of token ${id} must be a number between -100 and 100.`);
      logitBias[Number(id)] = value;
    }
    options.logitBias = logitBias;
  }
  return options;
}

/** logit_bias keys must be ids of the model's vocabulary. */
export function checkLogitBias(options: GenerateOptions, info: ModelInfo): void {
  for (const id of Object.keys(options.logitBias ?? {})) {
    if (Number(id) >= info.vocabSize) throw invalid('logit_bias', `Invalid 'logit_bias': token id ${id} is outside this model's vocabulary (${info.vocabSize} tokens).`);
  }
}

/** The seed of choice `index` of n: choices differ, and the same request seed repeats all of them. */
export function choiceSeed(seed: number | undefined, index: number): number | undefined {
  if (seed === undefined) return undefined;
  return (((seed + index * 0x9e3779b1) % 2 ** 32) + 2 ** 32) % 2 ** 32;
}

/** `n`: 1…128 (OpenAI's bound). */
export function choiceCount(body: Body): number {
  return optionalNumber(body, 'n', 1, 128, true) ?? 1;
}

export function streamOptions(body: Body, stream: boolean): { includeUsage: boolean } {
  const value = body.stream_options;
  if (value === undefined || value === null) return { includeUsage: false };
  if (!stream) throw invalid('stream_options', "The 'stream_options' parameter is only allowed when 'stream' is enabled.");
  if (typeof value !== 'object' || Array.isArray(value)) throw invalid('stream_options', "Invalid type for 'stream_options': expected an object.", 'invalid_type');
  const v = value as Body;
  for (const key of Object.keys(v)) {
    if (key !== 'include_usage' && key !== 'include_obfuscation') throw invalid(`stream_options.${key}`, `Unrecognized request argument supplied: stream_options.${key}`, 'unknown_parameter');
  }
  const include = v.include_usage;
  if (include !== undefined && typeof include !== 'boolean') throw invalid('stream_options.include_usage', "Invalid type for 'stream_options.include_usage': expected a boolean.", 'invalid_type');
  return { includeUsage: include === true };
}

/** max_tokens must leave room in the context; absent, generation may run to its end. */
export function tokenBudget(requested: number | undefined, promptTokens: number, info: ModelInfo, param: string): number {
  const room = info.contextLength - promptTokens;
  if (room < 1) {
    throw invalid(param === 'prompt' ? 'prompt' : 'messages', `This model's maximum context length is ${info.contextLength} tokens. However, your prompt has ${promptTokens} tokens.`, 'context_length_exceeded');
  }
  if (requested === undefined) return room;
  if (requested > room) {
    throw invalid(param, `This model's maximum context length is ${info.contextLength} tokens. However, you requested ${promptTokens + requested} tokens (${promptTokens} in the prompt, ${requested} for the completion). Please reduce the prompt or the completion length.`, 'context_length_exceeded');
  }
  return requested;
}

export function responseId(prefix: string): string {
  return prefix + randomBytes(18).toString('base64url').replace(/[-_]/g, 'x');
}

/**
 * Aborts the request's generations when the client goes away before the response is complete
 * (and, called by the handler, when one of them failed and the rest are of no use).
 */
export function disconnectSignal(request: FastifyRequest, reply: FastifyReply): AbortController {
  const controller = new AbortController();
  const onClose = () => {
    if (!reply.raw.writableEnded) controller.abort(Object.assign(new Error('client disconnected'), { name: 'AbortError' }));
  };
  reply.raw.once('close', onClose);
  request.raw.once('aborted', onClose);
  return controller;
}

/** Server-sent events: `data: {json}\n\n` per chunk, `data: [DONE]` at the end. */
export class EventStream {
  constructor(private readonly reply: FastifyReply) {
    reply.hijack();
    reply.raw.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
  }

  get open(): boolean {
    return !this.reply.raw.writableEnded && !this.reply.raw.destroyed;
  }

  send(data: unknown): void {
    if (this.open) this.reply.raw.write(`data: ${JSON.stringify(data)}\n\n`);
  }

  /** An error after the stream began: OpenAI's envelope as an event, then the end. */
  fail(error: unknown): void {
    const e = error instanceof ApiError ? error : new ApiError(500, 'The server had an error while processing your request.', 'server_error');
    this.send(e.toJSON());
    this.end();
  }

  end(): void {
    if (!this.open) return;
    this.reply.raw.write('data: [DONE]\n\n');
    this.reply.raw.end();
  }
}

/** Errors from the worker: an abort stays an abort, the rest become API errors. */
export function generationError(error: unknown): unknown {
  if (error instanceof ApiError) return error;
  const e = error as Error;
  if (e?.name === 'AbortError') return e;
  if (error instanceof EngineError && (error.code === 'invalid_prompt' || error.code === 'invalid_generate_options')) {
    return new ApiError(400, error.message, 'invalid_request_error', null, 'invalid_value');
  }
  return new ApiError(500, `Generation failed: ${e?.message ?? String(error)}`, 'server_error', null, 'generation_failed');
}

/** The client is gone: Fastify stops waiting for a response, and the socket is let go. */
export function abandon(reply: FastifyReply): FastifyReply {
  reply.hijack();
  if (!reply.raw.destroyed) reply.raw.destroy();
  return reply;
}

export const shuttingDown = () => new ApiError(503, 'The server is shutting down; the generation was stopped.', 'server_error', null, 'server_shutting_down');

export const isAbort = (error: unknown) => (error as Error)?.name === 'AbortError';
