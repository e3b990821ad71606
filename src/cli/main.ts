// tuneforge command line. Subcommands are registered in COMMANDS; add new ones (bench…) there.
//   serve   the OpenAI-compatible API on HOST:PORT under /v1, with an embedded worker that trains
//   worker  a worker alone, against the same DATA_DIR (and DATABASE_URL)
//   demo    the whole path on the bundled tiny model: upload, train, compare (cli/demo.ts)
//   export  a model exported from DATA_DIR without a server (cli/export.ts)
//   files, jobs, models, chat   a client of any running tuneforge (cli/client/)
import { loadConfig, type Config } from '../config.ts';
import { startServer, webhookListener } from '../api/server.ts';
import { WebhookDispatcher } from '../integrations/webhooks.ts';
import { WandbLogger } from '../integrations/wandb.ts';
import { openStore } from '../store/index.ts';
import { createChildProcessTrainer } from '../scheduler/train-process.ts';
import { createTrainRunner, type TrainFunction } from '../scheduler/train-runner.ts';
import { Worker, type JobRunner } from '../scheduler/worker.ts';
import { CLIENT_COMMANDS } from './client/index.ts';

type Log = (msg: string, extra?: Record<string, unknown>) => void;
const jsonLog: Log = (msg, extra) => console.log(JSON.stringify({ msg, ...extra }));

/**
 * The runner that trains jobs: the engine's `train()` in a child process per job (so the event
 * loop stays free and a native crash or OOM fails only that job), or in this process with
 * TRAIN_IN_PROCESS=1.
 */
export function defaultJobRunner(config: Config, log: Log = jsonLog): JobRunner {
  const train: TrainFunction = config.training.inProcess
    ? async (spec, options) => (await import('../engine/index.ts')).train(spec, options)
    : createChildProcessTrainer({ nodeArgs: config.training.nodeArgs });
  return createTrainRunner(train, {
    modelsDir: config.modelsDir,
    checkpointEverySteps: config.training.checkpointEverySteps,
    memoryLimitBytes: config.training.memoryLimitMb * 1024 * 1024,
    recompute: config.training.recompute,
    wandb: new WandbLogger({ ...config.wandb, log }),
  });
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
    describe: 'serve the API and train jobs (HOST, PORT, DATA_DIR, DATABASE_URL, MODELS_DIR, API_KEYS, EMBEDDED_WORKER…)',
    run: async () => {
      const config = loadConfig();
      const runJob = config.training.embeddedWorker ? defaultJobRunner(config) : undefined;
      const server = await startServer(config, { runJob });
      server.app.log.info(
        { url: `${server.url}/v1`, dataDir: config.dataDir, modelsDir: config.modelsDir, worker: Boolean(server.worker) },
        runJob ? 'tuneforge serving with an embedded worker' : 'tuneforge serving without a worker (EMBEDDED_WORKER=0): `npm run worker` trains the jobs',
      );
      onSignals(() => server.close());
    },
  },
  worker: {
    describe: 'run a worker against DATA_DIR and DATABASE_URL (trains queued jobs)',
    run: async () => {
      const config = loadConfig();
      const runJob = defaultJobRunner(config);
      const store = await openStore(config);
      const webhooks = new WebhookDispatcher({ endpoints: config.webhooks, log: jsonLog });
      const worker = new Worker({
        store,
        runJob,
        dataDir: config.dataDir,
        leaseMs: config.queue.leaseMs,
        heartbeatMs: config.queue.heartbeatMs,
        pollMs: config.queue.pollMs,
        maxRunningPerOrg: config.limits.maxRunningJobsPerOrg,
      capacity: config.worker,
        log: jsonLog,
        onJobFinished: webhookListener(webhooks),
      });
      worker.start();
      console.log(JSON.stringify({ msg: 'worker started', id: worker.id, dataDir: config.dataDir, memoryBytes: config.worker.memoryBytes, cores: config.worker.cores }));
      onSignals(async () => {
        await worker.stop();
        await webhooks.close();
        await store.close();
      });
    },
  },
  demo: {
    describe: 'train the bundled tiny model on the pirate sample and compare it with the base model',
    run: async (args) => (await import('./demo.ts')).runDemo(args),
  },
  export: {
    describe: 'export a fine-tuned model or checkpoint: --model ft:… --format peft|safetensors|gguf --out PATH [--dtype]',
    run: async (args) => (await import('./export.ts')).runExportCommand(args),
  },
  // Clients of a running tuneforge (OPENAI_BASE_URL or --base-url), through the openai SDK.
  ...CLIENT_COMMANDS,
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

/** Runs `main` as a program: a failure prints its message and exits 1. bin/tuneforge.js calls this. */
export function runCli(argv: string[]): void {
  main(argv).catch((err) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  });
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith('src/cli/main.ts')) runCli(process.argv.slice(2));
