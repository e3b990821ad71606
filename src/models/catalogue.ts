// What a model name means, for every use of one (inference, export, job creation, training): a
// base model folder of MODELS_DIR, an organization's fine-tuned model (a PEFT adapter over its
// parent, or full weights), a checkpoint `…:ckpt-step-N` (a job's final one carries the model's own
// name), or a checkpoint another organization shared through permissions. Each use decides what it
// accepts (export refuses base models and shared checkpoints) from
// the entry's kind and folders; none of them looks a name up on its own.
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { parseFineTunedModelName } from '../domain/naming.ts';
import { readChatTemplate, type ModelSourceMessage } from '../engine/index.ts';
import { findBaseModel } from './base-models.ts';
import type { Store } from '../store/index.ts';

export interface CatalogueModel {
  /** The name asked for. */
  name: string;
  kind: 'base' | 'fine-tuned' | 'checkpoint';
  /** The organization it belongs to (null: a base model, everyone's). */
  owner: string | null;
  /** Reached through a permission another organization granted (a checkpoint only). */
  shared: boolean;
  /** The model it was trained from (null: a base model). */
  parent: string | null;
  /** The Hugging Face folder with the full weights it runs on: its own, or (an adapter) its parent's. */
  modelDir: string;
  /** A LoRA adapter applied over modelDir; null when modelDir holds the model's own weights. */
  adapterDir: string | null;
  /** The chat template (tokenizer_config.json or chat_template.jinja), null when there is none. */
  chatTemplate: string | null;
}

export type ModelNotFoundReason =
  /** No such model, or not one this organization may use. */
  | 'unknown'
  /** Its weights are gone (or were never stored). */
  | 'no_weights'
  /** An adapter whose parent model is no longer available. */
  | 'parent_unavailable';

export class ModelNotFoundError extends Error {
  override readonly name = 'ModelNotFoundError';

  constructor(
    readonly model: string,
    readonly reason: ModelNotFoundReason,
    /** The parent that is gone (reason parent_unavailable). */
    readonly parent: string | null = null,
  ) {
    const why = {
      unknown: 'does not exist or you do not have access to it',
      no_weights: 'has no stored weights',
      parent_unavailable: `cannot be used: its base model '${parent ?? 'unknown'}' is no longer available`,
    }[reason];
    super(`The model '${model}' ${why}.`);
  }
}

/**
 * How the inference host loads a model: `key` names its weights (one loaded copy per key); base
 * models and adapters share one resident base in the worker, a full fine-tune gets its own copy.
 */
export function inferenceSource(model: CatalogueModel): { key: string; source: ModelSourceMessage; shareBase: boolean } {
  const { modelDir, adapterDir } = model;
  return {
    key: adapterDir ?? modelDir,
    source: { baseModelDir: modelDir, ...(adapterDir ? { adapterDir } : {}) },
    shareBase: model.kind === 'base' || adapterDir !== null,
  };
}

export class ModelCatalogue {
  constructor(
    private readonly store: Store,
    private readonly modelsDir: string,
  ) {}

  /**
   * The model `name` as `organization` may use it (undefined: any organization's, for the
   * operator's own tools); a ModelNotFoundError otherwise.
   */
  async resolve(name: string, organization?: string): Promise<CatalogueModel> {
    const base = await findBaseModel(this.modelsDir, name);
    if (base) return { name, kind: 'base', owner: null, shared: false, parent: null, modelDir: base.dir, adapterDir: null, chatTemplate: chatTemplateOf(base.dir) };
    const tuned = await this.store.models.get(name, organization);
    if (tuned) return this.trained(name, 'fine-tuned', tuned.organization_id, false, tuned.base_model, tuned.dir);
    const checkpoint = await this.store.checkpoints.getByName(name);
    if (checkpoint) {
      const own = organization === undefined || checkpoint.organization_id === organization;
      if (own || (await this.store.permissions.find(name, organization!))) {
        const parent = (await this.store.jobs.get(checkpoint.job_id))?.model ?? parseFineTunedModelName(name)?.base ?? null;
        return this.trained(name, 'checkpoint', checkpoint.organization_id, !own, parent, checkpoint.dir);
      }
    }
    throw new ModelNotFoundError(name, 'unknown');
  }

  /** resolve, with null for a model that is not found. */
  async find(name: string, organization?: string): Promise<CatalogueModel | null> {
    try {
      return await this.resolve(name, organization);
    } catch (error) {
      if (error instanceof ModelNotFoundError) return null;
      throw error;
    }
  }

  /**
   * Weights in `dir` (a PEFT adapter or a full Hugging Face folder) trained from `parent`. An adapter
   * runs over the full weights it was trained on: its parent's folder when that is a base model,
   * otherwise the folder its adapter_config.json records (a job tuning a tuned model keeps its own
   * links to those weights, so the parent's deletion does not take them away).
   */
  private async trained(name: string, kind: CatalogueModel['kind'], owner: string, shared: boolean, parent: string | null, dir: string | null): Promise<CatalogueModel> {
    const entry = { name, kind, owner, shared, parent };
    if (dir && existsSync(path.join(dir, 'adapter_config.json'))) {
      const parentDir = (parent ? (await findBaseModel(this.modelsDir, parent))?.dir : undefined) ?? recordedBaseDir(dir);
      if (!parentDir) throw new ModelNotFoundError(name, 'parent_unavailable', parent);
      return { ...entry, modelDir: parentDir, adapterDir: dir, chatTemplate: chatTemplateOf(parentDir) };
    }
    if (dir && existsSync(path.join(dir, 'config.json'))) return { ...entry, modelDir: dir, adapterDir: null, chatTemplate: chatTemplateOf(dir) };
    throw new ModelNotFoundError(name, 'no_weights');
  }
}

/**
 * Bytes of the model's weights (its folder's and its adapter's .safetensors): the memory a worker
 * needs to hold a job on it when the engine has no estimate yet. Null when no weights are found here.
 */
export function modelWeightBytes(model: Pick<CatalogueModel, 'modelDir' | 'adapterDir'>): number | null {
  let bytes = 0;
  for (const dir of [model.modelDir, model.adapterDir]) {
    if (!dir || !existsSync(dir)) continue;
    for (const name of readdirSync(dir)) if (name.endsWith('.safetensors')) bytes += statSync(path.join(dir, name)).size;
  }
  return bytes > 0 ? bytes : null;
}

/** A folder's chat template; null too when its tokenizer_config.json does not parse (loading the model says why). */
function chatTemplateOf(dir: string): string | null {
  try {
    return readChatTemplate(dir);
  } catch {
    return null;
  }
}

/** The base folder an adapter records it was trained on, while that folder is still there. */
function recordedBaseDir(adapterDir: string): string | null {
  try {
    const recorded = (JSON.parse(readFileSync(path.join(adapterDir, 'adapter_config.json'), 'utf8')) as { base_model_name_or_path?: unknown }).base_model_name_or_path;
    return typeof recorded === 'string' && existsSync(path.join(recorded, 'config.json')) ? recorded : null;
  } catch {
    return null;
  }
}
