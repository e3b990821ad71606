// tuneforge command line. Subcommands are registered in COMMANDS; add new ones (demo, bench…) there.
//   serve   the OpenAI-compatible API on HOST:PORT under /v1 (+ an embedded worker when a trainer is set)
//   worker  a worker alone, against the same DATA_DIR
import { loadConfig, type Config } from '../config.ts';
import { startServer } from '../api/server.ts';
import { openStore } from '../store/index.ts';
import { Worker, type JobRunner } from '../scheduler/worker.ts';

/**
 * The runner that trains jobs. None yet: until the engine's `train()` is plugged in here
 * (`return createTrainRunner(train, { modelsDir: config.modelsDir })` from scheduler/train-runner.ts),
 * `serve` starts no worker and jobs wait in `queued`.
 */
export function defaultJobRunner(_config: Config): JobRunner | undefined {
  return undefined;
}

type Command = (args: string[]) => Promise<void>;

function onSignals(stop: () => Promise<void>) {
  let stopping = false;
  const handler = () => {
    if (stopping) process.exit(1);
    stopping = true;
    stop().then(() => process.exit(0), (err) => { console.error(err); process.exit(1); });
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
}

export const COMMANDS: Record<string, { describe: string; run: Command }> = {
  serve: {
    describe: 'serve the API (HOST, PORT, DATA_DIR, MODELS_DIR, API_KEYS, ADMIN_API_KEYS)',
    run: async () => {
      const config = loadConfig();
      const runJob = defaultJobRunner(config);
      const server = await startServer(config, { runJob });
      server.app.log.info(
        { url: `${server.url}/v1`, dataDir: config.dataDir, modelsDir: config.modelsDir, worker: Boolean(server.worker) },
        runJob ? 'tuneforge serving with an embedded worker' : 'tuneforge serving; no trainer configured, jobs stay queued',
      );
      onSignals(() => server.close());
    },
  },
  worker: {
    describe: 'run a worker against DATA_DIR (needs a trainer)',
    run: async () => {
      const config = loadConfig();
      const runJob = defaultJobRunner(config);
      if (!runJob) throw new Error('No trainer is configured in this build: a worker has nothing to run jobs with.');
      const store = await openStore(config.dataDir);
      const worker = new Worker({
        store,
        runJob,
        dataDir: config.dataDir,
        leaseMs: config.queue.leaseMs,
        heartbeatMs: config.queue.heartbeatMs,
        pollMs: config.queue.pollMs,
        maxRunningPerOrg: config.limits.maxRunningJobsPerOrg,
        log: (msg, extra) => console.log(JSON.stringify({ msg, ...extra })),
      });
      worker.start();
      console.log(JSON.stringify({ msg: 'worker started', id: worker.id, dataDir: config.dataDir }));
      onSignals(async () => {
        await worker.stop();
        await store.close();
      });
    },
  },
};

function usage(): string {
  return ['usage: tuneforge <command>', '', ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(8)} ${c.describe}`)].join('\n');
}

export async function main(argv: string[]): Promise<void> {
  const [name, ...args] = argv;
  const command = name ? COMMANDS[name] : undefined;
  if (!command) {
    console.error(usage());
    process.exitCode = name ? 2 : 0;
    return;
  }
  await command.run(args);
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith('src/cli/main.ts')) {
  main(process.argv.slice(2)).catch((err) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  });
}
