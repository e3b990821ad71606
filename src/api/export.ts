// GET /v1/models/{model}/export?format=peft|safetensors|gguf[&dtype=f32|f16|bf16] — an extension to
// OpenAI's API: the caller's fine-tuned model or checkpoint as one download. gguf is the GGUF file
// itself (application/octet-stream); peft and safetensors are a tar of the folder
// (application/x-tar) whose files sit under one directory named after the model:
//   peft         adapter_config.json + adapter_model.safetensors (LoRA models only; 400 otherwise)
//   safetensors  the base with the adapter merged in (or the full fine-tune): config.json,
//                model.safetensors (sharded past 2 GiB), tokenizer and generation files
//   gguf         one llama.cpp file, f32 or f16
// dtype defaults to the base model's torch_dtype (gguf: f16 for half-precision bases, else f32).
// The export runs in a worker thread into a temporary folder under DATA_DIR/exports, which is
// removed once the response ends; exports run one at a time per server (each needs the model's
// memory).
import { createReadStream, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { ApiError } from '../domain/errors.ts';
import { ModelNotFoundError, type ModelCatalogue } from '../models/catalogue.ts';
import { EXPORT_FORMATS, runExportInWorker, tarDirectory, tarSize, type ExportFormat, type ExportJob, type MergedDtype } from '../engine/index.ts';
import type { ApiContext } from './context.ts';

export interface ExportSource {
  /** The fine-tuned model's or checkpoint's name. */
  id: string;
  kind: 'model' | 'checkpoint';
  /** LoRA: the adapter's folder and the base model's; full fine-tune: its own folder, adapterDir null. */
  modelDir: string;
  adapterDir: string | null;
  baseModel: string;
  /** The folders stay on this host (out of the blob cache's eviction) until this is called. */
  release(): void;
}

/**
 * The folders behind a fine-tuned model or checkpoint name (pulled into the blob cache where they
 * are not on this host; release them once done), or a ModelNotFoundError (a 404): a base
 * model, an unknown name, a checkpoint another organization shared (it may be used, not taken
 * away), or one whose files are gone. `organization` undefined: any organization's (the operator's CLI).
 */
export async function resolveExportSource(catalogue: ModelCatalogue, id: string, organization?: string): Promise<ExportSource> {
  const model = await catalogue.resolve(id, organization);
  if (model.kind === 'base' || model.shared) throw new ModelNotFoundError(id, 'unknown');
  const files = await catalogue.open(model);
  return { id, kind: model.kind === 'checkpoint' ? 'checkpoint' : 'model', ...files, baseModel: model.parent ?? '' };
}

function torchDtypeOf(dir: string): string {
  try {
    const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as { torch_dtype?: unknown; dtype?: unknown };
    return String(config.torch_dtype ?? config.dtype ?? 'float32');
  } catch {
    return 'float32';
  }
}

/** The dtype an export uses when none is asked for: the base model's own precision. */
export function defaultExportDtype(source: ExportSource, format: ExportFormat): MergedDtype {
  const torch = torchDtypeOf(source.modelDir);
  const half = torch === 'float16' ? 'f16' : torch === 'bfloat16' ? 'bf16' : 'f32';
  if (format === 'gguf') return half === 'f32' ? 'f32' : 'f16';
  return half;
}

/** Checks format/dtype against the model; a 400 in OpenAI's envelope when they do not fit. */
export function exportJob(source: ExportSource, format: ExportFormat, dtype: string | undefined, outPath: string): ExportJob {
  if (format === 'peft' && !source.adapterDir) {
    throw new ApiError(400, `The model '${source.id}' is a full fine-tune, not a LoRA adapter: export it as 'safetensors' or 'gguf'.`, 'invalid_request_error', 'format', 'invalid_value');
  }
  if (dtype !== undefined) {
    const allowed = format === 'gguf' ? ['f32', 'f16'] : format === 'safetensors' ? ['f32', 'f16', 'bf16'] : [];
    if (!allowed.includes(dtype)) {
      const message = allowed.length === 0 ? `'dtype' does not apply to format '${format}' (the adapter is exported as stored).` : `Invalid value for 'dtype': format '${format}' takes one of ${allowed.map((d) => `'${d}'`).join(', ')}.`;
      throw new ApiError(400, message, 'invalid_request_error', 'dtype', 'invalid_value');
    }
  }
  return {
    format,
    modelDir: source.modelDir,
    adapterDir: source.adapterDir,
    outPath,
    dtype: (dtype as MergedDtype | undefined) ?? defaultExportDtype(source, format),
    name: source.id,
    baseModelName: source.baseModel || undefined,
  };
}

/** A name safe in a file name and a Content-Disposition header: ft:a:b → ft-a-b. */
export function exportFileStem(id: string): string {
  return id.replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^[-.]+|-+$/g, '') || 'model';
}

