// What route modules share: configuration, the store, the model catalogue, and the hook that starts file validation.
import type { Config } from '../config.ts';
import type { ModelCatalogue } from '../models/catalogue.ts';
import type { Store } from '../store/index.ts';

export interface ApiContext {
  config: Config;
  store: Store;
  /** What a model name means (base, fine-tuned, checkpoint), for every route that takes one. */
  catalogue: ModelCatalogue;
  /** Starts validating a new job's files in the background (see scheduler/file-validation.ts). */
  startFileValidation(jobId: string): void;
  /** A job ended (succeeded, failed, cancelled): webhooks go out. */
  onJobFinished(jobId: string, status: 'succeeded' | 'failed' | 'cancelled'): void;
}
