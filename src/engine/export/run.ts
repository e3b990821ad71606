// One export as plain data, run here or in a worker thread: merging and converting a model is
// seconds to minutes of CPU and as much memory as the model, which must not stall an HTTP server's
// event loop. The worker is started per export and ends with it, so its memory goes back at once.

import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { exportGguf, exportMerged, exportPeft, type MergedDtype } from './index.ts';
import type { GgufDtype } from './gguf.ts';

export type ExportFormat = 'peft' | 'safetensors' | 'gguf';
export const EXPORT_FORMATS: readonly ExportFormat[] = ['peft', 'safetensors', 'gguf'];

export interface ExportJob {
  format: ExportFormat;
  /** The base model's folder (LoRA) or the full fine-tune's folder. */
  modelDir: string;
  /** The PEFT adapter's folder for LoRA models, else null. */
  adapterDir: string | null;
  /** A folder (peft, safetensors) or a file (gguf) to create. */
  outPath: string;
  /** safetensors: f32 | f16 | bf16; gguf: f32 | f16. */
  dtype: MergedDtype;
  /** general.name in GGUF; base_model_name_or_path in PEFT. */
  name: string;
  baseModelName?: string;
}

export function runExport(job: ExportJob): void {
  switch (job.format) {
    case 'peft':
      if (!job.adapterDir) throw new Error('peft export needs a LoRA adapter (this model is a full fine-tune)');
      return exportPeft(job.adapterDir, job.outPath, { baseModelName: job.baseModelName });
    case 'safetensors':
      return exportMerged(job.modelDir, job.adapterDir, job.outPath, job.dtype);
    case 'gguf':
      if (job.dtype === 'bf16') throw new Error('GGUF export writes f32 or f16');
      return exportGguf(job.modelDir, job.outPath, { dtype: job.dtype as GgufDtype, adapterDir: job.adapterDir, name: job.name });
    default:
      throw new Error(`unknown export format ${String((job as { format: unknown }).format)}`);
  }
}

const WORKER_MARK = 'tuneforge-export-worker';

/** runExport in a worker thread; resolves when the output is complete. */
export function runExportInWorker(job: ExportJob): Promise<void> {
  // Under tsx, Node 20 does not carry the TypeScript loader into workers, so the entry registers
  // tsx's hooks itself before importing this file (as infer/thread.ts does).
  const self = JSON.stringify(import.meta.url);
  const entry = import.meta.url.endsWith('.ts')
    ? `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then(({ register }) => { register(); return import(${self}); });`
    : `import(${self});`;
  return new Promise((resolve, reject) => {
    const worker = new Worker(entry, { eval: true, workerData: { mark: WORKER_MARK, job } });
    let settled = false;
    worker.on('message', (reply: { ok: true } | { ok: false; message: string }) => {
      settled = true;
      if (reply.ok) resolve();
      else reject(new Error(reply.message));
    });
    worker.on('error', (error) => {
      settled = true;
      reject(error);
    });
    worker.on('exit', (code) => {
      if (!settled) reject(new Error(`export worker exited (code ${code}) before finishing`));
    });
  });
}

if (!isMainThread && (workerData as { mark?: string } | null)?.mark === WORKER_MARK) {
  try {
    runExport((workerData as { job: ExportJob }).job);
    parentPort!.postMessage({ ok: true });
  } catch (error) {
    parentPort!.postMessage({ ok: false, message: error instanceof Error ? error.message : String(error) });
  }
}
