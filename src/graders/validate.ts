// validateGrader: structural checks of a grader object, each failure a 400 naming the exact param
// (`grader.graders.a.operation`, `grader.calculate_output` with the column of a bad formula, …).
// Rules beyond the spec's types, where OpenAI is silent, are chosen here:
// - unknown keys are rejected (a typo must not silently change grading);
// - label_model is accepted only inside multi (RunGraderRequest's grader excludes it, as OpenAI says);
//   multi inside multi is rejected (the spec's multi.graders excludes multi);
// - multi.graders is a map name → grader (OpenAI's API); a single grader object (the spec's typing)
//   counts as a map with one entry under its `name`. Formula variables must be map keys;
// - templates must name `item.…` or a `sample` field (output_text, output_json, output_tools);
// - model inputs are text only (input_image / input_audio: our models are text models);
// - cosine needs an embeddings model, which tuneforge does not serve: refused unless the caller
//   supplies embeddings (options.embeddings);
// - python graders are refused when the sandbox is unavailable on this server.
import { invalidParam } from '../domain/errors.ts';
import { FormulaSyntaxError, formulaVariables, parseFormula } from './formula.ts';
import { pythonSandboxStatus, type PythonSandboxOptions } from './python.ts';
import { EVALUATION_METRICS } from './similarity.ts';
import { checkTemplate } from './templates.ts';
import type { EvalItem, Grader, LeafGrader, MultiGrader } from './types.ts';

export interface ValidateOptions {
  /** The param path of the grader (default 'grader'). */
  param?: string;
  /** Whether `cosine` can be computed (an embeddings function is available). Default false. */
  embeddings?: boolean;
  /** The python sandbox to check for availability (python graders are refused without it). */
  python?: PythonSandboxOptions;
}

const GRADER_TYPES = ['string_check', 'text_similarity', 'python', 'score_model', 'label_model', 'multi'] as const;
const OPERATIONS = ['eq', 'ne', 'like', 'ilike'] as const;
const ROLES = ['user', 'assistant', 'system', 'developer'] as const;
const REASONING_EFFORTS = ['none', 'minimal', 'low', 'medium', 'high', 'xhigh'];
export const GRADER_NAME_PATTERN = /^[A-Za-z_][A-Za-z0-9_]*$/;

const KEYS: Record<(typeof GRADER_TYPES)[number], string[]> = {
  string_check: ['type', 'name', 'input', 'reference', 'operation'],
  text_similarity: ['type', 'name', 'input', 'reference', 'evaluation_metric', 'pass_threshold'],
  python: ['type', 'name', 'source', 'image_tag', 'pass_threshold'],
  score_model: ['type', 'name', 'model', 'input', 'range', 'sampling_params', 'pass_threshold'],
  label_model: ['type', 'name', 'model', 'input', 'labels', 'passing_labels'],
  multi: ['type', 'name', 'graders', 'calculate_output'],
};

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return `'${value.length > 60 ? value.slice(0, 60) + '…' : value}'`;
  if (typeof value === 'object') return 'an object';
  return `${typeof value} ${String(value)}`;
}

function requireObject(value: unknown, param: string, what = 'an object'): Record<string, unknown> {
  if (!isObject(value)) throw invalidParam(param, `Invalid '${param}': expected ${what}, but got ${describe(value)} instead.`);
  return value;
}

function requireString(obj: Record<string, unknown>, key: string, param: string, { nonEmpty = false } = {}): string {
  const value = obj[key];
  if (value === undefined || value === null) throw invalidParam(`${param}.${key}`, `Missing required parameter: '${param}.${key}'.`, 'missing_required_parameter');
  if (typeof value !== 'string') throw invalidParam(`${param}.${key}`, `Invalid '${param}.${key}': expected a string, but got ${describe(value)} instead.`);
  if (nonEmpty && value.trim() === '') throw invalidParam(`${param}.${key}`, `Invalid '${param}.${key}': expected a non-empty string.`);
  return value;
}

