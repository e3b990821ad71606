// `tuneforge jobs create|list|get|events|checkpoints|follow|pause|resume|cancel`
import fs from 'node:fs';
import type OpenAI from 'openai';
import { followJob } from '../progress.ts';
import { green } from '../terminal.ts';
import { runSubcommands, type Command, type Invocation } from './command.ts';
import { uploadFile } from './files.ts';
import { printFields, printJson, printTable, timestamp, UsageError } from './output.ts';

type Job = OpenAI.FineTuning.FineTuningJob;
type Method = OpenAI.FineTuning.JobCreateParams['method'];

const METHODS = ['supervised', 'dpo', 'reinforcement'] as const;

/** A `--training-file` or `--validation-file` value: a local file is uploaded, a `file-…` value is an id. */
async function resolveFile(cli: Invocation, value: string): Promise<string> {
  if (fs.existsSync(value) || !/^file-[\w-]+$/.test(value)) {
    const file = await uploadFile(cli.client, value);
    if (!cli.json) console.log(`uploaded ${value} → ${file.id}`);
    return file.id;
  }
  return value;
}

/** A hyperparameter flag: a number or `auto`. */
function hyperparameter(cli: Invocation, name: string): number | 'auto' | undefined {
  return cli.string(name) === 'auto' ? 'auto' : cli.number(name);
}

function method(cli: Invocation): NonNullable<Method> {
  const type = cli.string('method') ?? 'supervised';
  if (!(METHODS as readonly string[]).includes(type)) throw new UsageError(`--method must be one of ${METHODS.join(', ')}`);
  if (cli.string('beta') !== undefined && type !== 'dpo') throw new UsageError('--beta applies to --method dpo only');
  if (cli.string('grader') !== undefined && type !== 'reinforcement') throw new UsageError('--grader applies to --method reinforcement only');
  const hyperparameters = Object.fromEntries(
    Object.entries({
      n_epochs: hyperparameter(cli, 'n-epochs'),
      batch_size: hyperparameter(cli, 'batch-size'),
      learning_rate_multiplier: hyperparameter(cli, 'learning-rate-multiplier'),
      beta: hyperparameter(cli, 'beta'),
    }).filter(([, v]) => v !== undefined),
  );
  if (type === 'dpo') return { type, dpo: { hyperparameters } };
  if (type === 'reinforcement') {
    const graderPath = cli.string('grader');
    const grader = graderPath === undefined ? undefined : JSON.parse(fs.readFileSync(graderPath, 'utf8'));
    return { type, reinforcement: { grader, hyperparameters } } as NonNullable<Method>;
  }
  return { type: 'supervised', supervised: { hyperparameters } };
}

/** Training-option flags (the create-job body's extension keys, as Together's CLI names them): flag → key. */
const NUMBER_OPTIONS: Record<string, string> = {
  'lora-r': 'lora_r',
  'lora-alpha': 'lora_alpha',
  'lora-dropout': 'lora_dropout',
  'warmup-ratio': 'warmup_ratio',
  'weight-decay': 'weight_decay',
  'max-grad-norm': 'max_grad_norm',
  'context-length': 'context_length',
  'n-checkpoints': 'n_checkpoints',
  'n-evals': 'n_evals',
  'early-stopping-patience': 'early_stopping_patience',
};

