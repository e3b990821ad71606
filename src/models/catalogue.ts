// What a model name means, for every use of one (inference, export, job creation, training): a
// base model (a folder of MODELS_DIR, or on a host without it the store's base-models/<name>/), an
// organization's fine-tuned model (a PEFT adapter over its parent, or full weights), a checkpoint
// `…:ckpt-step-N` (a job's final one carries the model's own name), or a checkpoint another
// organization shared through permissions. Each use decides what it accepts (export refuses base
// models and shared checkpoints) from the entry's kind; none of them looks a name up on its own.
// Entries name weights by blob key (a prefix of the blob store); `open` makes them folders on this
// host, through the blob cache (no copy with the local store, nor for MODELS_DIR's bases).
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { parseFineTunedModelName } from '../domain/naming.ts';
import { readChatTemplate, type ModelSourceMessage } from '../engine/index.ts';
import { findBaseModel } from './base-models.ts';
import { blobKeys, type BlobLease, type Store } from '../store/index.ts';

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
  /** Blob key of the Hugging Face folder with the full weights it runs on: its own, or (an adapter) its parent's. */
  weights: string;
  /** Blob key of a LoRA adapter applied over `weights`; null when `weights` are the model's own. */
  adapter: string | null;
}

/** The model's folders on this host. */
export interface LocalModelFiles {
  modelDir: string;
  adapterDir: string | null;
}

