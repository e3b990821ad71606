// Transparent huge pages for a training process. Training processes start with glibc's heap in
// 2 MB pages (glibc.malloc.hugetlb=1 in CHILD_GLIBC_TUNABLES, scheduler/train-process.ts): every
// step streams all frozen weights (forward and backward), and a new process faults in its weights
// and its first step's activations, both far cheaper in 2 MB pages. Measured on the SmolLM2-135M
// shape (README, bench:job): a 120-step job of one-row steps in 99 s against 131 s.
// But huge pages can raise the peak RSS by up to ~20% (a 2 MB page is resident whole, and the kernel
// collapses sparse ranges into whole pages), which the memory estimate does not model. So a process
// whose step has no memory to spare (hasMemoryToSpare, train/memory-estimate.ts) turns them off
// (prctl PR_SET_THP_DISABLE) before it allocates its step.

import koffi from 'koffi';

const PR_SET_THP_DISABLE = 41;
const PR_GET_THP_DISABLE = 42;
let prctl: ((option: number, a2: number, a3: number, a4: number, a5: number) => number) | null | undefined;

function libcPrctl() {
  if (prctl === undefined) {
    try {
      prctl = koffi.load('libc.so.6').func('int prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5)');
    } catch {
      prctl = null; // not glibc Linux: no huge pages from glibc's tunable either
    }
  }
  return prctl;
}

/** Turns transparent huge pages off for the rest of this process's life (new and existing mappings). */
export function disableHugePages(): void {
  const call = libcPrctl();
  if (call && call(PR_SET_THP_DISABLE, 1, 0, 0, 0) !== 0) throw new Error('prctl(PR_SET_THP_DISABLE) failed');
}

/** Whether this process may still get transparent huge pages (false after disableHugePages). */
export function hugePagesAllowed(): boolean {
  const call = libcPrctl();
  return call ? call(PR_GET_THP_DISABLE, 0, 0, 0, 0) === 0 : false;
}
