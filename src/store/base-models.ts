// Base models: each sub-folder of MODELS_DIR holding a config.json (a Hugging Face model folder)
// is a base model named after the folder. Read on each call, so adding a folder needs no restart.
import fs from 'node:fs/promises';
import path from 'node:path';

export interface BaseModel {
  id: string;
  dir: string;
  /** Unix seconds: when its config.json was written. */
  created: number;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

export async function listBaseModels(modelsDir: string): Promise<BaseModel[]> {
  let entries: import('node:fs').Dirent[];
  try {
    entries = await fs.readdir(modelsDir, { withFileTypes: true });
  } catch {
    return [];
  }
  const models: BaseModel[] = [];
  for (const entry of entries) {
    if (!entry.isDirectory() || !NAME.test(entry.name)) continue;
    const dir = path.join(modelsDir, entry.name);
    try {
      const stat = await fs.stat(path.join(dir, 'config.json'));
      models.push({ id: entry.name, dir, created: Math.floor(stat.mtimeMs / 1000) });
    } catch {
      // not a model folder
    }
  }
  return models.sort((a, b) => a.id.localeCompare(b.id));
}

export async function findBaseModel(modelsDir: string, id: string): Promise<BaseModel | undefined> {
  if (!NAME.test(id)) return undefined;
  return (await listBaseModels(modelsDir)).find((m) => m.id === id);
}