/** A model's folders, kept on this host (out of the cache's eviction) until `release`. */
export interface OpenedModel extends LocalModelFiles {
  release(): void;
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
export function inferenceSource(model: CatalogueModel, files: LocalModelFiles): { key: string; source: ModelSourceMessage; shareBase: boolean } {
  const { modelDir, adapterDir } = files;
  return {
    key: inferenceKey(model),
    source: { baseModelDir: modelDir, ...(adapterDir ? { adapterDir } : {}) },
    shareBase: model.kind === 'base' || model.adapter !== null,
  };
}

/** What names a model's weights for loading: one loaded copy per key. */
export const inferenceKey = (model: CatalogueModel) => model.adapter ?? model.weights;

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
    if (await this.isBaseModel(name)) return { name, kind: 'base', owner: null, shared: false, parent: null, weights: blobKeys.baseModel(name), adapter: null };
    const tuned = await this.store.models.get(name, organization);
    if (tuned) return this.trained(name, 'fine-tuned', tuned.organization_id, false, tuned.base_model, tuned.job_id, tuned.dir);
    const checkpoint = await this.store.checkpoints.getByName(name);
    if (checkpoint) {
      const own = organization === undefined || checkpoint.organization_id === organization;
      if (own || (await this.store.permissions.find(name, organization!))) {
        const parent = (await this.store.jobs.get(checkpoint.job_id))?.model ?? parseFineTunedModelName(name)?.base ?? null;
        return this.trained(name, 'checkpoint', checkpoint.organization_id, !own, parent, checkpoint.job_id, checkpoint.dir);
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

  /** The model's folders on this host, pulled into the blob cache unless they are here already; release them once done. */
  async open(model: CatalogueModel): Promise<OpenedModel> {
    const lease = this.store.cache.lease();
    try {
      return { modelDir: await this.localDir(model.weights, lease), adapterDir: model.adapter && (await this.localDir(model.adapter, lease)), release: () => lease.release() };
    } catch (error) {
      lease.release();
      throw error;
    }
  }

  /** A blob prefix as a local folder held by `lease`; a base model from MODELS_DIR when this host has it. */
  async localDir(key: string, lease: BlobLease): Promise<string> {
    const base = BASE_KEY.exec(key);
    const local = base && (await findBaseModel(this.modelsDir, base[1]));
    return local ? local.dir : lease.dir(key);
  }

  /** A base model: a folder of MODELS_DIR, or one an operator put in the store for hosts without it. */
  private async isBaseModel(name: string): Promise<boolean> {
    if (await findBaseModel(this.modelsDir, name)) return true;
    return BASE_KEY.test(blobKeys.baseModel(name)) && (await this.store.blobs.size(`${blobKeys.baseModel(name)}/config.json`)) !== null;
  }

  /**
   * Weights under the key `dir` (a PEFT adapter or a full Hugging Face folder) trained from `parent`
   * by job `jobId`. An adapter runs over the full weights it was trained on: its parent's when that
   * is a base model, otherwise those its job's start record names (a job tuning a tuned model keeps
   * its own copy of them, so the parent's deletion does not take them away).
   */
  private async trained(name: string, kind: CatalogueModel['kind'], owner: string, shared: boolean, parent: string | null, jobId: string, dir: string | null): Promise<CatalogueModel> {
    const entry = { name, kind, owner, shared, parent };
    const has = async (file: string) => dir !== null && (await this.store.blobs.size(`${dir}/${file}`)) !== null;
    if (await has('adapter_config.json')) {
      const weights = parent && (await this.isBaseModel(parent)) ? blobKeys.baseModel(parent) : await this.startWeights(jobId, dir!);
      if (!weights) throw new ModelNotFoundError(name, 'parent_unavailable', parent);
      return { ...entry, weights, adapter: dir };
    }
    if (await has('config.json')) return { ...entry, weights: dir!, adapter: null };
    throw new ModelNotFoundError(name, 'no_weights');
  }

  /**
   * The full weights job `jobId` trained its adapter over, as its start record names them; for an
   * adapter trained before start records, the folder its adapter_config.json records (a path under
   * MODELS_DIR or the job's own start/weights, which the upgrade moved into the store).
   */
  private async startWeights(jobId: string, adapterKey: string): Promise<string | null> {
    const start = await readJsonBlob<{ weights?: unknown }>(this.store, blobKeys.jobStartRecord(jobId));
    const key = typeof start?.weights === 'string'
      ? start.weights
      : legacyWeightsKey((await readJsonBlob<{ base_model_name_or_path?: unknown }>(this.store, `${adapterKey}/adapter_config.json`))?.base_model_name_or_path, this.modelsDir);
    if (!key) return null;
    const base = BASE_KEY.exec(key);
    if (base) return (await this.isBaseModel(base[1])) ? key : null;
    return (await this.store.blobs.size(`${key}/config.json`)) !== null ? key : null;
  }
}

const BASE_KEY = /^base-models\/([A-Za-z0-9][A-Za-z0-9._-]*)$/;

/** A recorded local folder as the blob key it is now: MODELS_DIR/<name>, or …/jobs/<id>/<rest> (moved into the store). */
export function legacyWeightsKey(recorded: unknown, modelsDir: string): string | null {
  if (typeof recorded !== 'string') return null;
  if (path.dirname(recorded) === modelsDir) return blobKeys.baseModel(path.basename(recorded));
  const job = /\/jobs\/([^/]+\/.+)$/.exec(recorded);
  return job ? `jobs/${job[1]}` : null;
}

/** A small JSON blob, parsed; null when it is missing or does not parse. */
export async function readJsonBlob<T>(store: Store, key: string): Promise<T | null> {
  try {
    const chunks: Buffer[] = [];
    for await (const chunk of store.blobs.read(key)) chunks.push(chunk as Buffer);
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as T;
  } catch {
    return null;
  }
}

/**
 * Bytes of the model's weights (its folder's and its adapter's .safetensors): the memory a worker
 * needs to hold a job on it when the engine has no estimate yet. Null when no weights are found here.
 */
export function modelWeightBytes(model: LocalModelFiles): number | null {
  let bytes = 0;
  for (const dir of [model.modelDir, model.adapterDir]) {
    if (!dir || !existsSync(dir)) continue;
    for (const name of readdirSync(dir)) if (name.endsWith('.safetensors')) bytes += statSync(path.join(dir, name)).size;
  }
  return bytes > 0 ? bytes : null;
}

/** A folder's chat template; null too when its tokenizer_config.json does not parse (loading the model says why). */
export function chatTemplateOf(dir: string): string | null {
  try {
    return readChatTemplate(dir);
  } catch {
    return null;
  }
}
