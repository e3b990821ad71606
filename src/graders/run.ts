// runGrader: grades one model sample against one dataset item and answers OpenAI's
// RunGraderResponse. Problems with the grader object itself are 400s (validateGrader runs first);
// problems while grading (a missing template variable, a sample that is not JSON for output_json, a
// python exception or limit, a model that answers nonsense, a division by zero in the formula) score
// 0 and are flagged in metadata.errors, so that training never sees NaN or a crash.
//
// Where OpenAI is silent:
// - metadata.scores: for leaf graders the grader's own numbers (e.g. {bleu: 0.38}, {result, steps},
//   {label}, {passed} with a pass_threshold) and `error` (a sentence) when grading failed; for multi,
//   each sub-grader's reward by key (as sub_rewards) and `formula_error` when the formula failed.
// - metadata.token_usage: total tokens of grader-model calls (null when no model was called);
//   model_grader_token_usage_per_model: {model: {prompt_tokens, completion_tokens, total_tokens, cached_tokens}}.
// - score_model: the reply may be a JSON object with a numeric `result` (OpenAI's format; steps kept),
//   or just a number; anything else is a model_grader_parse_error scoring 0. The result is clipped to
//   `range` (default [0, 1]).
// - label_model: the reply may be {"result": label}, a bare label, or text naming exactly one label
//   (case-insensitive); reward 1 when that label is a passing one, else 0.
// - python rewards are what grade() returns (finite numbers; not clipped).
import { performance } from 'node:perf_hooks';
import { evaluateFormula, FormulaEvalError, parseFormula } from './formula.ts';
import { runPythonSandbox, type PythonSandboxOptions } from './python.ts';
import { cosineSimilarity, textSimilarity } from './similarity.ts';
import { renderTemplate, sampleFrom, TemplateError, type TemplateContext } from './templates.ts';
import {
  noErrors,
  type CallModel,
  type EvalItem,
  type Grader,
  type GraderErrors,
  type GraderModelMessage,
  type GraderModelReply,
  type LabelModelGrader,
  type LeafGrader,
  type RunGraderResponse,
  type ScoreModelGrader,
  type TokenUsage,
} from './types.ts';
import { multiGraders, validateGrader } from './validate.ts';

export interface GraderDeps {
  /** Reaches grader models (score_model, label_model). Without it those graders report a server error. */
  callModel?: CallModel;
  /** Embeddings for text_similarity `cosine`; without it cosine graders are refused at validation. */
  embed?: (texts: string[]) => Promise<number[][]>;
  /** The python sandbox's limits and interpreter. */
  python?: PythonSandboxOptions;
  /** Default most tokens a grader model may answer with (sampling_params.max_completions_tokens wins). Default 512. */
  maxModelTokens?: number;
}

export interface GraderInput {
  item?: unknown;
  modelSample: string;
}

interface LeafOutcome {
  reward: number;
  errors: Partial<GraderErrors>;
  scores: Record<string, unknown>;
  usage: Record<string, TokenUsage>;
  sampledModel: string | null;
}

const outcome = (reward: number, scores: Record<string, unknown> = {}): LeafOutcome => ({ reward, errors: {}, scores, usage: {}, sampledModel: null });

function failed(errors: Partial<GraderErrors>, message: string, extra: Partial<LeafOutcome> = {}): LeafOutcome {
  return { reward: 0, errors, scores: { error: message }, usage: {}, sampledModel: null, ...extra };
}

function templateFailure(err: unknown): LeafOutcome {
  if (err instanceof TemplateError) {
    return failed(err.kind === 'sample_parse' ? { sample_parse_error: true } : { invalid_variable_error: true }, err.message);
  }
  throw err;
}

function withThreshold(result: LeafOutcome, threshold: number | undefined): LeafOutcome {
  if (typeof threshold === 'number') result.scores.passed = result.reward >= threshold;
  return result;
}

// ---------------------------------------------------------------------------------- model graders

/** The text of an EvalItem's content with templates rendered. */
function messageText(item: EvalItem, ctx: TemplateContext): string {
  const parts = Array.isArray(item.content) ? item.content : [item.content];
  return parts
    .map((p) => (typeof p === 'string' ? p : 'text' in p ? p.text : ''))
    .map((t) => renderTemplate(t, ctx))
    .join('\n');
}