function requireEnum<T extends string>(obj: Record<string, unknown>, key: string, param: string, allowed: readonly T[]): T {
  const value = obj[key];
  if (value === undefined || value === null) throw invalidParam(`${param}.${key}`, `Missing required parameter: '${param}.${key}'.`, 'missing_required_parameter');
  if (typeof value !== 'string' || !allowed.includes(value as T)) {
    throw invalidParam(`${param}.${key}`, `Invalid '${param}.${key}': expected one of ${allowed.map((a) => `'${a}'`).join(', ')}, but got ${describe(value)} instead.`);
  }
  return value as T;
}

function checkKeys(obj: Record<string, unknown>, allowed: string[], param: string, type: string): void {
  for (const key of Object.keys(obj)) {
    if (!allowed.includes(key)) throw invalidParam(`${param}.${key}`, `Unknown parameter '${param}.${key}' for a ${type} grader; expected ${allowed.join(', ')}.`, 'unknown_parameter');
  }
}

function checkTemplateParam(text: string, param: string): void {
  const problem = checkTemplate(text);
  if (problem) throw invalidParam(param, `Invalid template in '${param}': ${problem}.`);
}

function optionalFiniteNumber(obj: Record<string, unknown>, key: string, param: string): void {
  const v = obj[key];
  if (v === undefined || v === null) return;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw invalidParam(`${param}.${key}`, `Invalid '${param}.${key}': expected a number, but got ${describe(v)} instead.`);
}

function checkInput(obj: Record<string, unknown>, param: string): EvalItem[] {
  const p = `${param}.input`;
  const input = obj.input;
  if (input === undefined || input === null) throw invalidParam(p, `Missing required parameter: '${p}'.`, 'missing_required_parameter');
  if (!Array.isArray(input) || input.length === 0) throw invalidParam(p, `Invalid '${p}': expected a non-empty array of messages, but got ${describe(input)} instead.`);
  input.forEach((raw, i) => {
    const mp = `${p}.${i}`;
    const message = requireObject(raw, mp, 'a message object {role, content}');
    for (const key of Object.keys(message)) {
      if (!['type', 'role', 'content'].includes(key)) throw invalidParam(`${mp}.${key}`, `Unknown parameter '${mp}.${key}'; expected type, role, content.`, 'unknown_parameter');
    }
    if (message.type !== undefined && message.type !== 'message') throw invalidParam(`${mp}.type`, `Invalid '${mp}.type': expected 'message'.`);
    requireEnum(message, 'role', mp, ROLES);
    const content = message.content;
    if (content === undefined || content === null) throw invalidParam(`${mp}.content`, `Missing required parameter: '${mp}.content'.`, 'missing_required_parameter');
    const parts = Array.isArray(content) ? content : [content];
    parts.forEach((part, k) => {
      const cp = Array.isArray(content) ? `${mp}.content.${k}` : `${mp}.content`;
      if (typeof part === 'string') return checkTemplateParam(part, cp);
      const item = requireObject(part, cp, 'a string or a content part {type, text}');
      const type = item.type;
      if (type === 'input_image' || type === 'input_audio') {
        throw invalidParam(`${cp}.type`, `Invalid '${cp}.type': '${type}' is not supported; tuneforge's grader models take text only (input_text, output_text).`);
      }
      if (type !== 'input_text' && type !== 'output_text') {
        throw invalidParam(`${cp}.type`, `Invalid '${cp}.type': expected one of 'input_text', 'output_text', but got ${describe(type)} instead.`);
      }
      const text = requireString(item, 'text', cp);
      checkTemplateParam(text, `${cp}.text`);
    });
  });
  return input as EvalItem[];
}

