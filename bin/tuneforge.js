#!/usr/bin/env node
// The `tuneforge` command (package.json "bin"): runs the CLI's TypeScript through tsx, in this process.
// Client commands (files, jobs, models, chat) start without main.ts, which loads the whole server.
import { register } from 'tsx/esm/api';

register();
const args = process.argv.slice(2);
const { CLIENT_COMMANDS } = await import('../src/cli/client/index.ts');
if (args[0] !== undefined && Object.hasOwn(CLIENT_COMMANDS, args[0])) {
  await CLIENT_COMMANDS[args[0]].run(args.slice(1));
} else {
  const { runCli } = await import('../src/cli/main.ts');
  runCli(args);
}
