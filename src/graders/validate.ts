// validateGrader: a grader's rules across fields, each failure a 400 naming the exact param
// (`grader.graders.a.passing_labels[0]`, `grader.calculate_output` with the column of a bad formula, …).
// Its shape (types, enums, required and unknown keys) is the route schema's, from OpenAI's spec
// (api/schemas.ts graderSchema); this takes a grader that passed it. Rules where OpenAI is silent:
// - label_model is accepted only inside multi (RunGraderRequest's grader excludes it, as OpenAI says);
// - multi.graders is a map name → grader (OpenAI's API); a single grader object (the spec's typing)
//   counts as a map with one entry under its `name`. Formula variables must be map keys;
// - templates must name `item.…` or a `sample` field (output_text, output_json, output_tools);
// - cosine needs an embeddings model, which tuneforge does not serve: refused unless the caller
//   supplies embeddings (options.embeddings);
// - python graders are refused when the sandbox is unavailable on this server.
import { invalidParam } from '../domain/errors.ts';
import { FormulaSyntaxError, formulaVariables, parseFormula } from './formula.ts';
import { pythonSandboxStatus, type PythonSandboxOptions } from './python.ts';
import { checkTemplate } from './templates.ts';
import type { EvalItem, Grader, LabelModelGrader, LeafGrader, MultiGrader } from './types.ts';

export interface ValidateOptions {
  /** The param path of the grader (default 'grader'). */
  param?: string;
  /** Whether `cosine` can be computed (an embeddings function is available). Default false. */
  embeddings?: boolean;
  /** The python sandbox to check for availability (python graders are refused without it). */
  python?: PythonSandboxOptions;
}

export const GRADER_NAME_PATTERN = /^[A-Za-z_][A-Za-z0-9_]*$/;

function checkTemplateParam(text: string, param: string): void {
  const problem = checkTemplate(text);
  if (problem) throw invalidParam(param, `Invalid template in '${param}': ${problem}.`);
}

function checkInput(input: EvalItem[], param: string): void {
  input.forEach((message, i) => {
    const mp = `${param}.input[${i}]`;
    const content = message.content;
    const parts = Array.isArray(content) ? content : [content];
    parts.forEach((part, k) => {
      const cp = Array.isArray(content) ? `${mp}.content[${k}]` : `${mp}.content`;
      if (typeof part === 'string') checkTemplateParam(part, cp);
      else if ('text' in part) checkTemplateParam(part.text, `${cp}.text`);
    });
  });
}

function checkLabels(grader: LabelModelGrader, param: string): void {
  grader.passing_labels.forEach((s, i) => {
    if (!grader.labels.includes(s)) {
      throw invalidParam(`${param}.passing_labels[${i}]`, `Invalid '${param}.passing_labels[${i}]': '${s}' is not one of the labels (${grader.labels.join(', ')}).`);
    }
  });
}

function validateLeaf(g: LeafGrader, param: string, options: ValidateOptions): void {
  switch (g.type) {
    case 'string_check':
      checkTemplateParam(g.input, `${param}.input`);
      checkTemplateParam(g.reference, `${param}.reference`);
      return;
    case 'text_similarity':
      checkTemplateParam(g.input, `${param}.input`);
      checkTemplateParam(g.reference, `${param}.reference`);
      if (g.evaluation_metric === 'cosine' && !options.embeddings) {
        throw invalidParam(
          `${param}.evaluation_metric`,
          `Invalid '${param}.evaluation_metric': 'cosine' needs an embeddings model, which this server does not serve (OpenAI offers cosine in evals only); use fuzzy_match, bleu, gleu, meteor or rouge_*.`,
          'unsupported_metric',
        );
      }
      return;
    case 'python': {
      const status = pythonSandboxStatus(options.python);
      if (!status.ok) {
        throw invalidParam(param, `Python graders are not available on this server: ${status.reason}. They are refused rather than run without isolation.`, 'python_grader_unavailable');
      }
      return;
    }
    case 'score_model':
      checkInput(g.input, param);
      if (g.range && !(g.range[0] < g.range[1])) {
        throw invalidParam(`${param}.range`, `Invalid '${param}.range': expected [min, max] with min < max, but got ${JSON.stringify(g.range)} instead.`);
      }
      return;
    case 'label_model':
      checkInput(g.input, param);
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
 * Checks the rules across a grader's fields; returns it. Throws a 400 ApiError naming the exact param.
 * Top-level graders may not be label_model (only inside multi).
 */
export function validateGrader(grader: Grader, options: ValidateOptions = {}): Grader {
  const param = options.param ?? 'grader';
  if (grader.type === 'label_model') {
    throw invalidParam(`${param}.type`, `Invalid '${param}.type': a label_model grader can only be used inside a multi grader.`);
  }
  if (grader.type !== 'multi') {
    validateLeaf(grader, param, options);
    return grader;
  }

  const single = typeof (grader.graders as { type?: unknown }).type === 'string';
  const entries = Object.entries(multiGraders(grader));
  for (const [key, sub] of entries) {
    const subParam = single ? `${param}.graders` : `${param}.graders.${key}`;
    validateLeaf(sub, subParam, options);
    if (!GRADER_NAME_PATTERN.test(key)) {
      const where = single ? `${subParam}.name` : `${param}.graders`;
      throw invalidParam(where, `Invalid grader key '${key}' in '${param}.graders': keys are the formula's variable names (letters, digits and _, not starting with a digit).`);
    }
  }

  const formula = grader.calculate_output;
  let tree;
  try {
    tree = parseFormula(formula);
  } catch (err) {
    if (err instanceof FormulaSyntaxError) throw invalidParam(`${param}.calculate_output`, `Invalid '${param}.calculate_output': ${err.message}.`, 'invalid_formula');
    throw err;
  }
  const names = entries.map(([key]) => key);
  for (const [name, column] of formulaVariables(tree)) {
    if (!names.includes(name)) {
      throw invalidParam(
        `${param}.calculate_output`,
        `Invalid '${param}.calculate_output': unknown grader '${name}' at column ${column}; the graders are ${names.map((n) => `'${n}'`).join(', ')}.`,
        'invalid_formula',
      );
    }
  }
  return grader;
}