function checkSamplingParams(value: unknown, param: string): void {
  if (value === undefined || value === null) return;
  const sp = requireObject(value, param);
  const allowed = ['seed', 'top_p', 'temperature', 'max_completions_tokens', 'reasoning_effort'];
  for (const key of Object.keys(sp)) {
    if (!allowed.includes(key)) throw invalidParam(`${param}.${key}`, `Unknown parameter '${param}.${key}'; expected ${allowed.join(', ')}.`, 'unknown_parameter');
  }
  const bad = (key: string, what: string) => invalidParam(`${param}.${key}`, `Invalid '${param}.${key}': expected ${what}, but got ${describe(sp[key])} instead.`);
  const present = (key: string) => sp[key] !== undefined && sp[key] !== null;
  if (present('seed') && !Number.isSafeInteger(sp.seed)) throw bad('seed', 'an integer');
  if (present('top_p') && !(typeof sp.top_p === 'number' && sp.top_p > 0 && sp.top_p <= 1)) throw bad('top_p', 'a number in (0, 1]');
  if (present('temperature') && !(typeof sp.temperature === 'number' && sp.temperature >= 0 && sp.temperature <= 2)) throw bad('temperature', 'a number in [0, 2]');
  if (present('max_completions_tokens') && !(Number.isSafeInteger(sp.max_completions_tokens) && (sp.max_completions_tokens as number) >= 1)) {
    throw bad('max_completions_tokens', 'an integer ≥ 1');
  }
  if (present('reasoning_effort') && !REASONING_EFFORTS.includes(sp.reasoning_effort as string)) {
    throw bad('reasoning_effort', `one of ${REASONING_EFFORTS.map((e) => `'${e}'`).join(', ')}`);
  }
}

function checkLabels(obj: Record<string, unknown>, param: string): void {
  const list = (key: string): string[] => {
    const v = obj[key];
    const p = `${param}.${key}`;
    if (v === undefined || v === null) throw invalidParam(p, `Missing required parameter: '${p}'.`, 'missing_required_parameter');
    if (!Array.isArray(v) || v.length === 0) throw invalidParam(p, `Invalid '${p}': expected a non-empty array of strings, but got ${describe(v)} instead.`);
    v.forEach((s, i) => {
      if (typeof s !== 'string' || s.trim() === '') throw invalidParam(`${p}.${i}`, `Invalid '${p}.${i}': expected a non-empty string, but got ${describe(s)} instead.`);
    });
    const seen = new Set<string>();
    v.forEach((s: string, i) => {
      if (seen.has(s)) throw invalidParam(`${p}.${i}`, `Invalid '${p}.${i}': '${s}' is listed twice.`);
      seen.add(s);
    });
    return v as string[];
  };
  const labels = list('labels');
  const passing = list('passing_labels');
  passing.forEach((s, i) => {
    if (!labels.includes(s)) throw invalidParam(`${param}.passing_labels.${i}`, `Invalid '${param}.passing_labels.${i}': '${s}' is not one of the labels (${labels.join(', ')}).`);
  });
}

function validateLeaf(g: Record<string, unknown>, param: string, type: LeafGrader['type'], options: ValidateOptions): void {
  requireString(g, 'name', param);
  switch (type) {
    case 'string_check':
      checkTemplateParam(requireString(g, 'input', param), `${param}.input`);
      checkTemplateParam(requireString(g, 'reference', param), `${param}.reference`);
      requireEnum(g, 'operation', param, OPERATIONS);
      return;
    case 'text_similarity': {
      checkTemplateParam(requireString(g, 'input', param), `${param}.input`);
      checkTemplateParam(requireString(g, 'reference', param), `${param}.reference`);
      const metric = requireEnum(g, 'evaluation_metric', param, EVALUATION_METRICS);
      if (metric === 'cosine' && !options.embeddings) {
        throw invalidParam(
          `${param}.evaluation_metric`,
          `Invalid '${param}.evaluation_metric': 'cosine' needs an embeddings model, which this server does not serve (OpenAI offers cosine in evals only); use fuzzy_match, bleu, gleu, meteor or rouge_*.`,
          'unsupported_metric',
        );
      }
      optionalFiniteNumber(g, 'pass_threshold', param);
      return;
    }
    case 'python': {
      requireString(g, 'source', param, { nonEmpty: true });
      if (g.image_tag !== undefined && g.image_tag !== null && typeof g.image_tag !== 'string') {
        throw invalidParam(`${param}.image_tag`, `Invalid '${param}.image_tag': expected a string, but got ${describe(g.image_tag)} instead.`);
      }
      optionalFiniteNumber(g, 'pass_threshold', param);
      const status = pythonSandboxStatus(options.python);
      if (!status.ok) {
        throw invalidParam(param, `Python graders are not available on this server: ${status.reason}. They are refused rather than run without isolation.`, 'python_grader_unavailable');
      }
      return;
    }
    case 'score_model': {
      requireString(g, 'model', param, { nonEmpty: true });
      checkInput(g, param);
      if (g.range !== undefined && g.range !== null) {
        const r = g.range;
        const ok = Array.isArray(r) && r.length === 2 && r.every((x) => typeof x === 'number' && Number.isFinite(x)) && (r[0] as number) < (r[1] as number);
        if (!ok) throw invalidParam(`${param}.range`, `Invalid '${param}.range': expected [min, max] with min < max, but got ${JSON.stringify(r)} instead.`);
      }
      checkSamplingParams(g.sampling_params, `${param}.sampling_params`);
      optionalFiniteNumber(g, 'pass_threshold', param);
      return;
    }
    case 'label_model':
      requireString(g, 'model', param, { nonEmpty: true });
      checkInput(g, param);
      checkLabels(g, param);
      return;
  }
}

