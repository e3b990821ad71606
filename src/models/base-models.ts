// Base models: each sub-folder of MODELS_DIR whose config.json the engine can train (a supported
// architecture, a config it parses) is a base model named after the folder. Anything else there
// (another architecture, a broken or missing config.json) is not a model to this service: it is
// neither listed nor accepted by name. Read on each call, so adding a folder needs no restart.
import fs from 'node:fs/promises';
import path from 'node:path';
import { readHfConfig } from '../engine/index.ts';

export interface BaseModel {
  id: string;
  dir: string;
  /** Unix seconds: when its config.json was written. */
  created: number;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** The base model in `modelsDir/name`, or undefined when that is not a folder the engine can train. */
async function baseModelAt(modelsDir: string, name: string): Promise<BaseModel | undefined> {
  const dir = path.join(modelsDir, name);
  try {
    const stat = await fs.stat(path.join(dir, 'config.json'));
    readHfConfig(dir);
    return { id: name, dir, created: Math.floor(stat.mtimeMs / 1000) };
  } catch {
    return undefined;
  }
}

export async function listBaseModels(modelsDir: string): Promise<BaseModel[]> {
  let entries: import('node:fs').Dirent[];
  try {
    entries = await fs.readdir(modelsDir, { withFileTypes: true });
  } catch {
    return [];
  }
  const names = entries.filter((e) => e.isDirectory() && NAME.test(e.name)).map((e) => e.name);
  const models = await Promise.all(names.map((name) => baseModelAt(modelsDir, name)));
  return models.filter((m): m is BaseModel => m !== undefined).sort((a, b) => a.id.localeCompare(b.id));
}

export async function findBaseModel(modelsDir: string, id: string): Promise<BaseModel | undefined> {
  if (!NAME.test(id)) return undefined;
  const entry = await fs.stat(path.join(modelsDir, id)).catch(() => null);
  return entry?.isDirectory() ? baseModelAt(modelsDir, id) : undefined;
}
