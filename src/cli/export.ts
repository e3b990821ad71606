// `tuneforge export --model ft:… --format peft|safetensors|gguf --out PATH [--dtype f32|f16|bf16] [--org ORG]`
// Reads DATA_DIR and MODELS_DIR like `serve`. gguf writes one file; peft and safetensors write a
// folder, or a tar of it when PATH ends in .tar (what the HTTP export sends).
import { createWriteStream, existsSync, mkdtempSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import { loadConfig } from '../config.ts';
import { openStore } from '../store/index.ts';
import { ModelCatalogue } from '../models/catalogue.ts';
import { exportFileStem, exportJob, resolveExportSource } from '../api/export.ts';
import { EXPORT_FORMATS, runExport, tarDirectory, type ExportFormat } from '../engine/index.ts';

const USAGE = 'usage: tuneforge export --model ft:… --format peft|safetensors|gguf --out PATH [--dtype f32|f16|bf16] [--org ORG]';

export async function runExportCommand(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      model: { type: 'string' },
      format: { type: 'string' },
      out: { type: 'string' },
      dtype: { type: 'string' },
      org: { type: 'string' },
    },
    strict: true,
  });
  if (!values.model || !values.format || !values.out) throw new Error(USAGE);
  if (!EXPORT_FORMATS.includes(values.format as ExportFormat)) throw new Error(`--format must be one of ${EXPORT_FORMATS.join(', ')}\n${USAGE}`);
  const format = values.format as ExportFormat;
  const out = resolve(values.out);
  if (existsSync(out) && !(statSync(out).isDirectory() && readdirSync(out).length === 0)) throw new Error(`${out} already exists`);

  const config = loadConfig();
  const store = await openStore(config);
  try {
    const source = await resolveExportSource(new ModelCatalogue(store, config.modelsDir), values.model, values.org);
    const asTar = format !== 'gguf' && out.endsWith('.tar');
    // Written next to the target and moved into place when complete.
    const work = mkdtempSync(join(dirname(out), `.${basename(out)}.tmp-`));
    try {
      const stem = exportFileStem(values.model);
      const target = join(work, format === 'gguf' ? `${stem}.gguf` : `${stem}-${format}`);
      const job = exportJob(source, format, values.dtype, target);
      const started = Date.now();
      runExport(job);
      if (asTar) {
        await pipeline(tarDirectory(target, { prefix: basename(out, '.tar') }), createWriteStream(join(work, 'out.tar')));
        renameSync(join(work, 'out.tar'), out);
      } else {
        if (existsSync(out)) rmSync(out, { recursive: true }); // an empty folder given as the target
        renameSync(target, out);
      }
      console.log(JSON.stringify({ msg: 'exported', model: values.model, format, dtype: job.dtype, out, seconds: (Date.now() - started) / 1000 }));
    } finally {
      rmSync(work, { recursive: true, force: true });
      source.release();
    }
  } finally {
    await store.close();
  }
}
