// The web dashboard at `/`: a single-page app (web/, Preact + uPlot) that is only an API client of
// /v1 with the key the person signs in with. esbuild bundles it in memory on the first page load
// (once per process), so `npm ci && npm start` is the whole setup and nothing is fetched from
// outside the server. Its three files are public: they hold no data.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import type { FastifyInstance } from 'fastify';

const WEB_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../web');

const INDEX_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tuneforge</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/dashboard/app.css">
</head>
<body>
<div id="app"></div>
<script type="module" src="/dashboard/app.js"></script>
</body>
</html>
`;

interface Bundle {
  js: string;
  css: string;
}

let bundle: Promise<Bundle> | null = null;

/** web/main.tsx with its packages and stylesheets, minified. */
function bundleDashboard(): Promise<Bundle> {
  bundle ??= build({
    entryPoints: [path.join(WEB_DIR, 'main.tsx')],
    bundle: true,
    write: false,
    minify: true,
    format: 'esm',
    target: 'es2022',
    jsx: 'automatic',
    jsxImportSource: 'preact',
    outdir: 'out', // names the outputs (app.js, app.css); nothing is written
    entryNames: 'app',
    logLevel: 'silent',
  }).then((result) => ({
    js: result.outputFiles.find((f) => f.path.endsWith('.js'))!.text,
    css: result.outputFiles.find((f) => f.path.endsWith('.css'))?.text ?? '',
  }));
  bundle.catch(() => (bundle = null)); // a failed build is retried on the next load
  return bundle;
}

export async function dashboardRoutes(app: FastifyInstance) {
  const page = { config: { public: true } };
  app.get('/', page, async (_request, reply) => reply.type('text/html; charset=utf-8').header('cache-control', 'no-cache').send(INDEX_HTML));
  app.get('/dashboard/app.js', page, async (_request, reply) =>
    reply.type('text/javascript; charset=utf-8').header('cache-control', 'no-cache').send((await bundleDashboard()).js),
  );
  app.get('/dashboard/app.css', page, async (_request, reply) =>
    reply.type('text/css; charset=utf-8').header('cache-control', 'no-cache').send((await bundleDashboard()).css),
  );
}
