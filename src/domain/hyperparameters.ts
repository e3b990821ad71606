// Fine-tuning method and hyperparameters of a create-job request: the rules across its fields (which
// method's settings may be given, the deprecated top-level hyperparameters against the method's), and
// the rules that turn every "auto" into a number once the training file is known. Each field's own
// shape and range is the route schema's (OpenAI's spec, api/fine-tuning/jobs.ts).
import { randomInt } from 'node:crypto';
import { invalidParam } from './errors.ts';

export type MethodType = 'supervised' | 'dpo' | 'reinforcement';
export const METHOD_TYPES: readonly MethodType[] = ['supervised', 'dpo', 'reinforcement'];

export type Auto = 'auto';
export type ReasoningEffort = 'default' | 'low' | 'medium' | 'high';

export interface SupervisedHyperparameters {
  batch_size: number | Auto;
  learning_rate_multiplier: number | Auto;
  n_epochs: number | Auto;
}
export interface DpoHyperparameters extends SupervisedHyperparameters {
  beta: number | Auto;
}
export interface ReinforcementHyperparameters extends SupervisedHyperparameters {
  compute_multiplier: number | Auto;
  eval_interval: number | Auto;
  eval_samples: number | Auto;
  reasoning_effort: ReasoningEffort | Auto;
}

/** A create-job request's method, normalised: every hyperparameter present, as a value or "auto". */
export type ParsedJobMethod =
  | { type: 'supervised'; hyperparameters: SupervisedHyperparameters }
  | { type: 'dpo'; hyperparameters: DpoHyperparameters }
  | { type: 'reinforcement'; hyperparameters: ReinforcementHyperparameters; grader: unknown };

type NoAuto<T> = { [K in keyof T]: Exclude<T[K], Auto> };
export type ResolvedSupervisedHyperparameters = NoAuto<SupervisedHyperparameters>;
export type ResolvedDpoHyperparameters = NoAuto<DpoHyperparameters>;
export type ResolvedReinforcementHyperparameters = NoAuto<ReinforcementHyperparameters>;
export type ResolvedJobHyperparameters =
  | ResolvedSupervisedHyperparameters
  | ResolvedDpoHyperparameters
  | ResolvedReinforcementHyperparameters;

// ---------------------------------------------------------------------------------------------
// Parsing a request's method (already checked against the route schema).

type Settings = Record<string, unknown>;

/** The hyperparameters each method takes. */
const HYPERPARAMETER_NAMES: Record<MethodType, readonly string[]> = {
  supervised: ['batch_size', 'learning_rate_multiplier', 'n_epochs'],
  dpo: ['batch_size', 'learning_rate_multiplier', 'n_epochs', 'beta'],
  reinforcement: ['batch_size', 'learning_rate_multiplier', 'n_epochs', 'compute_multiplier', 'eval_interval', 'eval_samples', 'reasoning_effort'],
};

/** Every hyperparameter of `type`, absent or null ones as "auto". */
function withAutos(given: Settings | null | undefined, type: MethodType): Record<string, number | string> {
  const out: Record<string, number | string> = {};
  for (const key of HYPERPARAMETER_NAMES[type]) out[key] = (given?.[key] as number | string | null | undefined) ?? 'auto';
  // The job object's schema has no "auto" for reasoning_effort, and its default needs no dataset.
  if (out.reasoning_effort === 'auto') out.reasoning_effort = AUTO_REASONING_EFFORT;
  return out;
}

/**
 * The method of a create-job request, from `method` or from the deprecated top-level `hyperparameters`
 * (which means a supervised job). When both are given, every value set at the top level must equal the
 * method's (where an absent one counts as "auto"); otherwise the request is ambiguous and rejected.
 * Only the settings of `method.type` may be given, and a reinforcement job needs its grader.
 */
export function parseJobMethod(body: { method?: object | null; hyperparameters?: object | null }): ParsedJobMethod {
  const method = body.method as Settings | null | undefined;
  const topLevel = body.hyperparameters as Settings | null | undefined;
  if (method === undefined || method === null) {
    return { type: 'supervised', hyperparameters: withAutos(topLevel, 'supervised') as unknown as SupervisedHyperparameters };
  }
  const type = method.type as MethodType;
  for (const other of METHOD_TYPES) {
    if (other !== type && method[other] !== undefined) {
      throw invalidParam(`method.${other}`, `'method.${other}' cannot be set when 'method.type' is '${type}'.`);
    }
  }
  const settings = (method[type] ?? {}) as Settings;
  const settingsParam = `method.${type}`;
  const hyperparameters = withAutos(settings.hyperparameters as Settings | undefined, type);

  // Only the keys the caller actually set must agree; `hyperparameters: {}` says nothing.
  for (const [key, value] of Object.entries(topLevel ?? {})) {
    if (value === undefined || value === null || hyperparameters[key] === value) continue;
    throw invalidParam(
      'hyperparameters',
      `'hyperparameters.${key}' (${JSON.stringify(value)}) conflicts with '${settingsParam}.hyperparameters.${key}' (${JSON.stringify(hyperparameters[key])}); ` +
        "'hyperparameters' is deprecated, pass hyperparameters under 'method' only.",
    );
  }

  switch (type) {
    case 'supervised':
      return { type, hyperparameters: hyperparameters as unknown as SupervisedHyperparameters };
    case 'dpo':
      return { type, hyperparameters: hyperparameters as unknown as DpoHyperparameters };
    case 'reinforcement':
      if (settings.grader === undefined || settings.grader === null) {
        throw invalidParam(`${settingsParam}.grader`, `Missing required parameter: '${settingsParam}.grader'.`, 'missing_required_parameter');
      }
      return { type, hyperparameters: hyperparameters as unknown as ReinforcementHyperparameters, grader: settings.grader };
  }
}

