// When a python sandbox test may skip: only where the sandbox cannot exist (not Linux, not root).
// On Linux as root, as in CI, a sandbox that does not start is a failure: the tests run and say why.
import { pythonSandboxStatus, type PythonSandboxOptions } from '../../src/graders/index.ts';

export const sandboxExpected = process.platform === 'linux' && process.getuid?.() === 0;

/** The `skip` option for a test that needs the sandbox: false, or why it cannot run here. */
export function pythonSandboxSkip(options: PythonSandboxOptions = {}): string | false {
  const status = pythonSandboxStatus(options);
  if (status.ok || sandboxExpected) return false;
  return `python sandbox unavailable here: ${status.reason}`;
}
