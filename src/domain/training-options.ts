// Per-job training options: tuneforge's extension of the create-job body (keys the official SDK sends
// as given, e.g. `client.fineTuning.jobs.create({ ...params, lora_r: 16 } as JobCreateParams)`),
// named as Together AI's fine-tuning API names them where it has them. Each key's shape and range is
// TRAINING_OPTIONS_SCHEMA's (the route's and TRAINING_DEFAULTS's); the rules across keys, the
// method, the validation file and the model are resolveTrainingOptions's. A job stores and shows the
// resolved options, defaults filled in: the server's (TRAINING_DEFAULTS), then the built-in ones.
import { invalidParam } from './errors.ts';
import type { MethodType } from './hyperparameters.ts';

export type LrSchedulerType = 'linear' | 'cosine' | 'constant';

/** The options of a job, resolved: what the job object shows as `training_options`. */
export interface TrainingOptions {
  /** LoRA adapters (true) or full fine-tuning (false). */
  lora: boolean;
  /** LoRA only (null for full fine-tuning): rank, alpha, dropout and target modules. */
  lora_r: number | null;
  lora_alpha: number | null;
  lora_dropout: number | null;
  /** "all-linear" or comma-separated module names ("q_proj,v_proj"). */
  lora_trainable_modules: string | null;
  /** Supervised: the prompt's tokens are targets too. */
  train_on_inputs: boolean;
  warmup_ratio: number;
  lr_scheduler: { lr_scheduler_type: LrSchedulerType; lr_scheduler_args: { min_lr_ratio: number } };
  weight_decay: number;
  /** Global gradient-norm clip; 0: none. */
  max_grad_norm: number;
  /**
   * Longest example in tokens: longer ones are truncated. null: the model's max_position_embeddings,
   * as far as the worker's memory allows (the engine decides when it trains).
   */
  context_length: number | null;
  /** Checkpoints written (spread evenly, the last one the model) and kept; null: one per epoch, the newest 3 kept. */
  n_checkpoints: number | null;
  /** Evaluations on the whole validation set, spread evenly; null: the method's own cadence. */
  n_evals: number | null;
  /** Stop when the validation loss has not improved for this many evaluations; null: never. */
  early_stopping_patience: number | null;
}

/** What a request (or TRAINING_DEFAULTS) may set: any key, null meaning "the default". */
export type TrainingOptionsRequest = {
  [K in keyof TrainingOptions]?: (K extends 'train_on_inputs' ? boolean | 'auto' : K extends 'lr_scheduler' ? LrSchedulerRequest : TrainingOptions[K]) | null;
};
interface LrSchedulerRequest {
  lr_scheduler_type: LrSchedulerType;
  lr_scheduler_args?: { min_lr_ratio?: number | null } | null;
}

/** LoRA target modules of the engine's decoders (PEFT's names). */
export const LORA_MODULES = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
/** Phi-3's fused projections: names a job may use on a model that has them (q_proj etc. select them too). */
export const FUSED_LORA_MODULES = ['qkv_proj', 'gate_up_proj'] as const;

/** Built-in defaults (README's table); the server's TRAINING_DEFAULTS override them. */
export const BUILT_IN_TRAINING_OPTIONS = {
  lora: true,
  // LoRA on every projection of each block (attention and MLP), as QLoRA found best for quality.
  lora_r: 8,
  lora_alpha: 16,
  lora_dropout: 0,
  lora_trainable_modules: 'all-linear',
  train_on_inputs: false,
  warmup_ratio: 0.05,
  lr_scheduler: { lr_scheduler_type: 'linear', lr_scheduler_args: { min_lr_ratio: 0 } },
  weight_decay: 0,
  max_grad_norm: 1,
  n_checkpoints: null,
  n_evals: null,
  early_stopping_patience: null,
} satisfies Omit<TrainingOptions, 'context_length'>;

