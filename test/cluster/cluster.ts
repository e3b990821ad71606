// A tuneforge cluster on one machine, for the multi-host test and bench:cluster: hosts in network
// namespaces (netns.ts), `tuneforge serve` (EMBEDDED_WORKER=0) and `tuneforge worker` processes
// started inside them at the hosts' addresses, one PostgreSQL schema of their own reached through a
// forwarder on the bridge, and the blob store they share: a fresh prefix in the bucket of the S3
// server TEST_S3_URL names (Ceph's radosgw: scripts/start-test-s3.sh), through a forwarder too, or a
// folder on this machine that every host uses.
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { FsBlobStore, type BlobStore } from '../../src/store/blobs.ts';
import { S3BlobStore } from '../../src/store/s3-blobs.ts';
import { testS3Location } from '../support/blob-stores.ts';
import { freshDatabase, type TestDatabase } from '../support/database.ts';
import { spawnCli } from '../e2e/support.ts';
import { createNetwork, type Host, type Network } from './netns.ts';

export const API_KEY = 'cluster-key';
/** An admin key of the same organization (/metrics). */
export const ADMIN_API_KEY = 'cluster-admin-key';
/** Every host has its own ports, so every API listens on the same one. */
const PORT = 8000;

export interface Cluster {
  network: Network;
  /** The database as seen from this (the root) namespace, for reading rows directly. */
  databaseUrl: string;
  /** The running processes by host name. */
  processes: Map<string, ChildProcess>;
  /** Starts `serve` or `worker` on host `name` (killing what ran there before is the caller's). */
  start(name: string, command: 'serve' | 'worker'): Promise<ChildProcess>;
  /** Where the API on host `name` listens (its routes under /v1, /health and /metrics beside). */
  origin(name: string): string;
  /** An SDK client of the API on host `name`. */
  client(name: string): OpenAI;
  /** The blob store the hosts share, as this namespace reaches it. */
  blobs: BlobStore;
  /** What the store keeps of a job: its folders (`checkpoints/step-N`, `start/…`) under jobs/<id>/. */
  storedFolders(jobId: string): Promise<string[]>;
  close(): Promise<void>;
}

/**
 * Hosts named `hosts`, a fresh schema on the PostgreSQL server `databaseServer`, blobs in S3
 * (`blobStore: 's3'`, TEST_S3_URL's server) or a shared folder, and `env` for every process (over
 * the API keys, the database and the blob store). Start processes with `start`.
 */
export async function createCluster(options: { hosts: string[]; databaseServer: string; blobStore: 's3' | 'fs'; env?: Record<string, string> }): Promise<Cluster> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tuneforge-cluster-'));
  let network: Network | undefined;
  let database: TestDatabase | undefined;
  let s3: S3BlobStore | undefined;
  const processes = new Map<string, ChildProcess>();
  const close = async () => {
    for (const child of processes.values()) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await network?.close();
    await database?.drop();
    if (s3) {
      for (const top of new Set((await s3.list('')).map((key) => key.split('/')[0]))) await s3.removePrefix(top);
      s3.close();
    }
    fs.rmSync(root, { recursive: true, force: true });
  };
  try {
    network = await createNetwork(options.hosts);
    database = await freshDatabase('postgres', options.databaseServer);
    const forwarded = new URL(database.url!);
    forwarded.port = String(await network.forward({ host: forwarded.hostname, port: Number(forwarded.port || 5432) }));
    forwarded.hostname = network.gateway;
    const env = { ...options.env, DATABASE_URL: forwarded.toString(), API_KEYS: `${API_KEY}:org-cluster`, ADMIN_API_KEYS: `${ADMIN_API_KEY}:org-cluster`, EMBEDDED_WORKER: '0' };

    // With S3 every process has a data folder of its own (scratch, blob cache), fresh at each start
    // as on a host that lost its disk; with the folder store they share one (its blobs live there).
    const sharedDataDir = path.join(root, 'shared-data');
    let blobs: BlobStore = new FsBlobStore(sharedDataDir);
    let blobEnv: Record<string, string> = {};
    if (options.blobStore === 's3') {
      const location = testS3Location();
      s3 = blobs = new S3BlobStore(location.blobStore, location.s3);
      const endpoint = new URL(location.s3.endpoint!);
      const port = await network.forward({ host: endpoint.hostname, port: Number(endpoint.port || 80) });
      blobEnv = { ...location.env, AWS_ENDPOINT_URL: `http://${network.gateway}:${port}` };
    }
    let starts = 0;
    const dataDir = (host: Host) => (s3 ? path.join(root, `${host.name}.${++starts}`) : sharedDataDir);

    const origin = (name: string) => `http://${network!.host(name).address}:${PORT}`;
    return {
      network,
      databaseUrl: database.url!,
      processes,
      async start(name, command) {
        const host = network!.host(name);
        const started = await spawnCli(command, { ...env, ...blobEnv, DATA_DIR: dataDir(host), HOST: host.address, PORT: String(PORT) }, { launcher: network!.launcher(host), startTimeoutMs: 240_000 });
        processes.set(name, started.child);
        return started.child;
      },
      origin,
      blobs,
      client: (name) => new OpenAI({ apiKey: API_KEY, baseURL: `${origin(name)}/v1`, maxRetries: 0, timeout: 30_000 }),
      storedFolders: async (jobId) => [...new Set((await blobs.list(`jobs/${jobId}`)).map((key) => key.split('/').slice(2, 4).join('/')))].sort(),
      close,
    };
  } catch (error) {
    await close();
    throw error;
  }
}
