// Failures the engine's callers act on carry a code, so the control plane never reads wording to
// tell them apart. An EngineError crosses a worker thread or a child process as plain data
// (serializeError / deserializeError): structured clone keeps an Error's message, not its class or code.

export type EngineErrorCode =
  /** The training file cannot be trained on: a bad line, no examples, a prompt filling the context. */
  | 'invalid_training_file'
  /** The same, for the validation file. */
  | 'invalid_validation_file'
  /** generate: an empty prompt, a token id outside the vocabulary, a prompt that fills the context. */
  | 'invalid_prompt'
  /** generate: options the model cannot honour (maxTokens below 1, a logit_bias token outside the vocabulary). */
  | 'invalid_generate_options'
  /** The inference worker thread died (a native crash, out of memory). */
  | 'inference_worker_exited'
  /** The inference host was closed: it takes no more requests. */
  | 'inference_host_closed'
  /** train: a step of the job's shape is estimated to need more memory than the worker may use. */
  | 'insufficient_memory';

export class EngineError extends Error {
  override readonly name = 'EngineError';

  constructor(
    readonly code: EngineErrorCode,
    message: string,
    /** insufficient_memory: the estimated peak memory the training needs (a bigger worker may run it). */
    readonly neededBytes?: number,
  ) {
    super(message);
  }
}

/** An error as plain data for postMessage / process.send. */
export interface SerializedError {
  name: string;
  message: string;
  code?: EngineErrorCode;
  neededBytes?: number;
}

export function serializeError(error: unknown): SerializedError {
  if (error instanceof EngineError) return { name: error.name, message: error.message, code: error.code, ...(error.neededBytes !== undefined ? { neededBytes: error.neededBytes } : {}) };
  const e = error as { name?: unknown; message?: unknown } | null;
  return { name: typeof e?.name === 'string' ? e.name : 'Error', message: typeof e?.message === 'string' ? e.message : String(error) };
}

/** The error again: an EngineError with its code, or an Error of the same name and message. */
export function deserializeError(error: SerializedError): Error {
  if (error.code) return new EngineError(error.code, error.message, error.neededBytes);
  return Object.assign(new Error(error.message), { name: error.name });
}

/** Runs `read` over a dataset file: whatever fails in it is that file's EngineError. */
export function readingDataset<T>(role: 'training' | 'validation', read: () => T): T {
  try {
    return read();
  } catch (error) {
    if (error instanceof EngineError) throw error;
    throw new EngineError(role === 'training' ? 'invalid_training_file' : 'invalid_validation_file', (error as Error)?.message ?? String(error));
  }
}
