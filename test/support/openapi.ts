// Validates response bodies against OpenAI's spec (spec/openai-openapi.json). The spec mixes
// OpenAPI 3.0 keywords into 3.1, so schemas are normalised for Ajv's 2020-12 draft first:
// `nullable: true` → a null alternative, boolean exclusiveMinimum/Maximum → numeric, vendor
// keywords ignored (strict: false), formats not checked (unixtime, binary… are not JSON Schema).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';

const SPEC_PATH = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../spec/openai-openapi.json');

type Json = any;

/**
 * Where tuneforge knowingly differs from the schemas, each for a reason:
 * - FineTuningJob.status: pause answers `paused`, which OpenAI's own pause example returns but its
 *   status enum lacks.
 * - ListFilesResponse.first_id/last_id: null for an empty list, as in every other list schema of the
 *   spec (an empty list has no first id).
 * - CreateCompletionStreamChunk (not in the spec): CreateCompletionResponse says streamed chunks share
 *   its shape, but OpenAI streams `finish_reason: null` until a choice's last chunk, as its chat chunk
 *   schema says. Streamed completions are checked against this copy, where null is allowed.
 */
function applyKnownDeviations(schemas: Record<string, Json>) {
  schemas.FineTuningJob.properties.status.enum.push('paused');
  for (const key of ['first_id', 'last_id']) schemas.ListFilesResponse.properties[key].type = ['string', 'null'];
  const chunk = structuredClone(schemas.CreateCompletionResponse);
  const finishReason = chunk.properties.choices.items.properties.finish_reason;
  chunk.properties.choices.items.properties.finish_reason = { ...finishReason, type: ['string', 'null'], enum: [...finishReason.enum, null] };
  schemas.CreateCompletionStreamChunk = chunk;
}

const isOnlyNullable = (s: Json) =>
  s && typeof s === 'object' && s.nullable === true && Object.keys(s).every((k) => k === 'nullable' || k === 'description');

function normalise(node: Json): Json {
  if (Array.isArray(node)) return node.map(normalise);
  if (!node || typeof node !== 'object') return node;
  const out: Json = {};
  for (const [k, v] of Object.entries(node)) out[k] = normalise(v);

  for (const [bound, keyword] of [
    ['minimum', 'exclusiveMinimum'],
    ['maximum', 'exclusiveMaximum'],
  ] as const) {
    if (typeof out[keyword] === 'boolean') {
      if (out[keyword] && typeof out[bound] === 'number') {
        out[keyword] = out[bound];
        delete out[bound];
      } else delete out[keyword];
    }
  }

  // allOf: [X, {nullable: true}] means "X or null".
  if (Array.isArray(out.allOf) && out.allOf.some(isOnlyNullable)) {
    const rest = out.allOf.filter((s: Json) => !isOnlyNullable(s));
    delete out.allOf;
    return { ...out, anyOf: [{ allOf: rest }, { type: 'null' }] };
  }

  if (out.nullable === true) {
    delete out.nullable;
    if (Array.isArray(out.enum) && !out.enum.includes(null)) out.enum = [...out.enum, null];
    if (typeof out.type === 'string') out.type = [out.type, 'null'];
    else if (Array.isArray(out.type)) out.type = out.type.includes('null') ? out.type : [...out.type, 'null'];
    else return { anyOf: [out, { type: 'null' }] };
  } else if (out.nullable === false) delete out.nullable;
  return out;
}

let cached: { ajv: Ajv2020; spec: Json; schemas: Record<string, Json>; validators: Map<string, ValidateFunction> } | null = null;

function load() {
  if (cached) return cached;
  const spec = JSON.parse(fs.readFileSync(SPEC_PATH, 'utf8'));
  const schemas = normalise(spec.components.schemas);
  applyKnownDeviations(schemas);
  const ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: false });
  ajv.addSchema({ $id: 'openai', components: { schemas } });
  cached = { ajv, spec, schemas, validators: new Map() };
  return cached;
}

function validatorFor(schemaName: string): ValidateFunction {
  const { ajv, schemas, validators } = load();
  const known = validators.get(schemaName);
  if (known) return known;
  if (!schemas[schemaName]) throw new Error(`No schema ${schemaName} in the spec`);
  const compiled = ajv.compile({ $ref: `openai#/components/schemas/${schemaName}` });
  validators.set(schemaName, compiled);
  return compiled;
}

/** Asserts that `body` is valid for component schema `schemaName`. */
export function assertMatches(schemaName: string, body: unknown, context = ''): void {
  const validate = validatorFor(schemaName);
  if (!validate(body)) {
    assert.fail(
      `${context ? context + ': ' : ''}body does not match ${schemaName}:\n` +
        JSON.stringify(validate.errors?.slice(0, 5), null, 1) +
        `\nbody: ${JSON.stringify(body).slice(0, 1500)}`,
    );
  }
}

/** The component schema of an operation's JSON response, found from its method and path under /v1. */
export function responseSchemaName(method: string, urlPath: string, status: number): string | null {
  if (status >= 400) return 'ErrorResponse';
  const { spec } = load();
  const rel = urlPath.replace(/^\/v1/, '').split('?')[0];
  for (const [template, ops] of Object.entries<Json>(spec.paths)) {
    const pattern = new RegExp('^' + template.replace(/\{[^}]+\}/g, '[^/]+') + '$');
    if (!pattern.test(rel)) continue;
    const op = ops[method.toLowerCase()];
    if (!op) continue;
    const content = op.responses?.[String(status)]?.content ?? op.responses?.['200']?.content;
    const ref: string | undefined = content?.['application/json']?.schema?.$ref;
    return ref ? ref.replace('#/components/schemas/', '') : null;
  }
  throw new Error(`No operation ${method} ${rel} in the spec`);
}

/** Validates a recorded HTTP exchange against its operation's response schema (if JSON). */
export function assertResponseMatches(method: string, urlPath: string, status: number, body: unknown): string | null {
  const name = responseSchemaName(method, urlPath, status);
  if (name) assertMatches(name, body, `${method} ${urlPath} → ${status}`);
  return name;
}