const refuse = (param: string, message: string) => invalidParam(param, message, 'invalid_value');

const nullable = (schema: Record<string, unknown>) => ({ ...schema, type: [schema.type, 'null'] });

/** Each option's shape and range, as JSON Schema properties of the create-job body. */
export const TRAINING_OPTIONS_SCHEMA: Record<keyof TrainingOptions, Record<string, unknown>> = {
  lora: nullable({ type: 'boolean' }),
  lora_r: nullable({ type: 'integer', minimum: 1, maximum: 256 }),
  lora_alpha: nullable({ type: 'number', exclusiveMinimum: 0, maximum: 1024 }),
  lora_dropout: nullable({ type: 'number', minimum: 0, exclusiveMaximum: 1 }),
  lora_trainable_modules: nullable({ type: 'string', minLength: 1 }),
  train_on_inputs: { enum: [true, false, 'auto', null] },
  warmup_ratio: nullable({ type: 'number', minimum: 0, maximum: 1 }),
  lr_scheduler: {
    type: ['object', 'null'],
    properties: {
      lr_scheduler_type: { type: 'string', enum: ['linear', 'cosine', 'constant'] },
      lr_scheduler_args: {
        type: ['object', 'null'],
        properties: { min_lr_ratio: nullable({ type: 'number', minimum: 0, maximum: 1 }) },
        additionalProperties: false,
      },
    },
    required: ['lr_scheduler_type'],
    additionalProperties: false,
  },
  weight_decay: nullable({ type: 'number', minimum: 0 }),
  max_grad_norm: nullable({ type: 'number', minimum: 0 }),
  context_length: nullable({ type: 'integer', minimum: 32 }),
  n_checkpoints: nullable({ type: 'integer', minimum: 1, maximum: 1000 }),
  n_evals: nullable({ type: 'integer', minimum: 1, maximum: 1000 }),
  early_stopping_patience: nullable({ type: 'integer', minimum: 1 }),
};

export const TRAINING_OPTION_NAMES = Object.keys(TRAINING_OPTIONS_SCHEMA) as (keyof TrainingOptions)[];
const LORA_SETTINGS = ['lora_r', 'lora_alpha', 'lora_dropout', 'lora_trainable_modules'] as const;

/** The training options a request body sets (its other keys are OpenAI's). */
export function trainingOptionsIn(body: TrainingOptionsRequest): TrainingOptionsRequest {
  return Object.fromEntries(TRAINING_OPTION_NAMES.filter((key) => body[key] !== undefined && body[key] !== null).map((key) => [key, body[key]]));
}

export interface TrainingOptionsContext {
  method: MethodType;
  hasValidationFile: boolean;
  /** The model's max_position_embeddings. */
  modelContext: number;
  /** The model fuses q/k/v and gate/up into one projection each (Phi-3). */
  fusedProjections: boolean;
}

/**
 * A job's options: each from the request, else the server's defaults, else the built-in ones, with
 * the rules across them (a 400 naming the request's key that breaks one).
 */
