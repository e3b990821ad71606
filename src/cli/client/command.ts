// What every client command shares: parsing its arguments (node's parseArgs), the connection flags
// (--base-url/OPENAI_BASE_URL, --api-key/OPENAI_API_KEY, as OpenAI's own tools read them), --json and
// --help, and turning any failure into one line on stderr and an exit code.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import OpenAI from 'openai';
import { describeFailure, UsageError } from './output.ts';

type Options = NonNullable<ParseArgsConfig['options']>;
type Values = Record<string, string | boolean | undefined>;

/** Where `npm start` serves. */
export const DEFAULT_BASE_URL = 'http://127.0.0.1:8000/v1';

const CONNECTION_OPTIONS = {
  'base-url': { type: 'string' },
  'api-key': { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} satisfies Options;

const CONNECTION_USAGE = `  --base-url URL   the API (default: OPENAI_BASE_URL, else ${DEFAULT_BASE_URL})
  --api-key KEY    bearer key (default: OPENAI_API_KEY)
  --json           print the API's objects as JSON`;

export interface Command {
  /** What follows the command's name, e.g. '<file-id>'. */
  usage: string;
  describe: string;
  options?: Options;
  run(invocation: Invocation): Promise<void>;
}

/** One run of a command: its client, flags and positional arguments. */
export class Invocation {
  constructor(
    readonly client: OpenAI,
    private readonly values: Values,
    readonly positionals: string[],
  ) {}

  get json(): boolean {
    return this.values.json === true;
  }

  flag(name: string): boolean {
    return this.values[name] === true;
  }

  string(name: string): string | undefined {
    const value = this.values[name];
    return typeof value === 'string' ? value : undefined;
  }

  required(name: string): string {
    const value = this.string(name);
    if (value === undefined) throw new UsageError(`--${name} is required`);
    return value;
  }

  number(name: string): number | undefined {
    const value = this.string(name);
    if (value === undefined) return undefined;
    const n = Number(value);
    if (value.trim() === '' || !Number.isFinite(n)) throw new UsageError(`--${name} must be a number, not '${value}'`);
    return n;
  }

  /** The positional argument at `index`, which the command needs. */
  argument(index: number, name: string): string {
    const value = this.positionals[index];
    if (value === undefined) throw new UsageError(`missing <${name}>`);
    return value;
  }
}

const usageOf = (name: string, command: Command) => `usage: tuneforge ${name} ${command.usage}\n${CONNECTION_USAGE}`;

/** Runs `command` with `args`; a failure prints `error: …` and sets the exit code (2: usage, 1: the rest). */
export async function runCommand(name: string, command: Command, args: string[]): Promise<void> {
  let baseURL = process.env.OPENAI_BASE_URL || DEFAULT_BASE_URL;
  try {
    const { values, positionals } = parseArgs({ args, options: { ...CONNECTION_OPTIONS, ...command.options }, allowPositionals: true, strict: true });
    if (values.help) {
      console.log(`${command.describe}\n${usageOf(name, command)}`);
      return;
    }
    if (typeof values['base-url'] === 'string') baseURL = values['base-url'];
    const apiKey = (typeof values['api-key'] === 'string' ? values['api-key'] : process.env.OPENAI_API_KEY) || 'none';
    // No retries: a create must not run twice, and a wrong URL should say so at once.
    const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
    await command.run(new Invocation(client, values, positionals));
  } catch (error) {
    const { message, exitCode } = describeFailure(error, baseURL);
    console.error(`error: ${message}`);
    if (exitCode === 2) console.error(usageOf(name, command));
    process.exitCode = exitCode;
  }
}

/** `tuneforge <resource> <subcommand> …`: picks the subcommand, or lists them. */
export async function runSubcommands(resource: string, subcommands: Record<string, Command>, args: string[]): Promise<void> {
  const [name, ...rest] = args;
  if (name !== undefined && Object.hasOwn(subcommands, name)) return runCommand(`${resource} ${name}`, subcommands[name], rest);
  const list = Object.entries(subcommands).map(([sub, c]) => `  ${sub.padEnd(12)} ${c.describe}`);
  const usage = [`usage: tuneforge ${resource} <command>`, '', ...list, '', `tuneforge ${resource} <command> --help for its options`].join('\n');
  if (name === undefined || name === '--help' || name === '-h') {
    console.log(usage);
  } else {
    console.error(`error: unknown command '${resource} ${name}'\n${usage}`);
    process.exitCode = 2;
  }
}
