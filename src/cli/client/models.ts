// `tuneforge models list|rm|export`
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream } from 'node:stream/web';
import { runSubcommands, type Command } from './command.ts';
import { printJson, printTable, timestamp, UsageError, printDeleted } from './output.ts';

const EXPORT_FORMATS = ['peft', 'safetensors', 'gguf'];

/** The file name in a Content-Disposition header, e.g. `attachment; filename="x.gguf"`. */
function attachmentName(header: string | null): string | undefined {
  const name = header?.match(/filename="([^"]+)"/)?.[1];
  return name ? path.basename(name) : undefined;
}

export const MODELS: Record<string, Command> = {
  list: {
    usage: '',
    describe: 'list base models, fine-tuned models and checkpoints',
    run: async (cli) => {
      const page = await cli.client.models.list();
      if (cli.json) return printJson(page.data);
      printTable(page.data, [
        ['ID', (m) => m.id],
        ['OWNED BY', (m) => m.owned_by],
        ['CREATED', (m) => timestamp(m.created)],
      ]);
    },
  },
  rm: {
    usage: '<model>',
    describe: 'delete a fine-tuned model',
    run: async (cli) => printDeleted(await cli.client.models.delete(cli.argument(0, 'model')), cli.json),
  },
  export: {
    usage: '<model> --format peft|safetensors|gguf [--dtype f32|f16|bf16] [-o FILE]',
    describe: 'download a fine-tuned model or checkpoint (gguf: one file; peft, safetensors: a tar); -o - writes to stdout',
    options: { format: { type: 'string' }, dtype: { type: 'string' }, output: { type: 'string', short: 'o' } },
    run: async (cli) => {
      const model = cli.argument(0, 'model');
      const format = cli.required('format');
      if (!EXPORT_FORMATS.includes(format)) throw new UsageError(`--format must be one of ${EXPORT_FORMATS.join(', ')}`);
      const dtype = cli.string('dtype');
      // An extension endpoint (GET /v1/models/{model}/export): the SDK's generic get, as bytes.
      const response = await cli.client
        .get(`/models/${encodeURIComponent(model)}/export`, { query: { format, ...(dtype ? { dtype } : {}) }, __binaryResponse: true })
        .asResponse();
      const body = Readable.fromWeb(response.body as ReadableStream);
      const out = cli.string('output') ?? attachmentName(response.headers.get('content-disposition')) ?? `export.${format === 'gguf' ? 'gguf' : 'tar'}`;
      if (out === '-') return pipeline(body, process.stdout);
      // Written beside the target and renamed when complete, so a broken download leaves no partial file.
      const partial = `${out}.part`;
      try {
        await pipeline(body, fs.createWriteStream(partial));
        fs.renameSync(partial, out);
      } finally {
        fs.rmSync(partial, { force: true });
      }
      if (cli.json) printJson({ model, format, path: path.resolve(out), bytes: fs.statSync(out).size });
      else console.log(`exported ${model} → ${out} (${fs.statSync(out).size} bytes)`);
    },
  },
};

export const runModels = (args: string[]) => runSubcommands('models', MODELS, args);