/** The training options the flags ask for; the server checks their values (a 400 names the key). */
function trainingOptions(cli: Invocation): Record<string, unknown> {
  const options: Record<string, unknown> = {};
  if (cli.flag('no-lora')) options.lora = false;
  for (const [flag, key] of Object.entries(NUMBER_OPTIONS)) {
    const value = cli.number(flag);
    if (value !== undefined) options[key] = value;
  }
  const modules = cli.string('lora-trainable-modules');
  if (modules !== undefined) options.lora_trainable_modules = modules;
  const onInputs = cli.string('train-on-inputs');
  if (onInputs !== undefined) {
    if (!['true', 'false', 'auto'].includes(onInputs)) throw new UsageError('--train-on-inputs must be true, false or auto');
    options.train_on_inputs = onInputs === 'auto' ? 'auto' : onInputs === 'true';
  }
  const scheduler = cli.string('lr-scheduler');
  const minLrRatio = cli.number('min-lr-ratio');
  if (minLrRatio !== undefined && scheduler === undefined) throw new UsageError('--min-lr-ratio needs --lr-scheduler');
  if (scheduler !== undefined) {
    options.lr_scheduler = { lr_scheduler_type: scheduler, ...(minLrRatio === undefined ? {} : { lr_scheduler_args: { min_lr_ratio: minLrRatio } }) };
  }
  return options;
}

/** Follows the job to its end: returns if it succeeded, throws (exit 1) with its error if not. */
async function followToEnd(client: OpenAI, jobId: string): Promise<void> {
  const { job } = await followJob(client, jobId);
  if (job.status === 'succeeded') {
    console.log(`${green('✓')} ${job.id} succeeded: ${job.fine_tuned_model}`);
    return;
  }
  const error = job.error?.message ? `: ${job.error.message}${job.error.code ? ` (code: ${job.error.code})` : ''}` : '';
  throw new Error(`job ${job.id} ${job.status}${error}`);
}

const printJob = (job: Job, json: boolean) => (json ? printJson(job) : printFields(job));

/** pause, resume and cancel: the job as it is afterwards. */
const action = (verb: 'pause' | 'resume' | 'cancel'): Command => ({
  usage: '<job-id>',
  describe: `${verb} a job`,
  run: async (cli) => {
    const job = await cli.client.fineTuning.jobs[verb](cli.argument(0, 'job-id'));
    if (cli.json) printJson(job);
    else console.log(`${job.id} ${job.status}`);
  },
});

