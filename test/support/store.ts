// A fresh store in a temporary DATA_DIR (rows in SQLite there, or in a fresh PostgreSQL schema),
// and queued jobs inserted directly (no HTTP).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { newId } from '../../src/domain/naming.ts';
import { openStore, type JobRecord, type Store, type StoreLocation } from '../../src/store/index.ts';
import { freshDatabase, type SqlBackend } from './database.ts';

export async function tempStore(
  backend: SqlBackend = 'sqlite',
): Promise<{ store: Store; dataDir: string; location: StoreLocation; cleanup(): Promise<void> }> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tuneforge-store-'));
  const database = await freshDatabase(backend);
  const location = { dataDir, databaseUrl: database.url };
  const store = await openStore(location);
  return {
    store,
    dataDir,
    location,
    async cleanup() {
      await store.close();
      await database.drop();
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
