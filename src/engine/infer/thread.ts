// Generation off the HTTP event loop: models live in a worker_threads Worker, and the server talks
// to it through `InferenceHost`, whose methods return promises. ORT's session.run blocks the thread
// that calls it (ENGINE-NOTES), so running it here keeps the main thread free to serve requests.
//
// Protocol (structured-clone messages; `id` pairs a reply with its request):
//   main → worker  {op: 'load', id, key, source, settings}        → {id, type: 'result', value: ModelInfo}
//                  (settings.shareBase: LoRA adapters of one base share its resident weights)
//                  {op: 'generate', id, key, promptIds, options}  → {id, type: 'token', delta, info}*, then result
//                  {op: 'chatPrompt', id, key, messages, tools}   → result: number[]
//                  {op: 'textPrompt', id, key, text}              → result: number[]
//                  {op: 'abort', id}  (the id of a generate)      → that generate replies with an error named AbortError
//                  {op: 'unload', id, key}                        → result: null
//                  {op: 'close', id}  aborts every generation, waits for all work in the worker
//                                     (loads, generations, warmups), releases every model → result: null
//   worker → main  {id, type: 'error', error: {name, message, code?}} for any failed request (an
//                  EngineError keeps its code: see ../errors.ts).
// Requests to the worker run concurrently: each generate yields between tokens, so two streams
// interleave token by token, each with its own KV cache.
//
// Closing: terminating the thread while ONNX Runtime works in it (a session.run, a session being
// created) aborts the whole process ("terminate called after throwing an instance of
// 'Napi::Error'"), so `close` first asks the worker to stop and release everything, and terminates
// it only once the worker answered (it is idle then) or has already exited.

import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import type { ChatMessage, ToolDefinition } from '../data/chat-format.ts';
import { EngineError, deserializeError, serializeError, type SerializedError } from '../errors.ts';
import type { GenerateOptions, GenerationResult, OnToken, TokenInfo } from './generate.ts';
import { chatPrompt, loadModelForInference, loadSharedBase, textPrompt, type InferenceModel as Model, type InferenceOptions, type SharedBaseModel } from './model.ts';

const WORKER_MARK = 'tuneforge-inference-worker';

export interface ModelSourceMessage {
  baseModelDir: string;
  adapterDir?: string;
  modelDir?: string;
}

export interface HostLoadOptions extends InferenceOptions {
  /**
   * Serve `source.adapterDir` over a base shared with every other key loaded this way from the
   * same baseModelDir (unmerged LoRA), instead of a private copy with the adapter merged in.
   * (`modelDir` does not apply: a full fine-tune has no base to share.)
   */
  shareBase?: boolean;
  /** After loading, compile the step shapes in the background (first requests then skip compiling). */
  warmup?: boolean;
}

/** What the server needs to know about a loaded model. */
export interface ModelInfo {
  architecture: string;
  vocabSize: number;
  contextLength: number;
  eosTokenIds: number[];
  hasChatTemplate: boolean;
}

type Request =
  | { op: 'load'; id: number; key: string; source: ModelSourceMessage; settings?: HostLoadOptions }
  | { op: 'generate'; id: number; key: string; promptIds: number[]; options: Omit<GenerateOptions, 'signal'> }
  | { op: 'chatPrompt'; id: number; key: string; messages: ChatMessage[]; tools?: ToolDefinition[] }
  | { op: 'textPrompt'; id: number; key: string; text: string }
  | { op: 'abort'; id: number }
  | { op: 'unload'; id: number; key: string }
  | { op: 'close'; id: number };

type Reply =
  | { id: number; type: 'result'; value: unknown }
  | { id: number; type: 'token'; delta: string; info: TokenInfo }
  | { id: number; type: 'error'; error: SerializedError };

interface Pending {
  resolve: (value: never) => void;
  reject: (error: Error) => void;
  onToken?: OnToken;
}

/** The main thread's handle on one inference worker. */
export class InferenceHost {
  private readonly worker: Worker;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  /** No new requests (close was called, or the worker died). */
  private closed = false;
  private exited = false;
  private closing: Promise<void> | null = null;

  constructor() {
    // The worker runs this same file. Under tsx, Node 20 does not carry the TypeScript loader into
    // workers (neither `--import tsx` in execArgv nor the parent's hooks apply), so the worker's
    // entry is a small script that registers tsx's ESM hooks itself before importing us.
    const self = JSON.stringify(import.meta.url);
    const entry = import.meta.url.endsWith('.ts')
      ? `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then(({ register }) => { register(); return import(${self}); });`
      : `import(${self});`;
    this.worker = new Worker(entry, { eval: true, workerData: { mark: WORKER_MARK } });
    this.worker.on('message', (reply: Reply) => this.receive(reply));
    this.worker.on('error', (error) => this.failAll(new EngineError('inference_worker_exited', `inference worker failed: ${error.message}`)));
    this.worker.on('exit', (code) => {
      this.exited = true;
      this.failAll(new EngineError('inference_worker_exited', `inference worker exited (code ${code})`));
    });
  }

