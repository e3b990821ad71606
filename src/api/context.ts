// What route modules share: configuration, the store, and the hook that starts file validation.
import type { Config } from '../config.ts';
import type { Store } from '../store/index.ts';

export interface ApiContext {
  config: Config;
  store: Store;
  /** Starts validating a new job's files in the background (see scheduler/file-validation.ts). */
  startFileValidation(jobId: string): void;
  /** A job ended (succeeded, failed, cancelled): webhooks go out. */
  onJobFinished(jobId: string, status: 'succeeded' | 'failed' | 'cancelled'): void;
}

export const nowSeconds = () => Math.floor(Date.now() / 1000);
