// A tuneforge cluster on one machine, for the multi-host test and bench:cluster: hosts in network
// namespaces (netns.ts), `tuneforge serve` (EMBEDDED_WORKER=0) and `tuneforge worker` processes
// started inside them at the hosts' addresses, one PostgreSQL schema of their own reached through a
// forwarder on the bridge, and the blob store they share.
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { freshDatabase, type TestDatabase } from '../support/database.ts';
import { spawnCli } from '../e2e/support.ts';
import { createNetwork, type Host, type Network } from './netns.ts';

export const API_KEY = 'cluster-key';
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
  /** The API's base URL on host `name`. */
  url(name: string): string;
  /** An SDK client of the API on host `name`. */
  client(name: string): OpenAI;
  /** The checkpoint folders stored for a job. */
  storedCheckpoints(jobId: string): string[];
  close(): Promise<void>;
}

/**
 * Hosts named `hosts`, a fresh schema on the PostgreSQL server `databaseServer`, and `env` for
 * every process (over the API key and the database). Start processes with `start`.
 */
export async function createCluster(options: { hosts: string[]; databaseServer: string; env?: Record<string, string> }): Promise<Cluster> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tuneforge-cluster-'));
  let network: Network | undefined;
  let database: TestDatabase | undefined;
  const processes = new Map<string, ChildProcess>();
  const close = async () => {
    for (const child of processes.values()) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await network?.close();
    await database?.drop();
    fs.rmSync(root, { recursive: true, force: true });
  };
  try {
    network = await createNetwork(options.hosts);
    database = await freshDatabase('postgres', options.databaseServer);
    const forwarded = new URL(database.url!);
    forwarded.port = String(await network.forward({ host: forwarded.hostname, port: Number(forwarded.port || 5432) }));
    forwarded.hostname = network.gateway;
    const env = { ...options.env, DATABASE_URL: forwarded.toString(), API_KEYS: `${API_KEY}:org-cluster`, EMBEDDED_WORKER: '0' };

    // Until blobs live in an object store, the hosts share one data folder.
    const sharedDataDir = path.join(root, 'shared-data');
    const storage = (_host: Host) => ({ DATA_DIR: sharedDataDir });

    const url = (name: string) => `http://${network!.host(name).address}:${PORT}/v1`;
    return {
      network,
      databaseUrl: database.url!,
      processes,
      async start(name, command) {
        const host = network!.host(name);
        const started = await spawnCli(command, { ...env, ...storage(host), HOST: host.address, PORT: String(PORT) }, { launcher: network!.launcher(host) });
        processes.set(name, started.child);
        return started.child;
      },
      url,
      client: (name) => new OpenAI({ apiKey: API_KEY, baseURL: url(name), maxRetries: 0, timeout: 30_000 }),
      storedCheckpoints: (jobId) => fs.readdirSync(path.join(sharedDataDir, 'jobs', jobId, 'checkpoints')).sort(),
      close,
    };
  } catch (error) {
    await close();
    throw error;
  }
}