  /** Loads a model under `key` (a later load with the same key replaces it). */
  load(key: string, source: ModelSourceMessage, settings?: HostLoadOptions): Promise<ModelInfo> {
    return this.request({ op: 'load', key, source, settings });
  }

  /** Generates from prompt ids; `onToken` receives each text delta as it is produced. */
  generate(key: string, promptIds: number[], options: GenerateOptions = {}, onToken?: OnToken): Promise<GenerationResult> {
    const { signal, ...plain } = options;
    if (signal?.aborted) return Promise.reject(signal.reason ?? abortError());
    const { id, promise } = this.requestWithId<GenerationResult>({ op: 'generate', key, promptIds, options: plain }, onToken);
    if (signal) {
      const abort = () => this.worker.postMessage({ op: 'abort', id } satisfies Request);
      signal.addEventListener('abort', abort, { once: true });
      promise.finally(() => signal.removeEventListener('abort', abort)).catch(() => {});
    }
    return promise;
  }

  /** Prompt ids for a conversation through the model's chat template. */
  chatPrompt(key: string, messages: ChatMessage[], tools?: ToolDefinition[]): Promise<number[]> {
    return this.request({ op: 'chatPrompt', key, messages, tools });
  }

  /** Prompt ids for a plain-text prompt (/v1/completions), BOS included where the tokenizer adds one. */
  textPrompt(key: string, text: string): Promise<number[]> {
    return this.request({ op: 'textPrompt', key, text });
  }

  unload(key: string): Promise<void> {
    return this.request({ op: 'unload', key });
  }

  /**
   * Stops the worker: new requests reject at once, generations end as aborted, loads in progress
   * finish; once the worker has released its models (and no ONNX Runtime call is running in it)
   * it is terminated. Requests still pending then reject.
   */
  close(): Promise<void> {
    return (this.closing ??= this.shutDown());
  }

  private async shutDown(): Promise<void> {
    this.closed = true;
    if (!this.exited) {
      const id = this.nextId++;
      const done = new Promise((resolve, reject) => this.pending.set(id, { resolve: resolve as (value: never) => void, reject }));
      this.worker.postMessage({ op: 'close', id } satisfies Request);
      await done.catch(() => {}); // rejects when the worker exits first
    }
    await this.worker.terminate();
  }

  private request<T>(message: DistributiveOmit<Request, 'id'>): Promise<T> {
    return this.requestWithId<T>(message).promise;
  }

  private requestWithId<T>(message: DistributiveOmit<Request, 'id'>, onToken?: OnToken): { id: number; promise: Promise<T> } {
    if (this.closed) return { id: 0, promise: Promise.reject(new EngineError('inference_host_closed', 'inference host is closed')) };
    const id = this.nextId++;
    const promise = new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (value: never) => void, reject, onToken });
    });
    this.worker.postMessage({ ...message, id } as Request);
    return { id, promise };
  }

  private receive(reply: Reply): void {
    const pending = this.pending.get(reply.id);
    if (!pending) return;
    if (reply.type === 'token') {
      try {
        pending.onToken?.(reply.delta, reply.info);
      } catch (error) {
        // A failing stream consumer (e.g. a closed HTTP response) ends its generation, not the host.
        this.pending.delete(reply.id);
        this.worker.postMessage({ op: 'abort', id: reply.id } satisfies Request);
        pending.reject(error instanceof Error ? error : new Error(String(error)));
      }
      return;
    }
    this.pending.delete(reply.id);
    if (reply.type === 'result') pending.resolve(reply.value as never);
    else pending.reject(deserializeError(reply.error));
  }

  private failAll(error: Error): void {
    // (The worker is gone: 'error' is an uncaught exception that ended it, 'exit' its end.)
    this.closed = true;
    for (const p of this.pending.values()) p.reject(error);
    this.pending.clear();
  }
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

function abortError(): Error {
  return Object.assign(new Error('generation aborted'), { name: 'AbortError' });
}

// ------------------------------------------------------------------------------- the worker side

/**
 * Shared bases in the worker, by base folder: each lives while some loaded key uses it.
 * Session settings of a shared base are those of the load that created it.
 */
class SharedBases {
  private readonly bases = new Map<string, { base: Promise<SharedBaseModel>; users: Set<string> }>();

