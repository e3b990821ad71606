// The server's inference: what a `model` name means for a request (the model catalogue, as the
// caller's organization may use it), one InferenceHost (worker thread) per server, created on first
// use and closed with the server, the models loaded in it (least recently used unloaded beyond a
// limit; a loaded model's folders stay in the blob cache until it is unloaded), and generation
// failures as API errors by the engine's error codes. The graders' score_model / label_model models
// are served by it too.
import { ApiError } from '../../domain/errors.ts';
import { EngineError, InferenceHost, type ChatMessage, type GenerateOptions, type GenerationResult, type ModelInfo, type OnToken, type ToolDefinition } from '../../engine/index.ts';
import { chatTemplateOf, inferenceSource, inferenceKey, type CatalogueModel, type ModelCatalogue } from '../../models/catalogue.ts';

/** A `model` name as loaded in the host. */
export interface ServedModel {
  /** The name the caller used (echoed in responses). */
  name: string;
  /** The host key of the loaded copy (for the host's requests and generate). */
  key: string;
  /** The chat template text (tool-call syntax), null when the folder has none. */
  chatTemplate: string | null;
}

/** A model loaded in the host: what loading told, its chat template, and the hold on its folders. */
interface LoadedModel {
  info: ModelInfo;
  chatTemplate: string | null;
  release(): void;
}

export interface InferenceSettings {
  /** Models kept loaded in the worker (least recently used beyond this are unloaded when idle). */
  maxLoadedModels?: number;
  /** Generations per model at once; more wait in FIFO order (the host's gate). */
  maxConcurrentGenerations?: number;
}

export class InferenceService {
  private host: InferenceHost | null = null;
  /** Loaded (or loading) models in least-recently-used order, with their requests in flight. */
  private readonly loaded = new Map<string, { hostKey: string; ready: Promise<LoadedModel>; users: number }>();
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

  /** Whether `organization` may use the model `name` (resolve's rules, without a 404). */
  async exists(name: string, organization: string): Promise<boolean> {
    return (await this.catalogue.find(name, organization)) !== null;
  }

  /**
   * Resolves `name` for `organization` and holds the model loaded while `use` runs; `use` gets it
   * with `key` set to the host key of the loaded copy (for the host's requests and generate).
   */
  async withModel<T>(name: string, organization: string, use: (model: ServedModel, info: ModelInfo) => Promise<T>): Promise<T> {
    const model = await this.catalogue.resolve(name, organization);
    const { loaded, key, release } = await this.acquire(model);
    try {
      return await use({ name, key, chatTemplate: loaded.chatTemplate }, loaded.info);
    } finally {
      release();
    }
  }

  private get inferenceHost(): InferenceHost {
    if (this.closed) throw new ApiError(503, 'The server is shutting down.', 'server_error', null, 'server_shutting_down');
    return (this.host ??= new InferenceHost());
  }

  /**
   * Loads the model (once; later requests share it) and holds it loaded until `release`.
   * Models nobody is using are unloaded, least recently used first, beyond maxLoadedModels.
   */
  private async acquire(model: CatalogueModel): Promise<{ loaded: LoadedModel; key: string; release: () => void }> {
    const host = this.inferenceHost;
    const modelKey = inferenceKey(model);
    let entry = this.loaded.get(modelKey);
    if (entry) this.loaded.delete(modelKey); // re-inserted below: most recently used
    else {
      // A fresh host key per load: unloading an evicted copy never touches a newer one.
      const hostKey = `${modelKey}#${++this.loads}`;
      const ready = this.track(this.load(host, hostKey, model));
      entry = { hostKey, ready, users: 0 };
      ready.catch(() => this.loaded.get(modelKey) === entry && this.loaded.delete(modelKey));
    }
    this.loaded.set(modelKey, entry);
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
      return { loaded: await entry.ready, key: held.hostKey, release };
    } catch (error) {
      release();
      this.generationFailed(error);
      throw new ApiError(500, `The model '${model.name}' could not be loaded: ${(error as Error).message}`, 'server_error', 'model', 'model_load_failed');
    }
  }

  /** Loads the model's folders (from the blob cache, held until it is unloaded) into the host. */
  private async load(host: InferenceHost, hostKey: string, model: CatalogueModel): Promise<LoadedModel> {
    const files = await this.catalogue.open(model);
    try {
      const { source, shareBase } = inferenceSource(model, files);
      const info = await host.load(hostKey, source, { shareBase, maxConcurrentGenerations: this.maxConcurrent });
      return { info, chatTemplate: chatTemplateOf(files.modelDir), release: files.release };
    } catch (error) {
      files.release();
      throw error;
    }
  }

  /** Prompt ids for a conversation through the model's chat template (a template's refusal comes out as is). */
  chatPrompt(key: string, messages: ChatMessage[], tools?: ToolDefinition[]): Promise<number[]> {
    return this.onHost((host) => host.chatPrompt(key, messages, tools));
  }

  /** Prompt ids for a plain-text prompt. */
  textPrompt(key: string, text: string): Promise<number[]> {
    return this.onHost((host) => host.textPrompt(key, text));
  }

  /** A request to the host: when the host itself is gone, the next request gets a fresh one and this one a 500. */
  private async onHost<T>(request: (host: InferenceHost) => Promise<T>): Promise<T> {
    try {
      return await this.track(request(this.inferenceHost));
    } catch (error) {
      if (!hostGone(error)) throw error;
      this.generationFailed(error);
      throw generationError(error);
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
      void this.host?.unload(entry.hostKey).catch(() => {}).finally(() => void entry.ready.then((m) => m.release(), () => {}));
    }
  }

  /**
   * A generation (or a load) failed: when it was the worker itself that died (a crash, out of
   * memory), the next request starts a fresh one instead of failing forever.
   */
  generationFailed(error: unknown): void {
    if (this.closed || !hostGone(error)) return;
    const host = this.host;
    this.host = null;
    for (const entry of this.loaded.values()) void entry.ready.then((m) => m.release(), () => {});
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

/** Errors from the worker: an abort stays an abort, the rest become API errors. */
function generationError(error: unknown): unknown {
  if (error instanceof ApiError) return error;
  const e = error as Error;
  if (e?.name === 'AbortError') return e;
  if (error instanceof EngineError && (error.code === 'invalid_prompt' || error.code === 'invalid_generate_options')) {
    return new ApiError(400, error.message, 'invalid_request_error', null, 'invalid_value');
  }
  return new ApiError(500, `Generation failed: ${e?.message ?? String(error)}`, 'server_error', null, 'generation_failed');
}

const shuttingDown = () => new ApiError(503, 'The server is shutting down; the generation was stopped.', 'server_error', null, 'server_shutting_down');

const isAbort = (error: unknown) => (error as Error)?.name === 'AbortError';

/** The host's worker died, or the host was closed under the request: told by the engine's code. */
const hostGone = (error: unknown) => error instanceof EngineError && (error.code === 'inference_worker_exited' || error.code === 'inference_host_closed');
