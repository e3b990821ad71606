// Graders for reinforcement fine-tuning: validation, running, and the checks that need a process
// (python syntax) which validateGrader, being synchronous, leaves out.
import { invalidParam } from '../domain/errors.ts';
import { runPythonSandbox, type PythonSandboxOptions } from './python.ts';
import type { Grader, LeafGrader } from './types.ts';
import { multiGraders } from './validate.ts';

export { validateGrader, multiGraders, type ValidateOptions } from './validate.ts';
export { runGrader, type GraderDeps, type GraderInput } from './run.ts';
export { pythonSandboxStatus, pythonLimitsFromEnv, DEFAULT_PYTHON_LIMITS, type PythonLimits, type PythonSandboxOptions } from './python.ts';
export type * from './types.ts';

/** Each leaf grader of a (validated) grader with its param path. */
export function leafGraders(grader: Grader, param = 'grader'): [LeafGrader, string][] {
  if (grader.type !== 'multi') return [[grader, param]];
  const single = typeof (grader.graders as { type?: unknown }).type === 'string';
  return Object.entries(multiGraders(grader)).map(([key, sub]) => [sub, single ? `${param}.graders` : `${param}.graders.${key}`]);
}

/**
 * Parses every python grader's source in the sandbox (nothing of it runs): a syntax error or a
 * missing top-level grade() is a 400 on `….source`.
 */
export async function checkPythonSources(grader: Grader, options: PythonSandboxOptions = {}, param = 'grader'): Promise<void> {
  for (const [leaf, p] of leafGraders(grader, param)) {
    if (leaf.type !== 'python') continue;
    const result = await runPythonSandbox({ mode: 'check', source: leaf.source }, options);
    if (!result.ok) throw invalidParam(`${p}.source`, `Invalid '${p}.source': ${result.error.trim()}`, 'invalid_python_source');
  }
}