/** The grader's messages plus the answer-format instruction, in a system message our chat templates accept. */
function modelMessages(input: EvalItem[], ctx: TemplateContext, instruction: string): GraderModelMessage[] {
  const messages: GraderModelMessage[] = input.map((m) => ({
    role: m.role === 'developer' ? 'system' : m.role,
    content: messageText(m, ctx),
  }));
  const firstSystem = messages.findIndex((m) => m.role === 'system');
  if (firstSystem >= 0) messages[firstSystem] = { ...messages[firstSystem], content: `${messages[firstSystem].content}\n\n${instruction}` };
  else messages.unshift({ role: 'system', content: instruction });
  return messages;
}

/** The first JSON object in a reply (code fences and surrounding prose allowed). */
export function extractJsonObject(text: string): Record<string, unknown> | null {
  const unfenced = text.replace(/```(?:json)?/gi, '');
  for (let start = unfenced.indexOf('{'); start >= 0; start = unfenced.indexOf('{', start + 1)) {
    for (let end = unfenced.lastIndexOf('}'); end > start; end = unfenced.lastIndexOf('}', end - 1)) {
      try {
        const value = JSON.parse(unfenced.slice(start, end + 1));
        if (value && typeof value === 'object' && !Array.isArray(value)) return value;
      } catch {
        // try a shorter span
      }
    }
  }
  return null;
}

/**
 * The grader's input (rendered, `instruction` added to its system message) put to its model: the
 * reply's text and what every outcome of the grader carries (token usage, the sampled model), or
 * the outcome of a template or model failure.
 */
async function askModel(
  grader: ScoreModelGrader | LabelModelGrader,
  ctx: TemplateContext,
  instruction: string,
  deps: GraderDeps,
): Promise<{ text: string; base: { usage: Record<string, TokenUsage>; sampledModel: string } } | { error: LeafOutcome }> {
  let messages: GraderModelMessage[];
  try {
    messages = modelMessages(grader.input, ctx, instruction);
  } catch (err) {
    return { error: templateFailure(err) };
  }
  if (!deps.callModel) {
    return { error: failed({ model_grader_server_error: true, model_grader_server_error_details: 'no grader model is available on this server' }, 'no grader model is available') };
  }
  const sp = grader.type === 'score_model' ? (grader.sampling_params ?? {}) : {};
  const sampling = {
    temperature: sp.temperature ?? undefined,
    top_p: sp.top_p ?? undefined,
    seed: sp.seed ?? undefined,
    max_tokens: sp.max_completions_tokens ?? deps.maxModelTokens ?? 512,
  };
  let raw: string | GraderModelReply;
  try {
    raw = await deps.callModel(grader.model, messages, sampling);
  } catch (err) {
    const message = (err as Error)?.message ?? String(err);
    return { error: failed({ model_grader_server_error: true, model_grader_server_error_details: message }, `the grader model failed: ${message}`) };
  }
  const reply = typeof raw === 'string' ? { text: raw } : raw;
  const model = reply.model ?? grader.model;
  const usage: Record<string, TokenUsage> = {};
  if (reply.usage) {
    const { prompt_tokens, completion_tokens } = reply.usage;
    usage[model] = { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens, cached_tokens: 0 };
  }
  return { text: reply.text, base: { usage, sampledModel: model } };
}

async function runScoreModel(grader: ScoreModelGrader, ctx: TemplateContext, deps: GraderDeps): Promise<LeafOutcome> {
  const [lo, hi] = grader.range ?? [0, 1];
  const instruction =
    `Grade the response as instructed. Answer with only a JSON object of the form ` +
    `{"steps": [{"description": "...", "conclusion": "..."}], "result": <a number from ${lo} to ${hi}>}.`;
  const asked = await askModel(grader, ctx, instruction, deps);
  if ('error' in asked) return asked.error;
  const { text, base } = asked;
  const json = extractJsonObject(text);
  let result: number | null = null;
  let steps: unknown;
  if (json) {
    steps = json.steps;
    if (typeof json.result === 'number' && Number.isFinite(json.result)) result = json.result;
  } else if (/^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$/.test(text)) {
    result = Number(text.trim());
  }
  if (result === null) {
    return failed({ model_grader_parse_error: true }, `the grader model's answer has no numeric result: ${JSON.stringify(text.slice(0, 200))}`, base);
  }
  const reward = Math.min(hi, Math.max(lo, result));
  const scores: Record<string, unknown> = { result };
  if (steps !== undefined) scores.steps = steps;
  return withThreshold({ reward, errors: {}, scores, ...base }, grader.pass_threshold);
}

