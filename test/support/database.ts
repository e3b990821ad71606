// The SQL backends a store test runs against: SQLite always, PostgreSQL when TEST_DATABASE_URL
// names a server (.ci/run starts one with scripts/start-test-postgres.sh). Each PostgreSQL store
// gets a schema of its own, so tests never see each other's rows.
import crypto from 'node:crypto';
import { describe } from 'node:test';
import pg from 'pg';

export type SqlBackend = 'sqlite' | 'postgres';
const SQL_BACKENDS: readonly SqlBackend[] = ['sqlite', 'postgres'];

const serverUrl = process.env.TEST_DATABASE_URL || null;

/** A reason when `backend` cannot run here, else false. */
const skipUnless = (backend: SqlBackend): string | false =>
  backend === 'postgres' && !serverUrl ? 'TEST_DATABASE_URL is not set (scripts/start-test-postgres.sh prints one)' : false;

/** `describe(title (backend), body)` once per backend, skipped where that backend cannot run. */
export function describeOnEachBackend(title: string, body: (backend: SqlBackend) => void): void {
  for (const backend of SQL_BACKENDS) describe(`${title} (${backend})`, { skip: skipUnless(backend) }, () => body(backend));
}

export interface TestDatabase {
  /** DATABASE_URL for the store: null for SQLite (a file under DATA_DIR). */
  url: string | null;
  drop(): Promise<void>;
}

/**
 * An empty database for one store: for PostgreSQL, a fresh schema that the URL selects, on
 * TEST_DATABASE_URL's server unless `server` names another (benchmarks pass their DATABASE_URL).
 */
export async function freshDatabase(backend: SqlBackend, server = serverUrl): Promise<TestDatabase> {
  if (backend === 'sqlite') return { url: null, drop: async () => {} };
  if (!server) throw new Error(skipUnless(backend) as string);
  const schema = `test_${crypto.randomBytes(6).toString('hex')}`;
  await withClient(server, (c) => c.query(`CREATE SCHEMA ${schema}`));
  const url = new URL(server);
  url.searchParams.set('options', `-c search_path=${schema}`);
  return {
    url: url.toString(),
    drop: () => withClient(server, (c) => c.query(`DROP SCHEMA ${schema} CASCADE`)).then(() => {}),
  };
}

async function withClient<T>(server: string, use: (client: pg.Client) => Promise<T>): Promise<T> {
  // Deadlines: a server that does not answer fails the test instead of hanging it.
  const client = new pg.Client({ connectionString: server, connectionTimeoutMillis: 10_000, query_timeout: 60_000 });
  await client.connect().catch((error: Error) => {
    throw new Error(`PostgreSQL at ${new URL(server).host} did not accept a connection (waiting at most 10 s): ${error.message}`);
  });
  try {
    return await use(client);
  } finally {
    await client.end();
  }
}
