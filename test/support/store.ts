// A fresh store in a temporary DATA_DIR, and queued jobs inserted directly (no HTTP).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { newId } from '../../src/domain/naming.ts';
import { openStore, type JobRecord, type Store } from '../../src/store/index.ts';

export async function tempStore(): Promise<{ store: Store; dataDir: string; cleanup(): Promise<void> }> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tuneforge-store-'));
  const store = await openStore(dataDir);
  return {
    store,
    dataDir,
    async cleanup() {
      await store.close();
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export async function queuedJob(store: Store, organizationId = 'org-a', extra: Partial<JobRecord> = {}): Promise<JobRecord> {
  const id = newId('ftjob-');
  await store.jobs.insert({
    id,
    organization_id: organizationId,
    model: 'tiny-test',
    training_file: 'file-x',
    validation_file: null,
    status: 'queued',
    method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 1, batch_size: 1, learning_rate_multiplier: 1.8 } } },
    suffix: null,
    seed: 1,
    metadata: null,
    integrations: null,
    created_at: Math.floor(Date.now() / 1000),
    ...extra,
  });
  return (await store.jobs.get(id))!;
}
