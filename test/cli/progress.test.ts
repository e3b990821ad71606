// The progress line on a pipe (as under the test runner): a line per 10%, and the job's final state
// last even when a line for the same 10% was printed while the job was still finishing.
import assert from 'node:assert/strict';
import { it, mock } from 'node:test';
import { ProgressLine } from '../../src/cli/progress.ts';

it('on a pipe: a line per 10% of the steps, then the final line if it was not printed', () => {
  assert.equal(process.stdout.isTTY, undefined, 'this test needs stdout to be a pipe');
  const log = mock.method(console, 'log', () => {});
  try {
    const progress = new ProgressLine();
    progress.draw(1, 3, 2.5, null, 9);
    progress.draw(1, 3, 2.5, null, 8); // the same 10%: not printed
    progress.draw(3, 3, 1.25, 1.5, 1); // the last step while the job finishes
    progress.draw(3, 3, 1.25, 1.5, 0); // the job ended
    progress.end();
    const lines = log.mock.calls.map((call) => String(call.arguments[0]));
    assert.equal(lines.length, 3, lines.join('\n'));
    assert.match(lines[0], /^█{10}░{20}  33%  step 1\/3  loss 2\.500  left 0:09$/);
    assert.match(lines[1], /^█{30} 100%  step 3\/3  loss 1\.250  val 1\.500  left 0:01$/);
    assert.match(lines[2], /^█{30} 100%  step 3\/3  loss 1\.250  val 1\.500  left 0:00$/);
  } finally {
    log.mock.restore();
  }
});

it('on a pipe: the final line is not repeated when it was the last printed', () => {
  const log = mock.method(console, 'log', () => {});
  try {
    const progress = new ProgressLine();
    progress.draw(3, 3, 1, null, null);
    progress.end();
    assert.equal(log.mock.callCount(), 1);
  } finally {
    log.mock.restore();
  }
});