function pickLabel(text: string, labels: string[]): string | null {
  const json = extractJsonObject(text);
  const candidates: string[] = [];
  if (json && typeof json.result === 'string') candidates.push(json.result);
  candidates.push(text.trim().replace(/^["'`\s]+|["'`.!\s]+$/g, ''));
  for (const c of candidates) {
    const exact = labels.find((l) => l === c);
    if (exact) return exact;
    const folded = labels.find((l) => l.toLowerCase() === c.toLowerCase());
    if (folded) return folded;
  }
  const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const named = labels.filter((l) => new RegExp(`(^|[^\\p{L}\\p{N}_])${escape(l)}($|[^\\p{L}\\p{N}_])`, 'iu').test(text));
  return named.length === 1 ? named[0] : null;
}

async function runLabelModel(grader: LabelModelGrader, ctx: TemplateContext, deps: GraderDeps): Promise<LeafOutcome> {
  const instruction =
    `Classify as instructed. Answer with only a JSON object {"result": "<label>"} where <label> is exactly one of: ` +
    grader.labels.map((l) => JSON.stringify(l)).join(', ') +
    '.';
  const asked = await askModel(grader, ctx, instruction, deps);
  if ('error' in asked) return asked.error;
  const { text, base } = asked;
  const label = pickLabel(text, grader.labels);
  if (label === null) {
    return failed({ model_grader_parse_error: true }, `the grader model's answer names none of the labels: ${JSON.stringify(text.slice(0, 200))}`, base);
  }
  return { reward: grader.passing_labels.includes(label) ? 1 : 0, errors: {}, scores: { label }, ...base };
}

// ------------------------------------------------------------------------------------ leaf graders

/** The input and reference templates of a string_check or text_similarity grader, rendered. */
function renderPair(grader: { input: string; reference: string }, ctx: TemplateContext): { input: string; reference: string } | { error: LeafOutcome } {
  try {
    return { input: renderTemplate(grader.input, ctx), reference: renderTemplate(grader.reference, ctx) };
  } catch (err) {
    return { error: templateFailure(err) };
  }
}

async function runLeaf(grader: LeafGrader, ctx: TemplateContext, deps: GraderDeps): Promise<LeafOutcome> {
  switch (grader.type) {
    case 'string_check': {
      const rendered = renderPair(grader, ctx);
      if ('error' in rendered) return rendered.error;
      const { input, reference } = rendered;
      let pass: boolean;
      switch (grader.operation) {
        case 'eq':
          pass = input === reference;
          break;
        case 'ne':
          pass = input !== reference;
          break;
        case 'like':
          pass = input.includes(reference);
          break;
        case 'ilike':
          pass = input.toLowerCase().includes(reference.toLowerCase());
          break;
      }
      return outcome(pass ? 1 : 0);
    }
    case 'text_similarity': {
      const rendered = renderPair(grader, ctx);
      if ('error' in rendered) return rendered.error;
      const { input, reference } = rendered;
      const metric = grader.evaluation_metric;
      let score: number;
      if (metric === 'cosine') {
        if (!deps.embed) return failed({ other_error: true }, 'cosine needs an embeddings model, which this server does not serve');
        try {
          const [a, b] = await deps.embed([input, reference]);
          score = cosineSimilarity(a, b);
        } catch (err) {
          return failed({ other_error: true }, `embedding failed: ${(err as Error).message}`);
        }
      } else score = textSimilarity(metric, input, reference);
      return withThreshold(outcome(score, { [metric]: score }), grader.pass_threshold);
    }
    case 'python': {
      const item = ctx.item === undefined ? {} : ctx.item;
      const sample = { ...ctx.sample, output_json: ctx.sample.output_json ?? null };
      const result = await runPythonSandbox({ mode: 'grade', source: grader.source, sample, item }, deps.python);
      if (result.ok) return withThreshold(outcome(result.score), grader.pass_threshold);
      if (result.kind === 'server') {
        return failed({ python_grader_server_error: true, python_grader_server_error_type: 'sandbox_unavailable' }, result.error);
      }
      return failed({ python_grader_runtime_error: true, python_grader_runtime_error_details: result.error }, 'the python grader failed');
    }
    case 'score_model':
      return runScoreModel(grader, ctx, deps);
    case 'label_model':
      return runLabelModel(grader, ctx, deps);
  }
}

function mergeErrors(into: GraderErrors, from: Partial<GraderErrors>): void {
  for (const [key, value] of Object.entries(from) as [keyof GraderErrors, unknown][]) {
    if (value === true) (into as unknown as Record<string, unknown>)[key] = true;
    else if (typeof value === 'string' && (into[key] === null || into[key] === false)) (into as unknown as Record<string, unknown>)[key] = value;
  }
}

function mergeUsage(into: Record<string, TokenUsage>, from: Record<string, TokenUsage>): void {
  for (const [model, u] of Object.entries(from)) {
    const t = (into[model] ??= { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0, cached_tokens: 0 });
    t.prompt_tokens += u.prompt_tokens;
    t.completion_tokens += u.completion_tokens;
    t.total_tokens += u.total_tokens;
    t.cached_tokens += u.cached_tokens;
  }
}

const totalTokens = (usage: Record<string, TokenUsage>) => {
  const models = Object.values(usage);
  return models.length ? models.reduce((n, u) => n + u.total_tokens, 0) : null;
};

/**
 * Grades `input.modelSample` (with `input.item`) with `grader`, of the route schema's shape; throws a
 * 400 ApiError for a grader that breaks a rule across its fields.
 */
export async function runGrader(grader: Grader, input: GraderInput, deps: GraderDeps = {}): Promise<RunGraderResponse> {
  const started = performance.now();
  const g = validateGrader(grader, { embeddings: !!deps.embed, python: deps.python });
  const ctx: TemplateContext = { item: input.item ?? {}, sample: sampleFrom(input.modelSample) };
  const errors = noErrors();
  const usage: Record<string, TokenUsage> = {};
  const seconds = () => (performance.now() - started) / 1000;

  if (g.type !== 'multi') {
    const result = await runLeaf(g, ctx, deps);
    mergeErrors(errors, result.errors);
    mergeUsage(usage, result.usage);
    return {
      reward: result.reward,
      metadata: {
        name: g.name,
        type: g.type,
        errors,
        execution_time: seconds(),
        scores: result.scores,
        token_usage: totalTokens(usage),
        sampled_model_name: result.sampledModel,
      },
      sub_rewards: {},
      model_grader_token_usage_per_model: usage,
    };
  }

  const subs = Object.entries(multiGraders(g));
  const results = await Promise.all(subs.map(([, sub]) => runLeaf(sub, ctx, deps)));
  const subRewards: Record<string, number> = {};
  const scores: Record<string, unknown> = {};
  const models = new Set<string>();
  subs.forEach(([key], i) => {
    const r = results[i];
    subRewards[key] = r.reward;
    scores[key] = r.reward;
    if (typeof r.scores.error === 'string') scores[`${key}_error`] = r.scores.error;
    mergeErrors(errors, r.errors);
    mergeUsage(usage, r.usage);
    if (r.sampledModel) models.add(r.sampledModel);
  });
  let reward = 0;
  try {
    reward = evaluateFormula(parseFormula(g.calculate_output), subRewards);
  } catch (err) {
    if (!(err instanceof FormulaEvalError)) throw err;
    errors.other_error = true;
    scores.formula_error = err.message;
  }
  return {
    reward,
    metadata: {
      name: g.name,
      type: 'multi',
      errors,
      execution_time: seconds(),
      scores,
      token_usage: totalTokens(usage),
      sampled_model_name: models.size === 1 ? [...models][0] : null,
    },
    sub_rewards: subRewards,
    model_grader_token_usage_per_model: usage,
  };
}

