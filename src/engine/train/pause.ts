// Pause: the control plane aborts `train()` with `signal.reason = { saveResumePoint: true }`; the
// trainer then writes a resume point at the current step (after the step in flight), emits its
// `resume_point` event, waits for the handler, and rejects with an AbortError as for any abort.

/** The abort reason that asks for a resume point before stopping. */
export interface SaveResumePointReason {
  saveResumePoint: true;
}

export function wantsResumePoint(reason: unknown): reason is SaveResumePointReason {
  return typeof reason === 'object' && reason !== null && (reason as { saveResumePoint?: unknown }).saveResumePoint === true;
}

export const trainingAborted = () => new DOMException('training aborted', 'AbortError');