export function resolveTrainingOptions(given: TrainingOptionsRequest, serverDefaults: TrainingOptionsRequest, job: TrainingOptionsContext): TrainingOptions {
  const pick = <K extends keyof typeof BUILT_IN_TRAINING_OPTIONS>(key: K) =>
    (given[key] ?? serverDefaults[key] ?? BUILT_IN_TRAINING_OPTIONS[key]) as NonNullable<TrainingOptionsRequest[K]> | (typeof BUILT_IN_TRAINING_OPTIONS)[K];

  const lora = pick('lora') as boolean;
  if (!lora) {
    const loraKey = LORA_SETTINGS.find((k) => given[k] !== undefined && given[k] !== null);
    if (loraKey) {
      const why = given.lora === false ? "'lora' is false" : "the server's default 'lora' is false";
      throw refuse(loraKey, `'${loraKey}' applies to LoRA fine-tuning only, and this job is a full fine-tune (${why}).`);
    }
  }
  const modules = lora ? (pick('lora_trainable_modules') as string) : null;
  if (modules !== null) checkModules(modules, job.fusedProjections);

  if (given.train_on_inputs === true && job.method !== 'supervised') {
    throw refuse('train_on_inputs', `'train_on_inputs' applies to supervised jobs only; this is a ${job.method} job.`);
  }
  // "auto": off for chat and prompt/completion data, as Together's; the server's default applies to supervised jobs.
  const trainOnInputs = (given.train_on_inputs ?? (job.method === 'supervised' ? serverDefaults.train_on_inputs : null)) === true;

  for (const key of ['n_evals', 'early_stopping_patience'] as const) {
    if (given[key] === undefined || given[key] === null) continue;
    if (!job.hasValidationFile) throw refuse(key, `'${key}' needs a validation file: set 'validation_file'.`);
    if (job.method === 'reinforcement') {
      throw refuse(key, `'${key}' does not apply to reinforcement jobs: they evaluate every 'method.reinforcement.hyperparameters.eval_interval' steps, on rewards.`);
    }
  }

  const requested = given.context_length ?? null;
  if (requested !== null && requested > job.modelContext) {
    throw refuse('context_length', `'context_length' ${requested} is more than the model's ${job.modelContext} positions (max_position_embeddings).`);
  }

  const scheduler = (given.lr_scheduler ?? serverDefaults.lr_scheduler ?? BUILT_IN_TRAINING_OPTIONS.lr_scheduler) as LrSchedulerRequest;
  // The server's evaluation defaults apply where they can: with a validation file, on a loss.
  const evaluates = job.hasValidationFile && job.method !== 'reinforcement';
  const evaluation = (key: 'n_evals' | 'early_stopping_patience') => given[key] ?? (evaluates ? serverDefaults[key] : null) ?? null;
  return {
    lora,
    lora_r: lora ? (pick('lora_r') as number) : null,
    lora_alpha: lora ? (pick('lora_alpha') as number) : null,
    lora_dropout: lora ? (pick('lora_dropout') as number) : null,
    lora_trainable_modules: modules,
    train_on_inputs: trainOnInputs,
    warmup_ratio: pick('warmup_ratio') as number,
    lr_scheduler: {
      lr_scheduler_type: scheduler.lr_scheduler_type,
      lr_scheduler_args: { min_lr_ratio: scheduler.lr_scheduler_args?.min_lr_ratio ?? 0 },
    },
    weight_decay: pick('weight_decay') as number,
    max_grad_norm: pick('max_grad_norm') as number,
    context_length: requested ?? (serverDefaults.context_length ? Math.min(job.modelContext, serverDefaults.context_length) : null),
    n_checkpoints: pick('n_checkpoints') as number | null,
    n_evals: evaluation('n_evals'),
    early_stopping_patience: evaluation('early_stopping_patience'),
  };
}

/** "all-linear" or comma-separated names of LORA_MODULES (and FUSED_LORA_MODULES on a model that has them). */
function checkModules(value: string, fusedProjections: boolean): void {
  if (value === 'all-linear') return;
  const known: readonly string[] = fusedProjections ? [...LORA_MODULES, ...FUSED_LORA_MODULES] : LORA_MODULES;
  const names = value.split(',').map((s) => s.trim());
  const unknown = names.find((n) => !known.includes(n));
  if (unknown !== undefined) {
    throw refuse(
      'lora_trainable_modules',
      `Unknown LoRA module '${unknown}' in 'lora_trainable_modules' for this model: expected 'all-linear' or a comma-separated list of ${known.join(', ')}.`,
    );
  }
}

/** The module names of a resolved `lora_trainable_modules`. */
export function loraModuleNames(value: string): string[] {
  return value === 'all-linear' ? [...LORA_MODULES] : value.split(',').map((s) => s.trim());
}
