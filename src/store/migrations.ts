// Schema migrations, applied in name order by Kysely's Migrator. The only dialect-specific
// piece is the auto-increment `seq` column (insertion order for lists and the queue).
import fs from 'node:fs';
import path from 'node:path';
import { Kysely, type CreateTableBuilder, type Migration, type MigrationProvider } from 'kysely';

export type SqlDialectName = 'sqlite' | 'postgres';

function withSeq<T extends string>(table: CreateTableBuilder<T, never>, dialect: SqlDialectName) {
  return dialect === 'postgres'
    ? table.addColumn('seq', 'bigserial', (c) => c.primaryKey())
    : table.addColumn('seq', 'integer', (c) => c.primaryKey().autoIncrement());
}

function initial(dialect: SqlDialectName): Migration {
  return {
    async up(db: Kysely<any>) {
      await withSeq(db.schema.createTable('files'), dialect)
        .addColumn('id', 'text', (c) => c.notNull().unique())
        .addColumn('organization_id', 'text', (c) => c.notNull())
        .addColumn('filename', 'text', (c) => c.notNull())
        .addColumn('purpose', 'text', (c) => c.notNull())
        .addColumn('bytes', 'bigint', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('expires_at', 'bigint')
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('status_details', 'text')
        .execute();
      await db.schema.createIndex('files_org').on('files').columns(['organization_id', 'seq']).execute();

      await withSeq(db.schema.createTable('uploads'), dialect)
        .addColumn('id', 'text', (c) => c.notNull().unique())
        .addColumn('organization_id', 'text', (c) => c.notNull())
        .addColumn('filename', 'text', (c) => c.notNull())
        .addColumn('purpose', 'text', (c) => c.notNull())
        .addColumn('bytes', 'bigint', (c) => c.notNull())
        .addColumn('mime_type', 'text', (c) => c.notNull())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('expires_at', 'bigint', (c) => c.notNull())
        .addColumn('file_id', 'text')
        .execute();

      await withSeq(db.schema.createTable('upload_parts'), dialect)
        .addColumn('id', 'text', (c) => c.notNull().unique())
        .addColumn('upload_id', 'text', (c) => c.notNull())
        .addColumn('bytes', 'bigint', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('upload_parts_upload').on('upload_parts').column('upload_id').execute();

      await withSeq(db.schema.createTable('jobs'), dialect)
        .addColumn('id', 'text', (c) => c.notNull().unique())
        .addColumn('organization_id', 'text', (c) => c.notNull())
        .addColumn('model', 'text', (c) => c.notNull())
        .addColumn('training_file', 'text', (c) => c.notNull())
        .addColumn('validation_file', 'text')
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('method', 'text', (c) => c.notNull())
        .addColumn('suffix', 'text')
        .addColumn('seed', 'bigint', (c) => c.notNull())
        .addColumn('metadata', 'text')
        .addColumn('integrations', 'text')
        .addColumn('error', 'text')
        .addColumn('fine_tuned_model', 'text')
        .addColumn('finished_at', 'bigint')
        .addColumn('trained_tokens', 'bigint')
        .addColumn('estimated_finish', 'bigint')
        .addColumn('result_files', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('dataset', 'text')
        .addColumn('worker_id', 'text')
        .addColumn('lease_expires_at', 'bigint')
        .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('resume_point', 'text')
        .execute();
      await db.schema.createIndex('jobs_org').on('jobs').columns(['organization_id', 'seq']).execute();
      await db.schema.createIndex('jobs_status').on('jobs').columns(['status', 'seq']).execute();

      await db.schema
        .createTable('job_metadata')
        .addColumn('job_id', 'text', (c) => c.notNull())
        .addColumn('key', 'text', (c) => c.notNull())
        .addColumn('value', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('job_metadata_pk', ['job_id', 'key'])
        .execute();
      await db.schema.createIndex('job_metadata_kv').on('job_metadata').columns(['key', 'value']).execute();

      await withSeq(db.schema.createTable('events'), dialect)
        .addColumn('id', 'text', (c) => c.notNull().unique())
        .addColumn('job_id', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('level', 'text', (c) => c.notNull())
        .addColumn('type', 'text', (c) => c.notNull())
        .addColumn('message', 'text', (c) => c.notNull())
        .addColumn('data', 'text')
        .execute();
      await db.schema.createIndex('events_job').on('events').columns(['job_id', 'seq']).execute();

      await withSeq(db.schema.createTable('checkpoints'), dialect)
        .addColumn('id', 'text', (c) => c.notNull().unique())
        .addColumn('job_id', 'text', (c) => c.notNull())
        .addColumn('organization_id', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('fine_tuned_model_checkpoint', 'text', (c) => c.notNull().unique())
        .addColumn('step_number', 'integer', (c) => c.notNull())
        .addColumn('metrics', 'text', (c) => c.notNull())
        .addColumn('dir', 'text')
        .execute();
      await db.schema.createIndex('checkpoints_job').on('checkpoints').columns(['job_id', 'seq']).execute();

      await withSeq(db.schema.createTable('permissions'), dialect)
        .addColumn('id', 'text', (c) => c.notNull().unique())
        .addColumn('checkpoint', 'text', (c) => c.notNull())
        .addColumn('project_id', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('permissions_checkpoint').on('permissions').columns(['checkpoint', 'seq']).execute();

      await withSeq(db.schema.createTable('models'), dialect)
        .addColumn('id', 'text', (c) => c.notNull().unique())
        .addColumn('organization_id', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('job_id', 'text', (c) => c.notNull())
        .addColumn('base_model', 'text', (c) => c.notNull())
        .addColumn('dir', 'text')
        .execute();
    },
  };
}

/** Uploads keep their `expires_after` until complete makes the file it applies to. */
const uploadFileExpiry: Migration = {
  async up(db: Kysely<any>) {
    await db.schema.alterTable('uploads').addColumn('file_expires_after', 'bigint').execute();
  },
};

/** The lease is the one time kept in milliseconds (heartbeats are seconds apart): its name says so. */
const leaseUnit: Migration = {
  async up(db: Kysely<any>) {
    await db.schema.alterTable('jobs').renameColumn('lease_expires_at', 'lease_expires_at_ms').execute();
  },
  async down(db: Kysely<any>) {
    await db.schema.alterTable('jobs').renameColumn('lease_expires_at_ms', 'lease_expires_at').execute();
  },
};

/** Every write to a job bumps its version, so what a reader built from the row can be kept until it changes (api/fine-tuning/job-json.ts). */
const jobVersion: Migration = {
  async up(db: Kysely<any>) {
    await db.schema.alterTable('jobs').addColumn('version', 'integer', (c) => c.notNull().defaultTo(0)).execute();
  },
  async down(db: Kysely<any>) {
    await db.schema.alterTable('jobs').dropColumn('version').execute();
  },
};

/**
 * Capacity-aware claims: each worker states its memory and cores and heartbeats (workers), and a job
 * records the memory it needs (jobs.memory_required_bytes; null: unknown, any worker may claim it).
 */
const workerCapacity: Migration = {
  async up(db: Kysely<any>) {
    await db.schema
      .createTable('workers')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('host', 'text', (c) => c.notNull())
      .addColumn('memory_bytes', 'bigint', (c) => c.notNull())
      .addColumn('cores', 'integer', (c) => c.notNull())
      .addColumn('started_at_ms', 'bigint', (c) => c.notNull())
      .addColumn('heartbeat_at_ms', 'bigint', (c) => c.notNull())
      .execute();
    await db.schema.alterTable('jobs').addColumn('memory_required_bytes', 'bigint').execute();
  },
  async down(db: Kysely<any>) {
    await db.schema.alterTable('jobs').dropColumn('memory_required_bytes').execute();
    await db.schema.dropTable('workers').execute();
  },
};

/**
 * Checkpoints, models and resume points name blob keys (jobs/<id>/…), not folders of one host: a
 * row holding a folder under DATA_DIR/jobs gets that folder's key (any other folder: none, the
 * weights were never where a key can name them), and this host's DATA_DIR/jobs moves into the local
 * blob folder, DATA_DIR/blobs/jobs, where the local store keeps those keys (a rename per job). An
 * install that shared one DATA_DIR keeps every model, checkpoint and resume point.
 */
function artifactKeys(dataDir: string | null): Migration {
  return {
    async up(db: Kysely<any>) {
      for (const [table, column] of [['checkpoints', 'dir'], ['models', 'dir'], ['jobs', 'resume_point']] as const) {
        const rows = await db.selectFrom(table).select(['id', column]).where(column, 'is not', null).execute();
        for (const row of rows) {
          const key = legacyFolderKey(row[column]);
          if (key !== row[column]) await db.updateTable(table).set({ [column]: key }).where('id', '=', row.id).execute();
        }
      }
      if (dataDir) moveJobFolders(dataDir);
    },
    // Keys stay keys (they name the same blobs for every version since); `up` again leaves them as they are.
    async down() {},
  };
}

/** The blob key of a folder DATA_DIR/jobs/<id>/<rest> (jobs/<id>/<rest>); a key stays as it is; null for anything else. */
export function legacyFolderKey(folder: string): string | null {
  if (!path.isAbsolute(folder)) return folder;
  const match = /\/jobs\/([A-Za-z0-9_-]+\/.+)$/.exec(folder);
  return match ? `jobs/${match[1]}` : null;
}

function moveJobFolders(dataDir: string): void {
  const from = path.join(dataDir, 'jobs');
  if (!fs.existsSync(from)) return;
  const to = path.join(dataDir, 'blobs', 'jobs');
  fs.mkdirSync(to, { recursive: true });
  for (const name of fs.readdirSync(from)) {
    if (!fs.existsSync(path.join(to, name))) fs.renameSync(path.join(from, name), path.join(to, name));
  }
}

/** `dataDir`: the host's DATA_DIR, whose job folders the 0006 upgrade moves into its blob folder (null: none to move). */
export function migrationProvider(dialect: SqlDialectName, dataDir: string | null = null): MigrationProvider {
  return {
    async getMigrations() {
      return {
        '0001_initial': initial(dialect), '0002_upload_file_expiry': uploadFileExpiry, '0003_lease_unit': leaseUnit, '0004_job_version': jobVersion,
        '0005_worker_capacity': workerCapacity, '0006_artifact_keys': artifactKeys(dataDir),
      };
    },
  };
}
