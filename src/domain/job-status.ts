// A fine-tuning job's statuses, as OpenAI names them. No imports: the dashboard's bundle uses them too.
export type JobStatus = 'validating_files' | 'queued' | 'running' | 'paused' | 'succeeded' | 'failed' | 'cancelled';
export const JOB_STATUSES: readonly JobStatus[] = ['validating_files', 'queued', 'running', 'paused', 'succeeded', 'failed', 'cancelled'];
export const TERMINAL_STATUSES: readonly JobStatus[] = ['succeeded', 'failed', 'cancelled'];

export const isTerminalStatus = (status: string) => (TERMINAL_STATUSES as readonly string[]).includes(status);