// ---------------------------------------------------------------------------------------------
// "auto" rules (also written up in docs/hyperparameters.md).

/**
 * OpenAI cookbook rule: aim at 3 epochs, but see at least 100 and at most 25,000 examples in total:
 * N*3 < 100 → min(25, ⌊100/N⌋); N*3 > 25,000 → max(1, ⌊25,000/N⌋).
 */
export function autoEpochs(nExamples: number): number {
  const n = Math.max(1, nExamples);
  if (n * 3 < 100) return Math.min(25, Math.floor(100 / n));
  if (n * 3 > 25_000) return Math.max(1, Math.floor(25_000 / n));
  return 3;
}

/**
 * OpenAI's published (legacy) rule: about 0.2% of the training examples, at least 1, at most 256.
 * Small datasets therefore train with batch 1, which is also what OpenAI's current models show.
 */
export function autoBatchSize(nExamples: number): number {
  return Math.min(256, Math.max(1, Math.round(nExamples * 0.002)));
}

/**
 * 1.8 at batch size 1 (what OpenAI's current models show), scaled by √batch_size: the square-root
 * scaling rule for Adam-style optimizers keeps the update noise about the same as batches grow.
 * Rounded to 2 decimals. The engine multiplies its own base learning rate by this.
 */
export function autoLearningRateMultiplier(batchSize: number): number {
  return Math.round(1.8 * Math.sqrt(batchSize) * 100) / 100;
}

export const AUTO_BETA = 0.1;
export const AUTO_COMPUTE_MULTIPLIER = 1;
export const AUTO_EVAL_SAMPLES = 1;
export const AUTO_REASONING_EFFORT: ReasoningEffort = 'default';

/** Evaluate about 4 times per epoch: every ⌈steps per epoch / 4⌉ steps. */
export function autoEvalInterval(nExamples: number, batchSize: number): number {
  const stepsPerEpoch = Math.max(1, Math.ceil(nExamples / batchSize));
  return Math.max(1, Math.ceil(stepsPerEpoch / 4));
}

const orAuto = <T>(value: T | Auto, auto: () => T): T => (value === 'auto' ? auto() : value);

/**
 * Every "auto" of a parsed method replaced by a number, from the validated training file's size.
 * `nTokens` is accepted so that token-aware rules can be added without changing callers; the current
 * rules depend on the example count only.
 */
export function resolveHyperparameters(
  parsed: ParsedJobMethod,
  dataset: { nExamples: number; nTokens: number },
): ResolvedJobHyperparameters {
  const { nExamples } = dataset;
  const h = parsed.hyperparameters;
  const batch_size = orAuto(h.batch_size, () => autoBatchSize(nExamples));
  const common: ResolvedSupervisedHyperparameters = {
    batch_size,
    learning_rate_multiplier: orAuto(h.learning_rate_multiplier, () => autoLearningRateMultiplier(batch_size)),
    n_epochs: orAuto(h.n_epochs, () => autoEpochs(nExamples)),
  };
  switch (parsed.type) {
    case 'supervised':
      return common;
    case 'dpo':
      return { ...common, beta: orAuto(parsed.hyperparameters.beta, () => AUTO_BETA) };
    case 'reinforcement': {
      const r = parsed.hyperparameters;
      return {
        ...common,
        compute_multiplier: orAuto(r.compute_multiplier, () => AUTO_COMPUTE_MULTIPLIER),
        eval_interval: orAuto(r.eval_interval, () => autoEvalInterval(nExamples, batch_size)),
        eval_samples: orAuto(r.eval_samples, () => AUTO_EVAL_SAMPLES),
        reasoning_effort: orAuto(r.reasoning_effort, () => AUTO_REASONING_EFFORT),
      };
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Seed.

/** The given seed, or a random one in OpenAI's range (0–2147483647) when absent. */
export function resolveSeed(seed?: number | null): number {
  return seed ?? randomInt(0, 2147483647 + 1);
}