/** Runs tasks one at a time, in arrival order. */
class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.tail.then(task, task);
    this.tail = result.catch(() => undefined);
    return result;
  }
}

/** Temporary export folders a stopped process left behind (older than a day: never a live one). */
function removeStaleExports(exportsDir: string) {
  if (!existsSync(exportsDir)) return;
  for (const name of readdirSync(exportsDir)) {
    const path = join(exportsDir, name);
    try {
      if (name.startsWith('tmp-') && Date.now() - statSync(path).mtimeMs > 24 * 3600 * 1000) rmSync(path, { recursive: true, force: true });
    } catch {
      // raced with another process: nothing to do
    }
  }
}

interface ExportQuery {
  format: ExportFormat;
  dtype?: MergedDtype;
}

/** The export query (a tuneforge extension, so no spec schema): the engine's formats and dtypes. */
const EXPORT_DTYPES: readonly MergedDtype[] = ['f32', 'f16', 'bf16'];
const exportQuerySchema = {
  type: 'object',
  required: ['format'],
  properties: { format: { type: 'string', enum: EXPORT_FORMATS }, dtype: { type: 'string', enum: EXPORT_DTYPES } },
  additionalProperties: false,
};

export async function exportRoutes(app: FastifyInstance, ctx: ApiContext) {
  const { catalogue, config } = ctx;
  const queue = new SerialQueue();
  removeStaleExports(join(config.dataDir, 'exports'));

  app.get<{ Params: { model: string }; Querystring: ExportQuery }>(
    '/models/:model/export',
    {
      exposeHeadRoute: false, // a HEAD would run the whole export for nothing
      schema: { querystring: exportQuerySchema },
    },
    async (request, reply) => {
      const { model: id } = request.params;
      const { format, dtype } = request.query;
      const source = await resolveExportSource(catalogue, id, request.caller.organization);
      reply.raw.once('close', () => source.release()); // the export is written by then, or was never started
      const exportsDir = join(config.dataDir, 'exports');
      mkdirSync(exportsDir, { recursive: true });
      const work = mkdtempSync(join(exportsDir, 'tmp-'));
      const stem = exportFileStem(id);
      const outPath = format === 'gguf' ? join(work, `${stem}.gguf`) : join(work, `${stem}-${format}`);
      const cleanup = () => rmSync(work, { recursive: true, force: true });
      // The folder goes when the response ends, or once the export finishes if the client left first.
      let exporting = true;
      let clientGone = false;
      reply.raw.once('close', () => {
        clientGone = true;
        if (!exporting) cleanup();
      });
      try {
        const job = exportJob(source, format, dtype, outPath);
        await queue.run(async () => {
          if (!clientGone) await runExportInWorker(job);
        });
      } catch (error) {
        cleanup();
        throw error;
      } finally {
        exporting = false;
      }
      if (clientGone) {
        cleanup();
        reply.hijack(); // nobody to answer: end the request here
        reply.raw.destroy();
        return;
      }
      if (format === 'gguf') {
        reply
          .header('content-type', 'application/octet-stream')
          .header('content-length', statSync(outPath).size)
          .header('content-disposition', `attachment; filename="${stem}.gguf"`);
        return reply.send(createReadStream(outPath));
      }
      const folder = `${stem}-${format}`;
      reply
        .header('content-type', 'application/x-tar')
        .header('content-length', tarSize(outPath, { prefix: folder }))
        .header('content-disposition', `attachment; filename="${folder}.tar"`);
      return reply.send(tarDirectory(outPath, { prefix: folder }));
    },
  );
}
