// bin/tuneforge.js, the package's `tuneforge` command: it lists every command, and the server commands
// run through it as through src/cli/main.ts.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { after, describe, it } from 'node:test';
import { MODELS_DIR, ROOT } from '../e2e/support.ts';

const BIN = path.join(ROOT, 'bin/tuneforge.js');

function tuneforge(args: string[]) {
  return spawn(process.execPath, [BIN, ...args], { cwd: ROOT, timeout: 60_000, stdio: ['ignore', 'pipe', 'pipe'] });
}

async function exitOf(args: string[]) {
  const child = tuneforge(args);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk) => (stdout += chunk));
  child.stderr.on('data', (chunk) => (stderr += chunk));
  const code = await new Promise<number | null>((resolve) => child.once('close', (exitCode) => resolve(exitCode)));
  return { code, stdout, stderr };
}

describe('bin/tuneforge.js', () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tuneforge-bin-'));
  after(() => fs.rmSync(dataDir, { recursive: true, force: true }));

  it('without a command lists them all; an unknown one exits 2', async () => {
    const listed = await exitOf([]);
    assert.equal(listed.code, 0);
    for (const command of ['serve', 'worker', 'demo', 'export', 'files', 'jobs', 'models', 'chat']) {
      assert.match(listed.stderr, new RegExp(`^  ${command} +\\S`, 'm'));
    }
    const unknown = await exitOf(['nope']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /^usage: tuneforge <command>/);
  });

  it('serve serves the API', async () => {
    const child = spawn(process.execPath, [BIN, 'serve'], {
      cwd: ROOT,
      timeout: 60_000,
      env: { ...process.env, HOST: '127.0.0.1', PORT: '0', DATA_DIR: dataDir, MODELS_DIR, DATABASE_URL: '', API_KEYS: '', ADMIN_API_KEYS: '', WEBHOOK_URLS: '' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    try {
      const url = await new Promise<string>((resolve, reject) => {
        child.once('exit', (code, signal) => reject(new Error(`serve exited early (${code ?? signal})`)));
        readline.createInterface({ input: child.stdout }).on('line', (line) => {
          const url = (JSON.parse(line) as { url?: string }).url;
          if (url?.endsWith('/v1')) resolve(url);
        });
      });
      const models = (await (await fetch(`${url}/models`, { signal: AbortSignal.timeout(10_000) })).json()) as { data: { id: string }[] };
      assert.ok(models.data.some((m) => m.id === 'tiny-llama'), JSON.stringify(models));
    } finally {
      child.kill('SIGKILL');
    }
  });
});
