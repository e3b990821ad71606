// Route schemas from OpenAI's own description of its API (spec/openai-openapi.json), so a request's
// shape is checked the way OpenAI documents it and a bad one is a 400 naming the param (errors.ts).
// The spec is OpenAPI 3.1 with 3.0 habits, so a component is turned into a plain JSON Schema for
// Fastify's Ajv first: $refs inlined, `nullable` → a null type, allOf parts merged into one object,
// tagged unions (a oneOf told apart by a `type` or `role` value) → one branch per tag value, so an
// error comes from the branch the request meant; documentation and vendor keywords dropped, and
// `default`s too (Ajv would write them into the body).
import { readFileSync } from 'node:fs';
import { Ajv } from 'ajv';

type Json = Record<string, any>;

const spec = JSON.parse(readFileSync(new URL('../../spec/openai-openapi.json', import.meta.url), 'utf8')) as Json;
const components = spec.components.schemas as Record<string, Json>;

/** Keywords that document or generate code, not validate (`format`: the spec's are not JSON Schema's). */
const DROPPED = new Set(['description', 'title', 'example', 'examples', 'default', 'deprecated', 'discriminator', 'format', 'readOnly', 'writeOnly', 'externalDocs']);

/**
 * The validators of route schemas. Text (query strings, path params, form fields) is coerced to its
 * declared types; JSON bodies are not (a string where a number belongs is a 400). Unknown keys are an
 * error, never silently dropped.
 */
export const textAjv = new Ajv({ coerceTypes: 'array', useDefaults: true, removeAdditional: false, strict: false });
export const jsonAjv = new Ajv({ coerceTypes: false, useDefaults: true, removeAdditional: false, strict: false });

export interface SchemaPatch {
  /** Replaces these top-level properties' schemas (where tuneforge accepts more, or less, than the spec says). */
  properties?: Record<string, Json>;
}

/**
 * The request body schema of a spec component (e.g. CreateChatCompletionRequest): its properties,
 * the spec's required ones, and no others (an unknown one is a 400 `unknown_parameter`).
 */
export function specRequestSchema(component: string, patch: SchemaPatch = {}): Json {
  const schema = plain({ $ref: `#/components/schemas/${component}` }, []);
  if (schema.type !== 'object' || !schema.properties) throw new Error(`${component} is not an object schema`);
  return { ...schema, properties: { ...schema.properties, ...patch.properties }, additionalProperties: false };
}

/** `node` as plain JSON Schema; `refs` are the components being inlined (a recursive one stops there, as any value). */
function plain(node: unknown, refs: string[]): any {
  if (Array.isArray(node)) return node.map((n) => plain(n, refs));
  if (!node || typeof node !== 'object') return node;
  const n = node as Json;
  if (typeof n.$ref === 'string') {
    const name = n.$ref.split('/').pop()!;
    return refs.includes(name) ? {} : plain(components[name], [...refs, name]);
  }
  let out: Json = {};
  for (const [key, value] of Object.entries(n)) {
    if (DROPPED.has(key) || key.startsWith('x-')) continue;
    // Property names are data, not keywords: keep them all.
    out[key] = key === 'properties' ? Object.fromEntries(Object.entries(value as Json).map(([k, v]) => [k, plain(v, refs)])) : plain(value, refs);
  }
  out = withoutNullable(out);
  if (Array.isArray(out.allOf)) out = mergedAllOf(out);
  if (Array.isArray(out.anyOf)) out = simpleNullable(out);
  if (Array.isArray(out.oneOf)) out = taggedUnion(out);
  return out;
}

/** OpenAPI 3.0's `nullable: true` and boolean exclusive bounds, in JSON Schema's words. */
function withoutNullable(node: Json): Json {
  const out = { ...node };
  for (const [bound, keyword] of [['minimum', 'exclusiveMinimum'], ['maximum', 'exclusiveMaximum']] as const) {
    if (typeof out[keyword] !== 'boolean') continue;
    if (out[keyword] && typeof out[bound] === 'number') {
      out[keyword] = out[bound];
      delete out[bound];
    } else delete out[keyword];
  }
  if (out.nullable !== true) {
    delete out.nullable;
    return out;
  }
  delete out.nullable;
  if (Array.isArray(out.enum) && !out.enum.includes(null)) out.enum = [...out.enum, null];
  if (typeof out.type === 'string') out.type = [out.type, 'null'];
  else if (Array.isArray(out.type)) out.type = out.type.includes('null') ? out.type : [...out.type, 'null'];
  else return { anyOf: [out, { type: 'null' }] };
  return out;
}

/** allOf parts that are all objects: one object with every part's properties and required ones. */
function mergedAllOf(node: Json): Json {
  const { allOf, ...rest } = node;
  const parts = allOf as Json[];
  if (!parts.every((p) => p.type === 'object' || (p.properties && !p.type))) return node;
  const merged: Json = { ...rest, type: 'object', properties: {} };
  const required = new Set<string>();
  for (const part of parts) {
    Object.assign(merged.properties, part.properties);
    for (const name of part.required ?? []) required.add(name);
  }
  if (required.size > 0) merged.required = [...required];
  return merged;
}

