// Names and ids handed out by the service: object ids, fine-tuned model names, checkpoint names.
import { createHash, randomBytes } from 'node:crypto';

export type IdPrefix = 'file-' | 'ftjob-' | 'ftevent-' | 'ftckpt_' | 'upload_' | 'part_' | 'cp_' | 'evt_';

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const ID_BODY_LENGTH = 24; // 24 base62 chars ≈ 143 bits: collisions are not a concern
const SHORT_ID_LENGTH = 8;

/** `length` uniformly random base62 characters (bytes ≥ 248 are dropped so that `% 62` has no bias). */
function randomBase62(length: number): string {
  let out = '';
  while (out.length < length) {
    for (const byte of randomBytes(length * 2)) {
      if (byte < 248) out += BASE62[byte % 62];
      if (out.length === length) break;
    }
  }
  return out;
}

/** A new random, URL-safe, unique id such as `ftjob-3kTq…` (prefix + 24 base62 characters). */
export function newId(prefix: IdPrefix): string {
  return prefix + randomBase62(ID_BODY_LENGTH);
}

/** 8 base62 characters derived from the job id: stable for a job, unrelated-looking like OpenAI's. */
export function shortIdForJob(jobId: string): string {
  const digest = createHash('sha256').update(jobId).digest();
  let out = '';
  for (let i = 0; out.length < SHORT_ID_LENGTH; i++) out += BASE62[digest[i] % 62];
  return out;
}

export interface FineTunedModelNameParts {
  /** The base model that was tuned (the root base when a fine-tuned model was tuned again). */
  base: string;
  org: string;
  suffix: string | null;
  shortId: string;
  /** Set for a checkpoint name (`…:ckpt-step-N`), null for the final model. */
  step: number | null;
}

/**
 * `ft:{base}:{org}:{suffix}:{short}`, with an empty suffix segment when there is none
 * (`ft:base:org::abcd1234`). Tuning a fine-tuned model names the result after its root base model,
 * as OpenAI does.
 */
export function fineTunedModelName(base: string, org: string, suffix: string | null, jobId: string): string {
  const rootBase = parseFineTunedModelName(base)?.base ?? base;
  if (org.includes(':')) throw new Error(`organization id must not contain ':' (got ${JSON.stringify(org)})`);
  if (suffix !== null && suffix.includes(':')) throw new Error(`suffix must not contain ':' (got ${JSON.stringify(suffix)})`);
  return `ft:${rootBase}:${org}:${suffix ?? ''}:${shortIdForJob(jobId)}`;
}

/**
 * The name of the checkpoint at `step` of a fine-tuned model: `{fineTunedName}:ckpt-step-{step}`.
 * The last one becomes the model itself when its job succeeds, and takes the model's name then.
 */
export function checkpointModelName(fineTunedName: string, step: number): string {
  if (!Number.isInteger(step) || step < 0) throw new Error(`checkpoint step must be a non-negative integer (got ${step})`);
  return `${fineTunedName}:ckpt-step-${step}`;
}

const CHECKPOINT_SEGMENT = /^ckpt-step-(\d+)$/;

/**
 * Splits a fine-tuned model or checkpoint name; null when `name` is not one.
 * Parsed from the right so that a base model name may itself contain ':' (e.g. `llama3:8b`).
 */
export function parseFineTunedModelName(name: string): FineTunedModelNameParts | null {
  if (!name.startsWith('ft:')) return null;
  const segments = name.slice(3).split(':');
  let step: number | null = null;
  const checkpoint = CHECKPOINT_SEGMENT.exec(segments[segments.length - 1]);
  if (checkpoint) {
    step = Number(checkpoint[1]);
    segments.pop();
  }
  if (segments.length < 4) return null;
  const shortId = segments.pop()!;
  const suffix = segments.pop()!;
  const org = segments.pop()!;
  const base = segments.join(':');
  if (!base || !org || !shortId) return null;
  return { base, org, suffix: suffix === '' ? null : suffix, shortId, step };
}
