// Child process of bench/api.ts: measures one pass over a JSONL file, alone in its process so that
// its peak RSS is its own. `validate` runs the service's dataset validation; `read` only streams the
// bytes (the I/O floor). Prints one JSON line: {seconds, maxRssMb, result?}.
import fs from 'node:fs';
import { validateDataset } from '../src/domain/datasets.ts';

const [mode, file] = process.argv.slice(2);
const started = process.hrtime.bigint();
let result: string | undefined;
if (mode === 'validate') {
  const report = await validateDataset(fs.createReadStream(file), { method: 'supervised', role: 'training' });
  result = report.ok ? `ok, ${report.nExamples} examples` : `failed: ${report.error.message}`;
} else {
  let bytes = 0;
  for await (const chunk of fs.createReadStream(file)) bytes += (chunk as Buffer).length;
  result = `${bytes} bytes`;
}
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
console.log(JSON.stringify({ seconds, maxRssMb: process.resourceUsage().maxRSS / 1024, result }));