/** anyOf [X, null] with X of one simple type: X with null added to its type, so errors name X's rule. */
function simpleNullable(node: Json): Json {
  const { anyOf, ...rest } = node;
  const branches = anyOf as Json[];
  const others = branches.filter((b) => !(b.type === 'null' && Object.keys(b).length === 1));
  if (others.length !== 1 || branches.length !== 2 || typeof others[0].type !== 'string' || others[0].anyOf || others[0].oneOf) return node;
  const only = others[0];
  return { ...rest, ...only, type: [only.type, 'null'], ...(Array.isArray(only.enum) ? { enum: [...only.enum, null] } : {}) };
}

/** The property whose constant value tells a oneOf's object branches apart (each requires it), if there is one. */
function tagOf(branches: Json[]): string | null {
  if (!branches.every((b) => b.type === 'object' && b.properties)) return null;
  const first = branches[0];
  for (const name of Object.keys(first.properties)) {
    if (!branches.every((b) => Array.isArray(b.required) && b.required.includes(name))) continue;
    const values = branches.map((b) => tagValues(b.properties[name]));
    if (values.every((v) => v !== null) && new Set(values.flat()).size === values.flat().length) return name;
  }
  return null;
}

function tagValues(schema: Json | undefined): unknown[] | null {
  if (!schema) return null;
  if ('const' in schema) return [schema.const];
  if (Array.isArray(schema.enum) && schema.enum.length > 0 && schema.enum.every((v: unknown) => typeof v === 'string')) return schema.enum;
  return null;
}

/**
 * A oneOf of objects told apart by one property (a `type`, a `role`): the tag is checked first
 * (naming every allowed value), then only the branch that tag selects.
 */
function taggedUnion(node: Json): Json {
  const { oneOf, ...rest } = node;
  const branches = oneOf as Json[];
  const tag = tagOf(branches);
  if (!tag) return node;
  const values = branches.flatMap((b) => tagValues(b.properties[tag])!);
  return {
    ...rest,
    type: 'object',
    required: [tag],
    properties: { [tag]: { enum: values } },
    allOf: branches.map((branch) => ({ if: { properties: { [tag]: { enum: tagValues(branch.properties[tag]) } } }, then: branch })),
  };
}

/** A text grader model's message content: a string, a text part, or a list of them (tuneforge's models read text only). */
const TEXT_PART_TYPE = { enum: ['input_text', 'output_text'] };
const TEXT_PART = {
  type: 'object',
  required: ['type'],
  properties: { type: TEXT_PART_TYPE, text: { type: 'string' } },
  // The rest for text parts only: an image part is told its type is wrong, not that it lacks text.
  if: { properties: { type: TEXT_PART_TYPE } },
  then: { required: ['text'], properties: { type: true, text: true }, additionalProperties: false },
};
const TEXT_CONTENT_ITEM = { type: ['string', 'object'], if: { type: 'object' }, then: TEXT_PART };
const NON_EMPTY = { type: 'string', minLength: 1 };
const LABELS = { type: 'array', minItems: 1, uniqueItems: true, items: NON_EMPTY };

/**
 * A grader object (RunGraderRequest's grader, a job's reinforcement grader): the spec's grader
 * components closed (an unknown key is a 400 naming it), with what tuneforge accepts beyond them
 * written in: pass_threshold, multi.graders as a map name → grader (OpenAI's API; the spec types it
 * as one grader, which stays accepted), label_model at the top (graders/validate.ts refuses it there
 * with its reason), text-only model inputs, and limits the spec states in words (temperature, top_p).
 * Rules across fields (templates, formulas, labels, ranges) are graders/validate.ts's.
 */
export function graderSchema(): Json {
  const closed = (component: string, properties: Json = {}): Json => {
    const schema = plain({ $ref: `#/components/schemas/${component}` }, []);
    return { ...schema, properties: { ...schema.properties, ...properties }, additionalProperties: false };
  };
  const message = closed('EvalItem', {
    content: { type: ['string', 'object', 'array'], if: { type: 'array' }, then: { items: TEXT_CONTENT_ITEM }, else: TEXT_CONTENT_ITEM },
  });
  message.required = ['role', 'content'];
  const input = { type: 'array', minItems: 1, items: message };
  const passThreshold = { type: 'number' };
  const scoreModel = closed('GraderScoreModel', { model: NON_EMPTY, input, range: { type: 'array', items: { type: 'number' }, minItems: 2, maxItems: 2 }, pass_threshold: passThreshold });
  const sampling = scoreModel.properties.sampling_params;
  scoreModel.properties.sampling_params = {
    ...sampling,
    type: ['object', 'null'],
    properties: {
      ...sampling.properties,
      temperature: { type: ['number', 'null'], minimum: 0, maximum: 2 },
      top_p: { type: ['number', 'null'], exclusiveMinimum: 0, maximum: 1 },
    },
    additionalProperties: false,
  };
  const leaves = [
    closed('GraderStringCheck'),
    closed('GraderTextSimilarity', { pass_threshold: passThreshold }),
    closed('GraderPython', { source: NON_EMPTY, pass_threshold: passThreshold }),
    scoreModel,
    closed('GraderLabelModel', { model: NON_EMPTY, input, labels: LABELS, passing_labels: LABELS }),
  ];
  const subGrader = taggedUnion({ oneOf: leaves });
  const multi = closed('GraderMulti', {
    graders: { type: 'object', if: { required: ['type'] }, then: subGrader, else: { minProperties: 1, additionalProperties: subGrader } },
  });
  return taggedUnion({ oneOf: [...leaves, multi] });
}
