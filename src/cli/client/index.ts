// The client commands, for main.ts's COMMANDS and for bin/tuneforge.js (which runs them without
// loading main.ts: that imports the server and the trainer, seconds of startup a client never uses).
export const CLIENT_COMMANDS: Record<string, { describe: string; run: (args: string[]) => Promise<void> }> = {
  files: {
    describe: 'upload | list | get | rm files',
    run: async (args) => (await import('./files.ts')).runFiles(args),
  },
  jobs: {
    describe: 'create | list | get | events | checkpoints | follow | pause | resume | cancel fine-tuning jobs',
    run: async (args) => (await import('./jobs.ts')).runJobs(args),
  },
  models: {
    describe: 'list | rm | export models',
    run: async (args) => (await import('./models.ts')).runModels(args),
  },
  chat: {
    describe: 'chat with a model: --model ID [--system TEXT] ["prompt"] (no prompt: lines from stdin)',
    run: async (args) => (await import('./chat.ts')).runChat(args),
  },
};
