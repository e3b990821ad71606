// The playground: one conversation sent to two models at once (a base model and a tuned one),
// both answers streaming side by side.
import { useState } from 'preact/hooks';
import { api, streamChat, type PlaygroundMessage, type Model } from './api.ts';
import { ErrorNote, Section, usePoll } from './ui.tsx';
import { isBaseModel } from './models.tsx';

interface Pane {
  model: string;
  answer: string;
  error: unknown;
  running: boolean;
}

export function PlaygroundPage({ base, tuned }: { base: string | null; tuned: string | null }) {
  const [models, setModels] = useState<Model[]>([]);
  const [chosen, setChosen] = useState<[string, string]>([base ?? '', tuned ?? '']);
  const [system, setSystem] = useState('');
  const [prompt, setPrompt] = useState('');
  const [maxTokens, setMaxTokens] = useState('64');
  const [panes, setPanes] = useState<Pane[]>([]);

  usePoll(
    async () => {
      const list = (await api<{ data: Model[] }>('GET', '/models')).data;
      setModels(list);
      setChosen(([left, right]) => [left || list.find(isBaseModel)?.id || '', right || list.find((m) => !isBaseModel(m))?.id || list[0]?.id || '']);
    },
    0,
    false,
  );

  const running = panes.some((p) => p.running);
  const send = (e: Event) => {
    e.preventDefault();
    const messages: PlaygroundMessage[] = [...(system.trim() ? [{ role: 'system' as const, content: system }] : []), { role: 'user', content: prompt }];
    const targets = chosen.filter(Boolean);
    setPanes(targets.map((model) => ({ model, answer: '', error: null, running: true })));
    const update = (i: number, change: (p: Pane) => Partial<Pane>) => setPanes((ps) => ps.map((p, j) => (j === i ? { ...p, ...change(p) } : p)));
    targets.forEach((model, i) => {
      streamChat({ model, messages, max_tokens: Number(maxTokens) || undefined, temperature: 0 }, (text) => update(i, (p) => ({ answer: p.answer + text })))
        .catch((err) => update(i, () => ({ error: err })))
        .finally(() => update(i, () => ({ running: false })));
    });
  };

  const picker = (side: 0 | 1, label: string) => (
    <label>
      {label}
      <select value={chosen[side]} onChange={(e) => setChosen((c) => (side === 0 ? [e.currentTarget.value, c[1]] : [c[0], e.currentTarget.value]))}>
        <option value="">None</option>
        {models.map((m) => (
          <option value={m.id}>{m.id}</option>
        ))}
      </select>
    </label>
  );

  // A select shows its value only once its options exist.
  if (models.length === 0) return <p class="loading">Loading…</p>;
  return (
    <Section title="Playground">
      <form class="playground" onSubmit={send}>
        <div class="inline">
          {picker(0, 'Left model')}
          {picker(1, 'Right model')}
          <label>
            Max tokens
            <input inputMode="numeric" size={5} value={maxTokens} onInput={(e) => setMaxTokens(e.currentTarget.value)} />
          </label>
        </div>
        <label>
          System message (optional)
          <input value={system} onInput={(e) => setSystem(e.currentTarget.value)} />
        </label>
        <label>
          Message
          <textarea rows={3} required value={prompt} onInput={(e) => setPrompt(e.currentTarget.value)} />
        </label>
        <button class="primary" type="submit" disabled={running || !prompt.trim()}>
          Send to both
        </button>
      </form>
      <div class="panes">
        {panes.map((p, i) => (
          <article class="pane" aria-busy={p.running} aria-label={`Answer of ${p.model}`} data-side={i === 0 ? 'left' : 'right'}>
            <h3 class="mono">{p.model}</h3>
            <p class="answer">{p.answer || (p.running ? '…' : '')}</p>
            <ErrorNote error={p.error} />
          </article>
        ))}
      </div>
    </Section>
  );
}
