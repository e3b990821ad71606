// The dashboard's only way to the server: OpenAI's API under /v1 with the signed-in key as the
// bearer token (kept in localStorage, never put in a URL). Errors keep the envelope's param, so a
// form can show them on the field they are about.
const KEY_STORAGE = 'tuneforge.apiKey';

export const storedKey = {
  get: () => localStorage.getItem(KEY_STORAGE) ?? '',
  set: (key: string) => localStorage.setItem(KEY_STORAGE, key),
  clear: () => localStorage.removeItem(KEY_STORAGE),
};

export class RequestError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
  }
}

export interface Job {
  id: string;
  status: string;
  model: string;
  created_at: number;
  finished_at: number | null;
  fine_tuned_model: string | null;
  training_file: string;
  validation_file: string | null;
  result_files: string[];
  trained_tokens: number | null;
  error: { message: string; code: string; param: string | null } | null;
  seed: number;
  estimated_finish: number | null;
  method: { type: string } & Record<string, { hyperparameters?: Record<string, unknown> } | string>;
  metadata: Record<string, string> | null;
  integrations: unknown[];
  user_provided_suffix?: string | null;
  /** tuneforge's extension: the training options the job runs with, defaults filled in (null on older jobs). */
  training_options?: Record<string, unknown> | null;
}

export interface JobEvent {
  id: string;
  created_at: number;
  level: string;
  message: string;
  type: 'message' | 'metrics';
  data: Record<string, unknown>;
}

export interface Checkpoint {
  id: string;
  created_at: number;
  fine_tuned_model_checkpoint: string;
  step_number: number;
  metrics: Record<string, number>;
}

export interface FileObject {
  id: string;
  filename: string;
  purpose: string;
  bytes: number;
  created_at: number;
  status?: string;
}

export interface Model {
  id: string;
  created: number;
  owned_by: string;
}

export interface ListObject<T> {
  data: T[];
  has_more: boolean;
}

function authHeaders(key = storedKey.get()): Record<string, string> {
  return key ? { authorization: `Bearer ${key}` } : {};
}

async function errorOf(res: Response): Promise<RequestError> {
  try {
    const { error } = await res.json();
    return new RequestError(error.message, res.status, error.param ?? null, error.code ?? null);
  } catch {
    return new RequestError(`${res.status} ${res.statusText}`, res.status);
  }
}

export async function api<T>(method: string, path: string, body?: unknown, key?: string): Promise<T> {
  const res = await fetch(`/v1${path}`, {
    method,
    headers: { ...authHeaders(key), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!res.ok) throw await errorOf(res);
  return res.json() as Promise<T>;
}

/** Every item of a cursor-paginated list (files, jobs, checkpoints). */
export async function listAll<T extends { id: string }>(path: string, limit = 100): Promise<T[]> {
  const items: T[] = [];
  for (;;) {
    const sep = path.includes('?') ? '&' : '?';
    const after = items.length ? `&after=${encodeURIComponent(items[items.length - 1].id)}` : '';
    const page = await api<ListObject<T>>('GET', `${path}${sep}limit=${limit}${after}`);
    items.push(...page.data);
    if (!page.has_more || page.data.length === 0) return items;
  }
}

/** POST /v1/files through XMLHttpRequest, the one browser API that reports upload progress. */
export function uploadWithProgress(file: File, purpose: string, onProgress: (fraction: number) => void): Promise<FileObject> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', '/v1/files');
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
    xhr.onload = () => {
      const body = JSON.parse(xhr.responseText || '{}');
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else reject(new RequestError(body.error?.message ?? `HTTP ${xhr.status}`, xhr.status, body.error?.param ?? null));
    };
    xhr.onerror = () => reject(new RequestError('The upload did not reach the server.', 0));
    const form = new FormData();
    form.append('purpose', purpose);
    form.append('file', file);
    xhr.send(form);
  });
}

/**
 * Fetches a route with the key and hands it to the browser as a download, named as the server's
 * Content-Disposition says (else `fallbackName`).
 */
export async function download(path: string, fallbackName: string): Promise<void> {
  const res = await fetch(`/v1${path}`, { headers: authHeaders() });
  if (!res.ok) throw await errorOf(res);
  const named = /filename="([^"]+)"/.exec(res.headers.get('content-disposition') ?? '')?.[1];
  const url = URL.createObjectURL(await res.blob());
  const a = document.createElement('a');
  a.href = url;
  a.download = named ?? fallbackName;
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

export async function fileText(fileId: string): Promise<string> {
  const res = await fetch(`/v1/files/${encodeURIComponent(fileId)}/content`, { headers: authHeaders() });
  if (!res.ok) throw await errorOf(res);
  return res.text();
}

export interface PlaygroundMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

/** Chat completions with stream: true; calls onText with each piece of the answer. */
export async function streamChat(
  body: { model: string; messages: PlaygroundMessage[]; max_tokens?: number; temperature?: number },
  onText: (text: string) => void,
  signal?: AbortSignal,
): Promise<void> {
  const res = await fetch('/v1/chat/completions', {
    method: 'POST',
    headers: { ...authHeaders(), 'content-type': 'application/json' },
    body: JSON.stringify({ ...body, stream: true }),
    signal,
  });
  if (!res.ok || !res.body) throw await errorOf(res);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end: number;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of frame.split('\n')) {
        if (!line.startsWith('data:')) continue;
        const data = line.slice(5).trim();
        if (data === '[DONE]') return;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new RequestError(chunk.error.message, 500, chunk.error.param ?? null);
        const text = chunk.choices?.[0]?.delta?.content;
        if (text) onText(text);
      }
    }
  }
}