  async acquire(key: string, baseModelDir: string, settings: InferenceOptions | undefined): Promise<SharedBaseModel> {
    let entry = this.bases.get(baseModelDir);
    if (!entry) {
      entry = { base: loadSharedBase(baseModelDir, settings), users: new Set() };
      this.bases.set(baseModelDir, entry);
      const failed = entry;
      entry.base.catch(() => this.bases.get(baseModelDir) === failed && this.bases.delete(baseModelDir));
    }
    entry.users.add(key);
    return entry.base;
  }

  /** Every base, used or not (the worker is closing). */
  async releaseAll(): Promise<void> {
    const entries = [...this.bases.values()];
    this.bases.clear();
    for (const entry of entries) await (await entry.base.catch(() => null))?.release();
  }

  /** `key` no longer uses any shared base (but `keepDir`'s); a base nobody uses is released. */
  async drop(key: string, keepDir?: string): Promise<void> {
    for (const [dir, entry] of this.bases) {
      if (dir === keepDir || !entry.users.delete(key) || entry.users.size > 0) continue;
      this.bases.delete(dir);
      await (await entry.base).release();
    }
  }
}

function serveRequests(): void {
  const port = parentPort!;
  const models = new Map<string, Promise<Model>>();
  const shared = new SharedBases();
  const aborts = new Map<number, AbortController>();
  /** Work in progress (requests, background warmups): closing waits for all of it. */
  const running = new Set<Promise<unknown>>();
  const track = <T>(work: Promise<T>): Promise<T> => {
    running.add(work);
    const done = () => running.delete(work);
    work.then(done, done);
    return work;
  };
  const send = (reply: Reply) => port.postMessage(reply);
  const model = (key: string) => models.get(key) ?? Promise.reject(new Error(`model ${key} is not loaded`));
  const unload = async (key: string) => {
    const m = models.get(key);
    models.delete(key);
    if (m) await (await m).release();
    await shared.drop(key);
  };
  /** Everything stops and is released; the main thread terminates the worker after the reply. */
  const close = async () => {
    for (const controller of aborts.values()) controller.abort(abortError());
    while (running.size > 0) await Promise.allSettled([...running]); // generations stop within a token
    for (const key of [...models.keys()]) await unload(key).catch(() => {});
    await shared.releaseAll();
    return null;
  };

  const handle = async (request: Request): Promise<unknown> => {
    switch (request.op) {
      case 'load': {
        const { key, source } = request;
        const { shareBase, warmup, ...settings } = request.settings ?? {};
        const previous = models.get(key);
        const loading = shareBase
          ? shared.acquire(key, source.baseModelDir, settings).then((base) => base.withAdapter(source.adapterDir))
          : loadModelForInference(source, settings);
        void loading.then(() => shared.drop(key, shareBase ? source.baseModelDir : undefined), () => {});
        models.set(key, loading);
        loading.catch(() => models.get(key) === loading && models.delete(key));
        const loaded = await loading;
        if (previous) await (await previous.catch(() => null))?.release();
        if (warmup) void track(loaded.warmup().catch(() => {})); // a failure here resurfaces on first use
        return {
          architecture: loaded.config.architecture,
          vocabSize: loaded.config.vocabSize,
          contextLength: loaded.contextLength,
          eosTokenIds: loaded.eosTokenIds,
          hasChatTemplate: loaded.tokenizer.chatTemplate !== null,
        } satisfies ModelInfo;
      }
      case 'generate': {
        const controller = new AbortController();
        aborts.set(request.id, controller);
        try {
          const m = await model(request.key);
          return await m.generate(request.promptIds, { ...request.options, signal: controller.signal }, (delta, info) =>
            send({ id: request.id, type: 'token', delta, info }),
          );
        } finally {
          aborts.delete(request.id);
        }
      }
      case 'chatPrompt':
        return chatPrompt(await model(request.key), request.messages, request.tools);
      case 'textPrompt':
        return textPrompt(await model(request.key), request.text);
      case 'unload':
        await unload(request.key);
        return null;
      case 'close':
        return close();
      case 'abort':
        aborts.get(request.id)?.abort(abortError());
        return undefined;
    }
  };

  port.on('message', (request: Request) => {
    if (request.op === 'abort') return void handle(request);
    (request.op === 'close' ? handle(request) : track(handle(request))).then(
      (value) => send({ id: request.id, type: 'result', value }),
      (error: unknown) => send({ id: request.id, type: 'error', error: serializeError(error) }),
    );
  });
}

if (!isMainThread && (workerData as { mark?: string } | null)?.mark === WORKER_MARK) serveRequests();
