// The memory and time estimate (src/engine/train/memory-estimate.ts) against measured runs: each
// shape below runs `bench/train.ts --steps 1` in its own process, which prints its peak RSS and step
// time beside the estimate. Goal: peak RSS within 20% of the estimate. The runs keep 4 KB pages
// (--huge-pages off): the estimate does not model huge pages, which a training process keeps only
// with 40% of its memory limit to spare (hasMemoryToSpare, src/engine/train/memory-estimate.ts).
//   npm run bench:estimate [-- --layers 8]   (extra flags go to every run, e.g. fewer layers for a quick check)
// Runs of several GB: on a shared machine, take the memory lock first (flock /tmp/bigmem.lock npm run bench:estimate).

import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const smol = '--layers 30 --hidden 576 --inter 1536 --heads 9 --kv 3 --vocab 49152';
const qwen05 = '--layers 24 --hidden 896 --inter 4864 --heads 14 --kv 2 --vocab 151936';
const SHAPES = [
  `${smol} --mode lora --batch 4 --seq 512`,
  `${smol} --mode full --batch 4 --seq 512`,
  `${smol} --mode lora --batch 1 --seq 2048`,
  `${smol} --mode lora --batch 1 --seq 4096`,
  `${smol} --mode lora --batch 1 --seq 4096 --recompute on`,
  `${smol} --mode lora --batch 1 --seq 16384 --recompute on`,
  `${qwen05} --mode lora --batch 4 --seq 512`,
  `${qwen05} --mode lora --batch 4 --seq 512 --recompute on`,
];

const script = path.join(path.dirname(fileURLToPath(import.meta.url)), 'train.ts');
const extra = process.argv.slice(2);
for (const shape of SHAPES) {
  // Later flags win in parseArgs, so `extra` overrides the shape's.
  const args = [...shape.split(' '), '--steps', '1', '--huge-pages', 'off', ...extra];
  const run = spawnSync(process.execPath, [...process.execArgv, script, ...args], { encoding: 'utf8' });
  const out = `${run.stdout}${run.stderr}`;
  const pick = (re: RegExp) => re.exec(out)?.[1] ?? '?';
  const row = `${args.join(' ')}: peak_rss_gb=${pick(/peak_rss_gb=([\d.]+)/)} estimate_peak_gb=${pick(/estimate_peak_gb=([\d.]+)/)} ratio=${pick(/estimate_peak_gb=[^\n]*?measured\/estimate=([\d.]+)/)}` +
    ` step_s=${pick(/step_s=([\d.]+)/)} estimate_step_s=${pick(/estimate_step_s=([\d.]+)/)}`;
  console.log(run.status === 0 ? row : `${row} (exit ${run.status}: ${out.trim().split('\n').slice(-3).join(' | ')})`);
}
