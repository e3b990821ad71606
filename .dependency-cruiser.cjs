// The architecture's import rules, checked by `npm test` (npm run check:deps). README's
// "Architecture" section states the same rules in words; change both together.
const IO_MODULES = ['fs', 'fs/promises', 'net', 'http', 'https', 'http2', 'tls', 'dgram', 'dns', 'child_process', 'cluster', 'worker_threads'];
const coreModulePath = `^(node:)?(${IO_MODULES.map((name) => name.replace('/', '\\/')).join('|')})$`;

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'engine-stands-alone',
      comment: 'The engine knows nothing of HTTP, SQL or jobs: it imports nothing from src/ outside src/engine.',
      severity: 'error',
      from: { path: '^src/engine/' },
      to: { path: '^src/', pathNot: '^src/engine/' },
    },
    {
      name: 'engine-through-its-index',
      comment: 'The rest of src/ reaches the engine only through src/engine/index.ts (tests, bench and scripts may reach inside).',
      severity: 'error',
      from: { path: '^src/', pathNot: '^src/engine/' },
      to: { path: '^src/engine/', pathNot: '^src/engine/index\\.ts$' },
    },
    {
      name: 'domain-without-io',
      comment: 'src/domain holds rules without I/O: of src/ it uses only the engine (through its index), and no files, sockets, processes or packages.',
      severity: 'error',
      from: { path: '^src/domain/' },
      to: { path: '^src/', pathNot: ['^src/domain/', '^src/engine/index\\.ts$'] },
    },
    {
      name: 'domain-without-io-modules',
      severity: 'error',
      from: { path: '^src/domain/' },
      to: { dependencyTypes: ['core'], path: coreModulePath },
    },
    {
      name: 'domain-without-io-packages',
      severity: 'error',
      from: { path: '^src/domain/' },
      to: { dependencyTypes: ['npm', 'npm-dev', 'npm-optional', 'npm-peer', 'npm-no-pkg', 'npm-unknown'] },
    },
    {
      name: 'store-without-http',
      comment: 'The store serves every caller alike: it imports no HTTP framework and nothing of the API, scheduler, CLI, graders or integrations.',
      severity: 'error',
      from: { path: '^src/store/' },
      to: { path: ['^src/(api|scheduler|cli|graders|integrations|engine)/', 'node_modules/(fastify|@fastify/)'] },
    },
    {
      name: 'store-without-http-modules',
      severity: 'error',
      from: { path: '^src/store/' },
      to: { dependencyTypes: ['core'], path: '^(node:)?(http|https|http2|net|tls)$' },
    },
    {
      name: 'nothing-imports-the-cli',
      comment: 'src/cli is the entry point; nothing below it depends on it.',
      severity: 'error',
      from: { path: '^src/', pathNot: '^src/cli/' },
      to: { path: '^src/cli/' },
    },
    {
      name: 'no-unresolvable-imports',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default', 'types'] },
  },
};
