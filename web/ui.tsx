// Small pieces every page uses: the hash router, polling with a deadline-free interval that stops
// with the page, time and number formatting, and status/error displays.
import { useEffect, useRef, useState } from 'preact/hooks';
import type { ComponentChildren } from 'preact';

export interface Route {
  path: string[];
  query: URLSearchParams;
}

function currentRoute(): Route {
  const [path, query = ''] = location.hash.replace(/^#\/?/, '').split('?');
  return { path: path.split('/').filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(query) };
}

export function useRoute(): Route {
  const [route, setRoute] = useState(currentRoute);
  useEffect(() => {
    const onChange = () => setRoute(currentRoute());
    addEventListener('hashchange', onChange);
    return () => removeEventListener('hashchange', onChange);
  }, []);
  return route;
}

export const href = (...parts: string[]) => `#/${parts.map(encodeURIComponent).join('/')}`;

/**
 * Runs `load` now and then every `intervalMs` while the component is mounted and `active` holds;
 * a run never overlaps the previous one. Returns a function that reloads at once.
 */
export function usePoll(load: () => Promise<void>, intervalMs: number, active = true, deps: unknown[] = []): () => Promise<void> {
  const latest = useRef(load);
  latest.current = load;
  const running = useRef<Promise<void> | null>(null);
  const run = () => (running.current ??= latest.current().finally(() => (running.current = null)));
  useEffect(() => {
    void run();
    if (!active) return;
    const timer = setInterval(() => void run(), intervalMs);
    return () => clearInterval(timer);
  }, [active, intervalMs, ...deps]);
  return run;
}

export const formatTime = (seconds: number | null | undefined) =>
  seconds ? new Date(seconds * 1000).toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'medium' }) : '—';

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MB`;
  return `${(n / 1024 ** 3).toFixed(2)} GB`;
}

export const formatNumber = (v: unknown) => (typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toPrecision(4)) : String(v ?? '—'));

export function Status({ status }: { status: string }) {
  return <span class={`status status-${status}`}>{status.replace(/_/g, ' ')}</span>;
}

export function ErrorNote({ error }: { error: unknown }) {
  if (!error) return null;
  return (
    <p class="error" role="alert">
      {error instanceof Error ? error.message : String(error)}
    </p>
  );
}

export function Section({ title, children, actions }: { title: string; children: ComponentChildren; actions?: ComponentChildren }) {
  return (
    <section>
      <div class="section-head">
        <h2>{title}</h2>
        {actions}
      </div>
      {children}
    </section>
  );
}

/** Runs an async action from a button, keeping its error for display and a busy flag. */
export function useAction(): [(action: () => Promise<void>) => Promise<void>, boolean, unknown] {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const run = async (action: () => Promise<void>) => {
    setBusy(true);
    setError(null);
    try {
      await action();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return [run, busy, error];
}