export const JOBS: Record<string, Command> = {
  create: {
    usage: `--model <model> --training-file <path|file-id> [options]
  --validation-file <path|file-id>
  --method supervised|dpo|reinforcement   (default supervised)
  --n-epochs N, --batch-size N, --learning-rate-multiplier X   (each a number or auto)
  --beta X                                 DPO only
  --grader FILE.json                       reinforcement only: the grader object
  --suffix NAME, --seed N
  training options (README, "Training options"; the server's defaults where left out):
  --no-lora                                full fine-tuning instead of LoRA
  --lora-r N, --lora-alpha X, --lora-dropout X, --lora-trainable-modules q_proj,v_proj,…
  --train-on-inputs true|false|auto        prompt tokens in the loss (supervised)
  --warmup-ratio X, --lr-scheduler linear|cosine|constant [--min-lr-ratio X]
  --weight-decay X, --max-grad-norm X, --context-length N
  --n-checkpoints N, --n-evals N, --early-stopping-patience N
  --follow                                 then show progress until the job ends (as jobs follow)`,
    describe: 'create a fine-tuning job, uploading local files first',
    options: {
      model: { type: 'string' },
      'training-file': { type: 'string' },
      'validation-file': { type: 'string' },
      method: { type: 'string' },
      'n-epochs': { type: 'string' },
      'batch-size': { type: 'string' },
      'learning-rate-multiplier': { type: 'string' },
      beta: { type: 'string' },
      grader: { type: 'string' },
      suffix: { type: 'string' },
      seed: { type: 'string' },
      'no-lora': { type: 'boolean' },
      ...Object.fromEntries(Object.keys(NUMBER_OPTIONS).map((flag) => [flag, { type: 'string' as const }])),
      'lora-trainable-modules': { type: 'string' },
      'train-on-inputs': { type: 'string' },
      'lr-scheduler': { type: 'string' },
      'min-lr-ratio': { type: 'string' },
      follow: { type: 'boolean' },
    },
    run: async (cli) => {
      if (cli.json && cli.flag('follow')) throw new UsageError('--follow shows progress: use it without --json (then `jobs get --json`)');
      const model = cli.required('model');
      const jobMethod = method(cli);
      const options = trainingOptions(cli);
      const trainingFile = await resolveFile(cli, cli.required('training-file'));
      const validation = cli.string('validation-file');
      // Fields left undefined are not sent.
      const job = await cli.client.fineTuning.jobs.create({
        model,
        training_file: trainingFile,
        validation_file: validation === undefined ? undefined : await resolveFile(cli, validation),
        suffix: cli.string('suffix'),
        seed: cli.number('seed'),
        method: jobMethod,
        // The SDK sends keys its types do not know as given.
        ...options,
      } as OpenAI.FineTuning.JobCreateParams);
      if (cli.json) return printJson(job);
      console.log(`created ${job.id} (${job.model}, ${job.method?.type ?? 'supervised'}, ${job.status})`);
      if (cli.flag('follow')) await followToEnd(cli.client, job.id);
    },
  },
  list: {
    usage: '[--limit N] [--after JOB_ID]',
    describe: 'list jobs, newest first',
    options: { limit: { type: 'string' }, after: { type: 'string' } },
    run: async (cli) => {
      const page = await cli.client.fineTuning.jobs.list({ limit: cli.number('limit'), after: cli.string('after') });
      if (cli.json) return printJson(page.data);
      printTable(page.data, [
        ['ID', (j) => j.id],
        ['MODEL', (j) => j.model],
        ['STATUS', (j) => j.status],
        ['CREATED', (j) => timestamp(j.created_at)],
        ['FINE-TUNED MODEL', (j) => j.fine_tuned_model],
      ]);
    },
  },
  get: {
    usage: '<job-id>',
    describe: "show a job's details",
    run: async (cli) => printJob(await cli.client.fineTuning.jobs.retrieve(cli.argument(0, 'job-id')), cli.json),
  },
  events: {
    usage: '<job-id> [--limit N]',
    describe: "a job's latest events (default 100), oldest first",
    options: { limit: { type: 'string' } },
    run: async (cli) => {
      const page = await cli.client.fineTuning.jobs.listEvents(cli.argument(0, 'job-id'), { limit: cli.number('limit') ?? 100 });
      const events = [...page.data].reverse();
      if (cli.json) return printJson(events);
      printTable(events, [
        ['CREATED', (e) => timestamp(e.created_at)],
        ['LEVEL', (e) => e.level],
        ['MESSAGE', (e) => e.message],
      ]);
    },
  },
  checkpoints: {
    usage: '<job-id> [--limit N]',
    describe: "a job's checkpoints",
    options: { limit: { type: 'string' } },
    run: async (cli) => {
      const page = await cli.client.fineTuning.jobs.checkpoints.list(cli.argument(0, 'job-id'), { limit: cli.number('limit') });
      if (cli.json) return printJson(page.data);
      printTable(page.data, [
        ['STEP', (c) => c.step_number],
        ['TRAIN LOSS', (c) => c.metrics.train_loss?.toFixed(3)],
        ['VALID LOSS', (c) => (c.metrics.full_valid_loss ?? c.metrics.valid_loss)?.toFixed(3)],
        ['CREATED', (c) => timestamp(c.created_at)],
        ['MODEL', (c) => c.fine_tuned_model_checkpoint],
      ]);
    },
  },
  follow: {
    usage: '<job-id>',
    describe: 'show progress until the job ends; exit 0 if it succeeded, 1 if not',
    run: async (cli) => {
      if (cli.json) throw new UsageError('follow shows progress: use `jobs get --json` for the job as JSON');
      await followToEnd(cli.client, cli.argument(0, 'job-id'));
    },
  },
  pause: action('pause'),
  resume: action('resume'),
  cancel: action('cancel'),
};

export const runJobs = (args: string[]) => runSubcommands('jobs', JOBS, args);
