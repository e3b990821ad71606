// Grader templates, as OpenAI documents them: `{{item.field}}`, `{{item.a.b}}`, `{{item.list[0]}}`
// (or `item.list.0`), `{{sample.output_text}}`, `{{sample.output_json.x}}`, `{{sample.output_tools}}`.
// Whitespace inside the braces is allowed. Strings are inserted as they are; numbers, booleans and
// null as their JSON text; objects and arrays as JSON. Text outside `{{…}}` is kept verbatim.

/** The `sample` namespace built from a run's `model_sample` string. */
export interface Sample {
  output_text: string;
  /** The sample parsed as JSON, when it is valid JSON; otherwise undefined (a sample_parse_error on use). */
  output_json: unknown;
  output_tools: unknown[];
}

export interface TemplateContext {
  item: unknown;
  sample: Sample;
}

export const SAMPLE_FIELDS = ['output_text', 'output_json', 'output_tools'] as const;

/** A template that references something that is not there (or a sample that is not JSON). */
export class TemplateError extends Error {
  constructor(
    readonly kind: 'invalid_variable' | 'sample_parse',
    message: string,
  ) {
    super(message);
    this.name = 'TemplateError';
  }
}

const TEMPLATE = /\{\{([^{}]*)\}\}/g;

export function sampleFrom(modelSample: string): Sample {
  let outputJson: unknown = undefined;
  try {
    outputJson = JSON.parse(modelSample);
  } catch {
    // not JSON: output_json is absent
  }
  return { output_text: modelSample, output_json: outputJson, output_tools: [] };
}

/** A variable's path: `item.a[0].b` → ['item', 'a', '0', 'b']; null when it is not a path. */
export function parseVariable(expression: string): string[] | null {
  const text = expression.trim();
  if (!/^[A-Za-z_][A-Za-z0-9_]*(\s*(\.\s*[A-Za-z0-9_-]+|\[\s*(\d+|"[^"]*"|'[^']*')\s*\]))*$/.test(text)) return null;
  const parts: string[] = [];
  const re = /([A-Za-z_][A-Za-z0-9_]*)|\.\s*([A-Za-z0-9_-]+)|\[\s*(?:(\d+)|"([^"]*)"|'([^']*)')\s*\]/g;
  for (const m of text.matchAll(re)) parts.push(m[1] ?? m[2] ?? m[3] ?? m[4] ?? m[5]);
  return parts;
}

/**
 * Checks a template's variables without rendering it: every `{{…}}` must be a path in the `item`
 * namespace or a known `sample` field. Returns the problem as a sentence, or null.
 */
export function checkTemplate(template: string): string | null {
  for (const m of template.matchAll(TEMPLATE)) {
    const path = parseVariable(m[1]);
    if (!path) return `'{{${m[1]}}}' at character ${m.index! + 1} is not a variable such as {{item.field}} or {{sample.output_text}}`;
    const [ns, first] = path;
    if (ns !== 'item' && ns !== 'sample') {
      return `'{{${m[1].trim()}}}' at character ${m.index! + 1}: unknown namespace '${ns}' (expected 'item' or 'sample')`;
    }
    if (ns === 'sample' && (first === undefined || !(SAMPLE_FIELDS as readonly string[]).includes(first))) {
      return `'{{${m[1].trim()}}}' at character ${m.index! + 1}: the sample namespace has ${SAMPLE_FIELDS.join(', ')}`;
    }
  }
  return null;
}

function lookup(ctx: TemplateContext, path: string[], raw: string): unknown {
  const [ns, ...rest] = path;
  let value: unknown;
  if (ns === 'item') value = ctx.item;
  else if (ns === 'sample') {
    if (rest[0] === 'output_json' && ctx.sample.output_json === undefined) {
      throw new TemplateError('sample_parse', `{{${raw}}} needs the model sample to be valid JSON`);
    }
    value = ctx.sample;
  } else throw new TemplateError('invalid_variable', `unknown template namespace '${ns}' in {{${raw}}}`);
  for (const key of rest) {
    if (value !== null && typeof value === 'object' && Object.hasOwn(value, key)) {
      value = (value as Record<string, unknown>)[key];
    } else {
      throw new TemplateError('invalid_variable', `{{${raw}}}: '${key}' is not present`);
    }
  }
  if (value === undefined) throw new TemplateError('invalid_variable', `{{${raw}}} is not present`);
  return value;
}

/** The value a template variable names (for non-string uses); throws TemplateError. */
export function resolveVariable(expression: string, ctx: TemplateContext): unknown {
  const path = parseVariable(expression);
  if (!path) throw new TemplateError('invalid_variable', `'{{${expression}}}' is not a variable`);
  return lookup(ctx, path, expression.trim());
}

export function formatValue(value: unknown): string {
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/** Renders a template; throws TemplateError when a variable is missing or output_json is not JSON. */
export function renderTemplate(template: string, ctx: TemplateContext): string {
  return template.replace(TEMPLATE, (_whole, expression: string) => formatValue(resolveVariable(expression, ctx)));
}
