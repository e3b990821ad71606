// Fine-tuning method and hyperparameters of a create-job request: parsing with OpenAI's range checks,
// and the rules that turn every "auto" into a number once the training file is known.
// Also the other scalar job fields with limits: metadata, suffix, seed.
import { randomInt } from 'node:crypto';
import { invalidParam } from './errors.ts';

export type MethodType = 'supervised' | 'dpo' | 'reinforcement';
export const METHOD_TYPES: readonly MethodType[] = ['supervised', 'dpo', 'reinforcement'];

export type Auto = 'auto';
export type ReasoningEffort = 'default' | 'low' | 'medium' | 'high';
const REASONING_EFFORTS: readonly ReasoningEffort[] = ['default', 'low', 'medium', 'high'];

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
// Value checks, one per kind of hyperparameter (ranges as in OpenAI's spec).

type Check = (value: unknown, param: string) => number | string;

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** A value quoted for an error message, cut short. */
function describe(v: unknown): string {
  const text = typeof v === 'string' ? `'${v}'` : JSON.stringify(v) ?? String(v);
  return text.length > 80 ? `${text.slice(0, 80)}…` : text;
}

function integerIn(min: number, max: number): Check {
  const range = max === Infinity ? `an integer >= ${min}` : `an integer between ${min} and ${max}`;
  return (value, param) => {
    if (value === 'auto') return value;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      throw invalidParam(param, `Invalid '${param}': expected 'auto' or ${range}, but got ${describe(value)} instead.`);
    }
    return value;
  };
}

/** A number in (exclusiveMin, max]. */
function numberAbove(exclusiveMin: number, max: number): Check {
  const range = max === Infinity ? `a number > ${exclusiveMin}` : `a number > ${exclusiveMin} and <= ${max}`;
  return (value, param) => {
    if (value === 'auto') return value;
    if (typeof value !== 'number' || !Number.isFinite(value) || value <= exclusiveMin || value > max) {
      throw invalidParam(param, `Invalid '${param}': expected 'auto' or ${range}, but got ${describe(value)} instead.`);
    }
    return value;
  };
}

const reasoningEffort: Check = (value, param) => {
  if (value === 'auto' || REASONING_EFFORTS.includes(value as ReasoningEffort)) return value as string;
  throw invalidParam(
    param,
    `Invalid '${param}': expected one of 'auto', ${REASONING_EFFORTS.map((e) => `'${e}'`).join(', ')}, but got ${describe(value)} instead.`,
  );
};

const COMMON_CHECKS = {
  batch_size: integerIn(1, 256),
  learning_rate_multiplier: numberAbove(0, Infinity),
  n_epochs: integerIn(1, 50),
};

const CHECKS_BY_METHOD: Record<MethodType, Record<string, Check>> = {
  supervised: COMMON_CHECKS,
  dpo: { ...COMMON_CHECKS, beta: numberAbove(0, 2) },
  reinforcement: {
    ...COMMON_CHECKS,
    compute_multiplier: numberAbove(0, 10),
    eval_interval: integerIn(1, Infinity),
    eval_samples: integerIn(1, Infinity),
    reasoning_effort: reasoningEffort,
  },
};

/** Checks one hyperparameters object; absent or null values become "auto". */
function parseHyperparameters(raw: unknown, type: MethodType, param: string): Record<string, number | string> {
  if (raw !== undefined && raw !== null && !isPlainObject(raw)) {
    throw invalidParam(param, `Invalid '${param}': expected an object, but got ${describe(raw)} instead.`);
  }
  const given = raw ?? {};
  const checks = CHECKS_BY_METHOD[type];
  for (const key of Object.keys(given)) {
    if (!Object.hasOwn(checks, key)) {
      throw invalidParam(`${param}.${key}`, `Unknown hyperparameter ${describe(key)} for ${type} fine-tuning; expected ${Object.keys(checks).join(', ')}.`);
    }
  }
  const out: Record<string, number | string> = {};
  for (const [key, check] of Object.entries(checks)) {
    const value = given[key];
    out[key] = value === undefined || value === null ? 'auto' : check(value, `${param}.${key}`);
  }
  // The job object's schema has no "auto" for reasoning_effort, and its default needs no dataset.
  if (out.reasoning_effort === 'auto') out.reasoning_effort = AUTO_REASONING_EFFORT;
  return out;
}

