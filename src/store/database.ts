// Opens the SQL database and brings its schema up to date: PostgreSQL when DATABASE_URL names one,
// else SQLite (better-sqlite3) under DATA_DIR. Callers see one Kysely API either way.
import fs from 'node:fs';
import path from 'node:path';
import SQLite from 'better-sqlite3';
import { Kysely, Migrator, PostgresDialect, sql, SqliteDialect, type SqliteDatabase, type SqliteStatement } from 'kysely';
import pg from 'pg';
import { migrationProvider, type SqlDialectName } from './migrations.ts';
import type { Database } from './schema.ts';
import type { S3Settings } from './s3-blobs.ts';

export type Db = Kysely<Database>;

export interface OpenedDatabase {
  db: Db;
  dialect: SqlDialectName;
  changeStamp: ChangeStamp;
}

/**
 * A value that differs from an earlier one whenever a row may have changed since: a read made after
 * a stamp still shows the rows as they are while the stamp stays the same. Null where the database
 * offers no such value (PostgreSQL).
 */
export type ChangeStamp = () => string | null;

/**
 * SQLite's: `PRAGMA data_version` changes when another connection (the worker's process) commits,
 * and `total_changes()` counts this connection's own writes; both only grow. A statement still
 * iterating on the connection makes others throw: then no stamp.
 */
function sqliteChangeStamp(sqlite: SQLite.Database): ChangeStamp {
  const dataVersion = sqlite.prepare('PRAGMA data_version').pluck();
  const ownChanges = sqlite.prepare('SELECT total_changes()').pluck();
  return () => {
    try {
      return `${dataVersion.get()} ${ownChanges.get()}`;
    } catch {
      return null;
    }
  };
}

/** Where the store keeps its data: under `dataDir` unless `databaseUrl` (rows) or `blobStore` (blobs) say otherwise. */
export interface StoreLocation {
  dataDir: string;
  /** `postgres://…` or `postgresql://…`; empty or absent: SQLite in `dataDir`. */
  databaseUrl?: string | null;
  /** `s3://bucket/prefix`; empty or absent: `dataDir/blobs`. */
  blobStore?: string | null;
  /** How to reach `blobStore`'s bucket (default: AWS itself, the SDK's credentials). */
  s3?: S3Settings;
  /** Local copies of blobs (default: `dataDir/cache`, 20 GiB). */
  blobCache?: { dir: string; maxBytes: number };
}

const INT8_OID = 20;

export async function openDatabase(location: StoreLocation): Promise<OpenedDatabase> {
  const { dataDir, databaseUrl } = location;
  if (databaseUrl) {
    if (!/^postgres(ql)?:\/\//.test(databaseUrl)) throw new Error(`DATABASE_URL must start with postgres:// or postgresql://`);
    const pool = new pg.Pool({
      connectionString: databaseUrl,
      // bigint columns hold Unix seconds, byte counts and seq numbers, all well inside 2^53: read
      // them as numbers (pg's default is strings), as SQLite does.
      types: { getTypeParser: ((oid: number, format?: 'text' | 'binary') => (oid === INT8_OID ? Number : pg.types.getTypeParser(oid, format))) as typeof pg.types.getTypeParser },
    });
    // An idle connection the server dropped is replaced at the next checkout; without a listener
    // its 'error' event would end the process. Queries in flight report their own errors.
    pool.on('error', () => {});
    const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
    await migrate(db, 'postgres', dataDir);
    return { db, dialect: 'postgres', changeStamp: () => null };
  }
  fs.mkdirSync(dataDir, { recursive: true });
  const sqlite = new SQLite(path.join(dataDir, 'tuneforge.sqlite'));
  // WAL lets a separate worker process read while the server writes; busy_timeout waits for locks.
  sqlite.pragma('journal_mode = WAL');
  sqlite.pragma('busy_timeout = 5000');
  sqlite.pragma('synchronous = NORMAL');
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: sqliteForKysely(sqlite) }) });
  await migrate(db, 'sqlite', dataDir);
  return { db, dialect: 'sqlite', changeStamp: sqliteChangeStamp(sqlite) };
}

const STATEMENT_CACHE_SIZE = 256;

/**
 * better-sqlite3 as Kysely's SQLite driver uses it, made cheaper per query: prepared statements are
 * kept by SQL text (Kysely prepares every query it runs, and preparing costs more than a lookup by
 * key; the oldest is dropped past STATEMENT_CACHE_SIZE), and rows are read as arrays and built into
 * objects by a function made for the statement's columns (half the cost of better-sqlite3's own row
 * objects, which was most of listing 20 jobs).
 */
function sqliteForKysely(sqlite: SQLite.Database): SqliteDatabase {
  const statements = new Map<string, SqliteStatement>();
  return {
    close: () => sqlite.close(),
    prepare(sql) {
      let statement = statements.get(sql);
      if (!statement) {
        statement = rowObjectStatement(sqlite.prepare(sql));
        if (statements.size >= STATEMENT_CACHE_SIZE) statements.delete(statements.keys().next().value!);
        statements.set(sql, statement);
      }
      return statement;
    },
  };
}

function rowObjectStatement(statement: SQLite.Statement): SqliteStatement {
  if (!statement.reader) return statement;
  statement.raw(true);
  const names = statement.columns().map((column) => column.name);
  // An object literal with the columns as keys, as better-sqlite3's rows (a later duplicate name wins).
  const toObject = new Function('row', `return { ${names.map((name, i) => `${JSON.stringify(name)}: row[${i}]`).join(', ')} };`) as (row: unknown[]) => unknown;
  return {
    reader: true,
    all: (parameters) => (statement.all(parameters) as unknown[][]).map(toObject),
    run: (parameters) => statement.run(parameters),
    *iterate(parameters) {
      for (const row of statement.iterate(parameters) as IterableIterator<unknown[]>) yield toObject(row);
    },
  };
}

/** Runs `fn` in a transaction, or within the caller's when `db` already is one (Kysely does not nest them). */
export function inTransaction<T>(db: Db, fn: (tx: Db) => Promise<T>): Promise<T> {
  return db.isTransaction ? fn(db) : db.transaction().execute(fn);
}

/** `dataDir`: the host's DATA_DIR (migrations that move its files: 0006). */
export async function migrate(db: Db, dialect: SqlDialectName, dataDir: string | null = null): Promise<void> {
  // PostgreSQL: the migration tables of the schema in use. Left unnamed, Kysely looks for them in every
  // schema of the database and takes another schema's (another install's, a test's) for these.
  const migrationTableSchema = dialect === 'postgres' ? (await sql<{ schema: string }>`select current_schema() as schema`.execute(db)).rows[0]?.schema : undefined;
  const migrator = new Migrator({ db, provider: migrationProvider(dialect, dataDir), ...(migrationTableSchema ? { migrationTableSchema } : {}) });
  const { error, results } = await migrator.migrateToLatest();
  if (error) {
    const failed = results?.find((r) => r.status === 'Error');
    // No failed migration: the database could not be reached or locked (a wrong DATABASE_URL, say).
    throw new Error(failed ? `Database migration ${failed.migrationName} failed: ${String(error)}` : `Could not open the database: ${String(error)}`);
  }
}
