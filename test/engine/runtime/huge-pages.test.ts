// Transparent huge pages in a training process: it starts with glibc's heap in huge pages
// (CHILD_GLIBC_TUNABLES), keeps them when its step leaves room in the memory limit, and turns them
// off, for memory it already has too, when the step is tight or recomputes layers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CHILD_GLIBC_TUNABLES } from '../../../src/scheduler/train-process.ts';

const ROOT = path.resolve(import.meta.dirname, '../../..');

/** Runs `body` (ESM, top-level await) in a Node process started as a training process is. */
function inTrainingProcess(body: string): Record<string, unknown> {
  const run = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', body], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...process.env, GLIBC_TUNABLES: CHILD_GLIBC_TUNABLES },
    timeout: 120_000,
  });
  assert.equal(run.status, 0, run.stderr);
  return JSON.parse(run.stdout.trim().split('\n').at(-1)!);
}

const PROBE = `
import fs from 'node:fs';
import { ensureStepFits, estimateStep } from './src/engine/train/memory-estimate.ts';
import { modelSetup } from './src/engine/train/setup.ts';
import { ALL_LINEAR } from './src/engine/models/lora.ts';
import { tinyConfig } from './test/engine/models/llama-fixtures.ts';
const status = () => fs.readFileSync('/proc/self/status', 'utf8');
const thpEnabled = () => Number(/THP_enabled:\\s*(\\d)/.exec(status())?.[1] ?? -1);
const hugeKb = () => Number(/AnonHugePages:\\s*(\\d+)/.exec(fs.readFileSync('/proc/self/smaps_rollup', 'utf8'))?.[1] ?? 0);
// 64 MB from the heap, touched: in 2 MB pages when the process may have them.
const touch = () => { const b = new Float32Array(16 << 20); b.fill(1); return b; };
const setup = modelSetup(tinyConfig(), { rank: 4, alpha: 8, dropout: 0, targetModules: ALL_LINEAR });
const shape = { rows: 1, seqLen: 64 };
const peak = estimateStep(setup, shape, 1).peakBytes;
const kept = [touch()];
const before = { thp: thpEnabled(), hugeKb: hugeKb() };
ensureStepFits({ memoryLimitBytes: LIMIT(peak), recompute: RECOMPUTE }, setup, shape);
kept.push(touch());
console.log(JSON.stringify({ before, after: { thp: thpEnabled(), hugeKb: hugeKb() } }));
`;

const systemOffersThp = () => {
  try {
    return !/\[never\]/.test(fs.readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8'));
  } catch {
    return false;
  }
};

test('a training process keeps huge pages for a step with room to spare, and turns them off for a tight one', () => {
  type Probe = { before: { thp: number; hugeKb: number }; after: { thp: number; hugeKb: number } };
  const probe = (limit: string, recompute: string) => inTrainingProcess(PROBE.replace('LIMIT(peak)', limit).replace('RECOMPUTE', `'${recompute}'`)) as Probe;
  const roomy = probe('peak * 4', 'off');
  const tight = probe('peak * 1.1', 'off');
  const recomputing = probe('peak * 4', 'on');
  assert.equal(roomy.before.thp, 1);
  assert.equal(roomy.after.thp, 1, 'a step within 60% of the limit keeps them');
  assert.equal(tight.after.thp, 0, 'a step over 60% of the limit turns them off');
  assert.equal(recomputing.after.thp, 0, 'a step that recomputes layers turns them off');
  if (systemOffersThp()) {
    // glibc's tunable puts the heap in huge pages, on a system whose setting is "madvise" too.
    assert.ok(roomy.before.hugeKb >= 32 * 1024, `AnonHugePages ${roomy.before.hugeKb} kB after touching 64 MB`);
    assert.ok(roomy.after.hugeKb > roomy.before.hugeKb, 'the second 64 MB in huge pages too');
    assert.ok(tight.after.hugeKb <= tight.before.hugeKb, `memory after turning them off in 4 KB pages (${tight.before.hugeKb} → ${tight.after.hugeKb} kB)`);
  }
});