/** The sub-graders of a multi grader as a map (a single grader object is keyed by its name). */
export function multiGraders(grader: MultiGrader): Record<string, LeafGrader> {
  const g = grader.graders as Record<string, unknown>;
  if (typeof g.type === 'string') return { [(g as unknown as LeafGrader).name]: g as unknown as LeafGrader };
  return grader.graders as Record<string, LeafGrader>;
}

/**
 * Checks a grader; returns it typed. Throws a 400 ApiError naming the exact param.
 * `topLevel` graders may not be label_model (only inside multi).
 */
export function validateGrader(grader: unknown, options: ValidateOptions = {}): Grader {
  const param = options.param ?? 'grader';
  const g = requireObject(grader, param, 'a grader object');
  const type = requireEnum(g, 'type', param, GRADER_TYPES);
  checkKeys(g, KEYS[type], param, type);
  if (type === 'label_model') {
    throw invalidParam(`${param}.type`, `Invalid '${param}.type': a label_model grader can only be used inside a multi grader.`);
  }
  if (type !== 'multi') {
    validateLeaf(g, param, type, options);
    return g as unknown as Grader;
  }

  requireString(g, 'name', param);
  const rawGraders = g.graders;
  if (rawGraders === undefined || rawGraders === null) throw invalidParam(`${param}.graders`, `Missing required parameter: '${param}.graders'.`, 'missing_required_parameter');
  const subs = requireObject(rawGraders, `${param}.graders`, 'an object mapping names to graders');
  const single = typeof subs.type === 'string';
  const entries: [string, unknown, string][] = single
    ? [[typeof subs.name === 'string' ? subs.name : '', subs, `${param}.graders`]]
    : Object.entries(subs).map(([k, v]) => [k, v, `${param}.graders.${k}`]);
  if (entries.length === 0) throw invalidParam(`${param}.graders`, `Invalid '${param}.graders': expected at least one grader.`);
  for (const [key, sub, subParam] of entries) {
    const s = requireObject(sub, subParam, 'a grader object');
    const subType = requireEnum(s, 'type', subParam, GRADER_TYPES);
    if (subType === 'multi') throw invalidParam(`${subParam}.type`, `Invalid '${subParam}.type': a multi grader cannot contain another multi grader.`);
    checkKeys(s, KEYS[subType], subParam, subType);
    validateLeaf(s, subParam, subType, options);
    if (!GRADER_NAME_PATTERN.test(key)) {
      const where = single ? `${subParam}.name` : `${param}.graders`;
      throw invalidParam(where, `Invalid grader key '${key}' in '${param}.graders': keys are the formula's variable names (letters, digits and _, not starting with a digit).`);
    }
  }

  const formula = requireString(g, 'calculate_output', param);
  let tree;
  try {
    tree = parseFormula(formula);
  } catch (err) {
    if (err instanceof FormulaSyntaxError) throw invalidParam(`${param}.calculate_output`, `Invalid '${param}.calculate_output': ${err.message}.`, 'invalid_formula');
    throw err;
  }
  const names = entries.map(([k]) => k);
  for (const [name, column] of formulaVariables(tree)) {
    if (!names.includes(name)) {
      throw invalidParam(
        `${param}.calculate_output`,
        `Invalid '${param}.calculate_output': unknown grader '${name}' at column ${column}; the graders are ${names.map((n) => `'${n}'`).join(', ')}.`,
        'invalid_formula',
      );
    }
  }
  return g as unknown as Grader;
}
