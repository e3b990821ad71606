// Models: base models on this server, and the organisation's fine-tuned models and checkpoints
// (and checkpoints shared with it), each a link to the playground.
import { useState } from 'preact/hooks';
import { api, type Model } from './api.ts';
import { ErrorNote, Section, formatTime, useAction, usePoll } from './ui.tsx';

export const isBaseModel = (m: Model) => m.owned_by === 'system';

export function ModelsPage() {
  const [models, setModels] = useState<Model[] | null>(null);
  const [act, busy, error] = useAction();
  const reload = usePoll(async () => setModels((await api<{ data: Model[] }>('GET', '/models')).data), 10_000);
  const remove = (m: Model) => {
    if (!confirm(`Delete ${m.id}?`)) return;
    void act(async () => {
      await api('DELETE', `/models/${encodeURIComponent(m.id)}`);
      await reload();
    });
  };
  if (!models) return <p class="loading">Loading…</p>;
  const tuned = models.filter((m) => !isBaseModel(m));
  return (
    <>
      <ErrorNote error={error} />
      <Section title="Base models">
        <ModelTable models={models.filter(isBaseModel)} />
      </Section>
      <Section title="Fine-tuned models and checkpoints">
        {tuned.length === 0 ? (
          <p class="empty">None yet: a job's model and checkpoints appear here.</p>
        ) : (
          <ModelTable
            models={tuned}
            action={(m) =>
              !m.id.includes(':ckpt-step-') && (
                <button class="danger" disabled={busy} aria-label={`Delete ${m.id}`} onClick={() => remove(m)}>
                  Delete
                </button>
              )
            }
          />
        )}
      </Section>
    </>
  );
}

function ModelTable({ models, action }: { models: Model[]; action?: (m: Model) => preact.ComponentChildren }) {
  return (
    <table>
      <thead>
        <tr>
          <th scope="col">Model</th>
          <th scope="col">Owner</th>
          <th scope="col">Created</th>
          <th scope="col">Actions</th>
        </tr>
      </thead>
      <tbody>
        {models.map((m) => (
          <tr key={m.id}>
            <td class="mono">{m.id}</td>
            <td>{m.owned_by}</td>
            <td>{formatTime(m.created)}</td>
            <td>
              <a class="button" href={`#/playground?${isBaseModel(m) ? 'base' : 'tuned'}=${encodeURIComponent(m.id)}`}>
                Playground
              </a>{' '}
              {action?.(m)}
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
