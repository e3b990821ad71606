// Checkpoints. A model checkpoint is what users get (PEFT adapter, or a full HF folder with the
// tokenizer files); a resume point is what the trainer needs to continue bit-for-bit: trainable
// tensors, AdamW moments and the step counter. Data order and dropout masks are pure functions of
// (seed, step), so the step is the whole data position and RNG state.

import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readSafetensors, writeSafetensors, type HostTensor } from '../io/safetensors.ts';
import { saveHfModel } from '../io/hf-model.ts';
import { savePeftAdapter } from '../io/peft.ts';
import type { TrainSpec } from '../contract.ts';
import { freshOptimizerState, type OptimizerState } from './runner.ts';
import type { ModelSetup } from './step.ts';

const STATE_FILE = 'trainer_state.json';
const TENSORS_FILE = 'optimizer.safetensors';
const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json', 'chat_template.jinja'];

export interface ResumeMeta {
  step: number;
  /** A fingerprint of the spec, so a resume point is not applied to a different job. */
  fingerprint: string;
  [k: string]: unknown;
}

const tensorOf = (setup: ModelSetup, name: string, data: Float32Array): HostTensor => ({ shape: [...setup.shapes.get(name)!], data });

export function saveResumePoint(dir: string, setup: ModelSetup, state: OptimizerState, meta: ResumeMeta): void {
  mkdirSync(dir, { recursive: true });
  const tensors = new Map<string, HostTensor>();
  for (const n of setup.trainable) {
    tensors.set(`param/${n}`, tensorOf(setup, n, state.params.get(n)!));
    tensors.set(`m/${n}`, tensorOf(setup, n, state.m.get(n)!));
    tensors.set(`v/${n}`, tensorOf(setup, n, state.v.get(n)!));
  }
  writeSafetensors(join(dir, TENSORS_FILE), tensors);
  writeFileSync(join(dir, STATE_FILE), JSON.stringify({ ...meta, step: state.step }, null, 2) + '\n');
}

/** What defines a job's training run: a resume point written for another spec must not be applied. */
export function specFingerprint(spec: TrainSpec): string {
  const { baseModelDir, initialAdapterDir, trainingFile, validationFile, hyperparameters, seed, lora, method, grader, maxCompletionTokens } = spec;
  const { trainOnInputs, contextLength, schedule, optimizer, nCheckpoints, nEvals, earlyStoppingPatience } = spec;
  const inputs = spec.inputNames ? { inputNames: spec.inputNames } : { baseModelDir, initialAdapterDir, trainingFile, validationFile };
  const json = JSON.stringify({
    ...inputs, hyperparameters, seed, lora, method, grader, maxCompletionTokens,
    trainOnInputs, contextLength, schedule, optimizer, nCheckpoints, nEvals, earlyStoppingPatience,
  });
  return createHash('sha256').update(json).digest('hex').slice(0, 16);
}

/** Where a run starts: the resume point `spec.resumeFrom`, or fresh AdamW state over `params`. */
export function startingState(spec: TrainSpec, setup: ModelSetup, params: Map<string, Float32Array>): { state: OptimizerState; meta: ResumeMeta | null } {
  return spec.resumeFrom ? loadResumePoint(spec.resumeFrom, setup, spec) : { state: freshOptimizerState(params), meta: null };
}

/** Reads the resume point in `dir`, refusing one written for a different spec. */
function loadResumePoint(dir: string, setup: ModelSetup, spec: TrainSpec): { state: OptimizerState; meta: ResumeMeta } {
  const meta = JSON.parse(readFileSync(join(dir, STATE_FILE), 'utf8')) as ResumeMeta;
  // One written before inputs had names (by the paths alone) still continues on the host that wrote it.
  const written = [specFingerprint(spec), specFingerprint({ ...spec, inputNames: undefined })];
  if (!written.includes(meta.fingerprint)) throw new Error(`${dir} was written for a different job`);
  const { tensors } = readSafetensors(join(dir, TENSORS_FILE));
  const get = (k: string) => {
    const t = tensors.get(k);
    if (!t) throw new Error(`${dir}: resume point lacks ${k}`);
    return t.data;
  };
  const state: OptimizerState = { step: meta.step, params: new Map(), m: new Map(), v: new Map() };
  for (const n of setup.trainable) {
    state.params.set(n, get(`param/${n}`));
    state.m.set(n, get(`m/${n}`));
    state.v.set(n, get(`v/${n}`));
  }
  return { state, meta };
}

/** A usable model: PEFT adapter (LoRA) or a full HF folder with the base model's tokenizer files. */
export function saveModelCheckpoint(
  dir: string,
  setup: ModelSetup,
  state: OptimizerState,
  base: { dir: string; rawConfig: Record<string, unknown> },
): void {
  const tensors = new Map(setup.trainable.map((n) => [n, tensorOf(setup, n, state.params.get(n)!)]));
  if (setup.lora) {
    const { rank, alpha, dropout, targetModules } = setup.lora;
    savePeftAdapter(dir, { baseModelName: base.dir, rank, alpha, dropout, targetModules }, tensors);
    return;
  }
  saveHfModel(dir, base.rawConfig, tensors);
  for (const f of TOKENIZER_FILES) if (existsSync(join(base.dir, f))) copyFileSync(join(base.dir, f), join(dir, f));
}