/**
 * The method of a create-job request, from `method` or from the deprecated top-level `hyperparameters`
 * (which means a supervised job). When both are given, every value set at the top level must equal the
 * method's (where an absent one counts as "auto"); otherwise the request is ambiguous and rejected.
 */
export function parseJobMethod(body: { method?: unknown; hyperparameters?: unknown }): ParsedJobMethod {
  const hasTopLevel = body.hyperparameters !== undefined && body.hyperparameters !== null;
  if (body.method === undefined || body.method === null) {
    const hyperparameters = parseHyperparameters(body.hyperparameters, 'supervised', 'hyperparameters');
    return { type: 'supervised', hyperparameters: hyperparameters as unknown as SupervisedHyperparameters };
  }

  const method = body.method;
  if (!isPlainObject(method)) throw invalidParam('method', `Invalid 'method': expected an object, but got ${describe(method)} instead.`);
  const type = method.type;
  if (type === undefined || type === null) throw invalidParam('method.type', "Missing required parameter: 'method.type'.");
  if (!METHOD_TYPES.includes(type as MethodType)) {
    throw invalidParam('method.type', `Invalid 'method.type': expected one of 'supervised', 'dpo', 'reinforcement', but got ${describe(type)} instead.`);
  }
  const methodType = type as MethodType;
  for (const key of Object.keys(method)) {
    if (key === 'type' || key === methodType) continue;
    if (METHOD_TYPES.includes(key as MethodType)) {
      throw invalidParam(`method.${key}`, `'method.${key}' cannot be set when 'method.type' is '${methodType}'.`);
    }
    throw invalidParam(`method.${key}`, `Unknown parameter: 'method.${key}'.`);
  }

  const config = method[methodType];
  const configParam = `method.${methodType}`;
  if (config !== undefined && config !== null && !isPlainObject(config)) {
    throw invalidParam(configParam, `Invalid '${configParam}': expected an object, but got ${describe(config)} instead.`);
  }
  const settings = (config ?? {}) as Record<string, unknown>;
  const allowedSettings = methodType === 'reinforcement' ? ['hyperparameters', 'grader'] : ['hyperparameters'];
  for (const key of Object.keys(settings)) {
    if (!allowedSettings.includes(key)) throw invalidParam(`${configParam}.${key}`, `Unknown parameter: '${configParam}.${key}'.`);
  }
  const hyperparameters = parseHyperparameters(settings.hyperparameters, methodType, `${configParam}.hyperparameters`);

  if (hasTopLevel) {
    // Only the keys the caller actually set must agree; `hyperparameters: {}` says nothing.
    const topLevel = parseHyperparameters(body.hyperparameters, 'supervised', 'hyperparameters');
    const given = body.hyperparameters as Record<string, unknown>;
    for (const [key, value] of Object.entries(topLevel)) {
      if (given[key] === undefined || given[key] === null) continue;
      if (hyperparameters[key] !== value) {
        throw invalidParam(
          'hyperparameters',
          `'hyperparameters.${key}' (${describe(value)}) conflicts with '${configParam}.hyperparameters.${key}' (${describe(hyperparameters[key])}); ` +
            "'hyperparameters' is deprecated, pass hyperparameters under 'method' only.",
        );
      }
    }
  }

  switch (methodType) {
    case 'supervised':
      return { type: 'supervised', hyperparameters: hyperparameters as unknown as SupervisedHyperparameters };
    case 'dpo':
      return { type: 'dpo', hyperparameters: hyperparameters as unknown as DpoHyperparameters };
    case 'reinforcement': {
      const grader = settings.grader;
      if (grader === undefined || grader === null) {
        throw invalidParam(`${configParam}.grader`, `Missing required parameter: '${configParam}.grader'.`);
      }
      if (!isPlainObject(grader) || typeof grader.type !== 'string') {
        throw invalidParam(`${configParam}.grader`, `Invalid '${configParam}.grader': expected a grader object with a string 'type'.`);
      }
      return { type: 'reinforcement', hyperparameters: hyperparameters as unknown as ReinforcementHyperparameters, grader };
    }
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
// Other job fields with limits.

export const METADATA_MAX_PAIRS = 16;
export const METADATA_MAX_KEY_LENGTH = 64;
export const METADATA_MAX_VALUE_LENGTH = 512;

/** OpenAI's metadata limits: at most 16 pairs, keys ≤ 64 characters, string values ≤ 512. Null when absent. */
export function validateMetadata(m: unknown): Record<string, string> | null {
  if (m === undefined || m === null) return null;
  if (!isPlainObject(m)) throw invalidParam('metadata', `Invalid 'metadata': expected an object, but got ${describe(m)} instead.`);
  const entries = Object.entries(m);
  if (entries.length > METADATA_MAX_PAIRS) {
    throw invalidParam(
      'metadata',
      `Invalid 'metadata': too many properties. Expected an object with at most ${METADATA_MAX_PAIRS} properties, but got an object with ${entries.length} properties instead.`,
    );
  }
  for (const [key, value] of entries) {
    if (key.length === 0 || key.length > METADATA_MAX_KEY_LENGTH) {
      throw invalidParam(
        'metadata',
        `Invalid 'metadata': keys must be 1 to ${METADATA_MAX_KEY_LENGTH} characters long, but got a key with length ${key.length} instead.`,
      );
    }
    if (typeof value !== 'string') {
      throw invalidParam('metadata', `Invalid 'metadata.${key}': expected a string, but got ${describe(value)} instead.`);
    }
    if (value.length > METADATA_MAX_VALUE_LENGTH) {
      throw invalidParam(
        'metadata',
        `Invalid 'metadata.${key}': string too long. Expected a string with maximum length ${METADATA_MAX_VALUE_LENGTH}, but got a string with length ${value.length} instead.`,
      );
    }
  }
  // fromEntries, not assignment: a key such as "__proto__" stays an ordinary key
  return Object.fromEntries(entries) as Record<string, string>;
}

export const SUFFIX_MAX_LENGTH = 64;
// Letters, digits, '-', '_' and '.': the suffix becomes a segment of a model name that is used in URL
// paths (GET /v1/models/{model}) and split on ':'.
const SUFFIX_PATTERN = /^[A-Za-z0-9._-]+$/;

/** A model-name suffix of 1–64 characters among letters, digits, '-', '_', '.'; null when absent. */
export function validateSuffix(s: unknown): string | null {
  if (s === undefined || s === null) return null;
  if (typeof s !== 'string') throw invalidParam('suffix', `Invalid 'suffix': expected a string, but got ${describe(s)} instead.`);
  if (s.length < 1 || s.length > SUFFIX_MAX_LENGTH) {
    throw invalidParam(
      'suffix',
      `Invalid 'suffix': expected a string of 1 to ${SUFFIX_MAX_LENGTH} characters, but got a string with length ${s.length} instead.`,
    );
  }
  if (!SUFFIX_PATTERN.test(s)) {
    throw invalidParam('suffix', `Invalid 'suffix': only letters, digits, '-', '_' and '.' are allowed, but got '${s}'.`);
  }
  return s;
}

export const SEED_MAX = 2147483647;

/** The given seed (an integer in 0–2147483647), or a random one when absent. */
export function resolveSeed(seed?: unknown): number {
  if (seed === undefined || seed === null) return randomInt(0, SEED_MAX + 1);
  if (typeof seed !== 'number' || !Number.isInteger(seed) || seed < 0 || seed > SEED_MAX) {
    throw invalidParam('seed', `Invalid 'seed': expected an integer between 0 and ${SEED_MAX}, but got ${describe(seed)} instead.`);
  }
  return seed;
}
