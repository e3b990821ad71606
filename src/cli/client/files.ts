// `tuneforge files upload|list|get|rm`
import fs from 'node:fs';
import type OpenAI from 'openai';
import { runSubcommands, type Command } from './command.ts';
import { printFields, printJson, printTable, timestamp, UsageError, printDeleted } from './output.ts';

/** Uploads a local file for fine-tuning. */
export async function uploadFile(client: OpenAI, path: string): Promise<OpenAI.FileObject> {
  if (!fs.statSync(path, { throwIfNoEntry: false })?.isFile()) throw new UsageError(`no such file: ${path}`);
  return client.files.create({ file: fs.createReadStream(path), purpose: 'fine-tune' });
}

const printFile = (file: OpenAI.FileObject, json: boolean) => (json ? printJson(file) : printFields(file));

export const FILES: Record<string, Command> = {
  upload: {
    usage: '<path>',
    describe: 'upload a JSONL file (purpose fine-tune)',
    run: async (cli) => printFile(await uploadFile(cli.client, cli.argument(0, 'path')), cli.json),
  },
  list: {
    usage: '[--purpose P] [--limit N] [--after FILE_ID]',
    describe: 'list files, newest first',
    options: { purpose: { type: 'string' }, limit: { type: 'string' }, after: { type: 'string' } },
    run: async (cli) => {
      const page = await cli.client.files.list({ purpose: cli.string('purpose'), limit: cli.number('limit'), after: cli.string('after') });
      if (cli.json) return printJson(page.data);
      printTable(page.data, [
        ['ID', (f) => f.id],
        ['BYTES', (f) => f.bytes],
        ['CREATED', (f) => timestamp(f.created_at)],
        ['PURPOSE', (f) => f.purpose],
        ['FILENAME', (f) => f.filename],
      ]);
    },
  },
  get: {
    usage: '<file-id>',
    describe: "show a file's details",
    run: async (cli) => printFile(await cli.client.files.retrieve(cli.argument(0, 'file-id')), cli.json),
  },
  rm: {
    usage: '<file-id>',
    describe: 'delete a file',
    run: async (cli) => printDeleted(await cli.client.files.delete(cli.argument(0, 'file-id')), cli.json),
  },
};

export const runFiles = (args: string[]) => runSubcommands('files', FILES, args);
