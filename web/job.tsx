// A job's page: status and actions (pause, resume, cancel), its error, live charts of every metric
// it emits, its events as they arrive, resolved hyperparameters and options, checkpoints (chat,
// export, share) and the result file.
import { useMemo, useState } from 'preact/hooks';
import { RequestError, api, download, fileText, listAll, type Checkpoint, type Job, type ListObject } from './api.ts';
import { Chart } from './chart.tsx';
import { EventLog, chartsOf, metricPoints } from './metrics.ts';
import { ErrorNote, Section, Status, formatNumber, formatTime, href, useAction, usePoll } from './ui.tsx';
import { isTerminalStatus } from '../src/domain/job-status.ts';

const POLL_MS = 1500;
const EXPORT_FORMATS = ['peft', 'safetensors', 'gguf'];

export function JobPage({ id }: { id: string }) {
  const path = `/fine_tuning/jobs/${encodeURIComponent(id)}`;
  const [job, setJob] = useState<Job | null>(null);
  const [log] = useState(() => new EventLog(id));
  const [eventsVersion, setEventsVersion] = useState(0);
  const [checkpoints, setCheckpoints] = useState<Checkpoint[]>([]);
  const [loadError, setLoadError] = useState<unknown>(null);
  const [act, busy, actionError] = useAction();
  const ended = job !== null && isTerminalStatus(job.status);

  const reload = usePoll(
    async () => {
      try {
        const current = await api<Job>('GET', path);
        if (await log.update()) setEventsVersion((v) => v + 1);
        setCheckpoints(await listAll<Checkpoint>(`${path}/checkpoints`));
        setJob(current);
        setLoadError(null);
      } catch (err) {
        setLoadError(err);
      }
    },
    POLL_MS,
    !ended,
    [id],
  );

  const charts = useMemo(() => chartsOf(metricPoints(log.events)), [eventsVersion]);
  const last = log.events.find((e) => e.type === 'metrics')?.data;

  if (!job) return loadError ? <ErrorNote error={loadError} /> : <p class="loading">Loading…</p>;
  const action = (name: 'pause' | 'resume' | 'cancel') => () =>
    act(async () => {
      await api('POST', `${path}/${name}`);
      await reload();
    });
  const settings = job.method[job.method.type];
  const hyperparameters = typeof settings === 'object' ? (settings.hyperparameters ?? {}) : {};

  return (
    <>
      <Section
        title={`Job ${job.id}`}
        actions={
          <div class="actions">
            {['running', 'queued', 'validating_files'].includes(job.status) && (
              <button onClick={action('pause')} disabled={busy || job.status !== 'running'}>
                Pause
              </button>
            )}
            {job.status === 'paused' && (
              <button onClick={action('resume')} disabled={busy}>
                Resume
              </button>
            )}
            {!ended && (
              <button class="danger" onClick={action('cancel')} disabled={busy}>
                Cancel
              </button>
            )}
          </div>
        }
      >
        <ErrorNote error={actionError} />
        <dl class="facts">
          <dt>Status</dt>
          <dd>
            <Status status={job.status} />
            {last && ` step ${last.step} of ${last.total_steps}`}
          </dd>
          <dt>Base model</dt>
          <dd>{job.model}</dd>
          <dt>Method</dt>
          <dd>{job.method.type}</dd>
          <dt>Fine-tuned model</dt>
          <dd>{job.fine_tuned_model ? <a href={`#/playground?tuned=${encodeURIComponent(job.fine_tuned_model)}&base=${encodeURIComponent(job.model)}`}>{job.fine_tuned_model}</a> : '—'}</dd>
          <dt>Created</dt>
          <dd>{formatTime(job.created_at)}</dd>
          <dt>{ended ? 'Finished' : 'Estimated finish'}</dt>
          <dd>{formatTime(ended ? job.finished_at : job.estimated_finish)}</dd>
          <dt>Trained tokens</dt>
          <dd>{formatNumber(job.trained_tokens)}</dd>
        </dl>
        {job.error && job.status === 'failed' && (
          <div class="error" role="alert">
            <strong>{job.error.code}</strong>
            {job.error.param && ` (${job.error.param})`}: {job.error.message}
          </div>
        )}
      </Section>

      <Section title="Metrics">
        {charts.length === 0 ? <p class="empty">No metrics yet: they appear with the first training step.</p> : <div class="charts">{charts.map((c) => <Chart key={c.title} title={c.title} series={c.series} />)}</div>}
      </Section>

      <div class="columns">
        <Section title="Hyperparameters and options">
          <dl class="facts">
            {Object.entries(hyperparameters).map(([k, v]) => (
              <>
                <dt>{k}</dt>
                <dd>{formatNumber(v)}</dd>
              </>
            ))}
            {Object.entries(job.training_options ?? {}).map(([k, v]) => (
              <>
                <dt>{k}</dt>
                <dd>{typeof v === 'object' && v !== null ? JSON.stringify(v) : formatNumber(v)}</dd>
              </>
            ))}
            <dt>seed</dt>
            <dd>{job.seed}</dd>
            <dt>suffix</dt>
            <dd>{job.user_provided_suffix ?? '—'}</dd>
            <dt>training_file</dt>
            <dd>{job.training_file}</dd>
            <dt>validation_file</dt>
            <dd>{job.validation_file ?? '—'}</dd>
            {job.metadata && Object.keys(job.metadata).length > 0 && (
              <>
                <dt>metadata</dt>
                <dd>{JSON.stringify(job.metadata)}</dd>
              </>
            )}
            {job.integrations.length > 0 && (
              <>
                <dt>integrations</dt>
                <dd>{JSON.stringify(job.integrations)}</dd>
              </>
            )}
          </dl>
        </Section>
        <Section title="Result file">
          {job.result_files.length ? job.result_files.map((f) => <ResultFile fileId={f} />) : <p class="empty">Written when the job succeeds.</p>}
        </Section>
      </div>

      <Section title="Checkpoints">
        {checkpoints.length === 0 ? <p class="empty">No checkpoints yet.</p> : <Checkpoints job={job} checkpoints={checkpoints} />}
      </Section>

      <Section title="Events">
        <ol class="events" aria-live="polite">
          {log.events.map((e) => (
            <li key={e.id} class={`event-${e.level}`}>
              <time>{formatTime(e.created_at)}</time> <span class="level">{e.level}</span> {e.message}
            </li>
          ))}
        </ol>
      </Section>
    </>
  );
}

function Checkpoints({ job, checkpoints }: { job: Job; checkpoints: Checkpoint[] }) {
  const [open, setOpen] = useState<string | null>(null);
  const metricNames = [...new Set(checkpoints.flatMap((c) => Object.keys(c.metrics)))].filter((k) => k !== 'step');
  return (
    <table class="checkpoints">
      <thead>
        <tr>
          <th scope="col">Step</th>
          {metricNames.map((m) => (
            <th scope="col">{m}</th>
          ))}
          <th scope="col">Actions</th>
        </tr>
      </thead>
      <tbody>
        {[...checkpoints]
          .sort((a, b) => b.step_number - a.step_number)
          .map((c) => (
            <>
              <tr key={c.id}>
                <td>{c.step_number}</td>
                {metricNames.map((m) => (
                  <td>{formatNumber(c.metrics[m])}</td>
                ))}
                <td>
                  <button class="nowrap" aria-expanded={open === c.id} onClick={() => setOpen(open === c.id ? null : c.id)}>
                    Open step {c.step_number}
                  </button>
                </td>
              </tr>
              {open === c.id && (
                <tr class="detail">
                  <td colSpan={metricNames.length + 2}>
                    <CheckpointActions job={job} checkpoint={c} />
                  </td>
                </tr>
              )}
            </>
          ))}
      </tbody>
    </table>
  );
}

interface Permission {
  id: string;
  project_id: string;
  created_at: number;
}

function CheckpointActions({ job, checkpoint }: { job: Job; checkpoint: Checkpoint }) {
  const name = checkpoint.fine_tuned_model_checkpoint;
  const [format, setFormat] = useState(EXPORT_FORMATS[0]);
  const [project, setProject] = useState('');
  const [permissions, setPermissions] = useState<Permission[] | null>(null);
  const [shareNote, setShareNote] = useState('');
  const [act, busy, error] = useAction();
  const permissionsPath = `/fine_tuning/checkpoints/${encodeURIComponent(name)}/permissions`;

  const loadPermissions = () =>
    act(async () => {
      try {
        setPermissions((await api<ListObject<Permission>>('GET', permissionsPath)).data);
      } catch (err) {
        // Sharing is for admin keys: say so instead of showing an error.
        if (err instanceof RequestError && err.status === 403) setShareNote(err.message);
        else throw err;
      }
    });
  usePoll(loadPermissions, 0, false, [name]);

  return (
    <div class="checkpoint-actions">
      <p class="mono">{name}</p>
      <a class="button" href={`#/playground?tuned=${encodeURIComponent(name)}&base=${encodeURIComponent(job.model)}`}>
        Chat with this checkpoint
      </a>
      <form
        class="inline"
        onSubmit={(e) => {
          e.preventDefault();
          void act(() => download(`/models/${encodeURIComponent(name)}/export?format=${format}`, `${name.replace(/[^\w.-]+/g, '-')}.${format === 'gguf' ? 'gguf' : 'tar'}`));
        }}
      >
        <label>
          Export format
          <select value={format} onChange={(e) => setFormat(e.currentTarget.value)}>
            {EXPORT_FORMATS.map((f) => (
              <option value={f}>{f}</option>
            ))}
          </select>
        </label>
        <button type="submit" disabled={busy}>
          Download
        </button>
      </form>
      {shareNote ? (
        <p class="hint">{shareNote}</p>
      ) : (
        <form
          class="inline"
          onSubmit={(e) => {
            e.preventDefault();
            void act(async () => {
              await api('POST', permissionsPath, { project_ids: [project.trim()] });
              setProject('');
              setPermissions((await api<ListObject<Permission>>('GET', permissionsPath)).data);
            });
          }}
        >
          <label>
            Share with project
            <input value={project} onInput={(e) => setProject(e.currentTarget.value)} required placeholder="proj_…" />
          </label>
          <button type="submit" disabled={busy}>
            Share
          </button>
          {permissions && permissions.length > 0 && (
            <ul class="plain">
              {permissions.map((p) => (
                <li>
                  {p.project_id}{' '}
                  <button
                    class="link"
                    type="button"
                    onClick={() =>
                      act(async () => {
                        await api('DELETE', `${permissionsPath}/${encodeURIComponent(p.id)}`);
                        setPermissions((ps) => (ps ?? []).filter((x) => x.id !== p.id));
                      })
                    }
                  >
                    Stop sharing
                  </button>
                </li>
              ))}
            </ul>
          )}
        </form>
      )}
      <ErrorNote error={error} />
    </div>
  );
}

/** The result CSV as a table, and a download of it. */
function ResultFile({ fileId }: { fileId: string }) {
  const [rows, setRows] = useState<string[][] | null>(null);
  const [act, , error] = useAction();
  usePoll(() => act(async () => setRows((await fileText(fileId)).trim().split('\n').map((line) => line.split(',')))), 0, false, [fileId]);
  return (
    <div>
      <p>
        <button onClick={() => act(() => download(`/files/${encodeURIComponent(fileId)}/content`, `${fileId}.csv`))}>Download {fileId}</button>
      </p>
      <ErrorNote error={error} />
      {rows && (
        <div class="scroll">
          <table class="result">
            <thead>
              <tr>
                {rows[0].map((h) => (
                  <th scope="col">{h}</th>
                ))}
              </tr>
            </thead>
            <tbody>
              {rows.slice(1).map((r) => (
                <tr>
                  {r.map((cell) => (
                    <td>{cell === '' ? '' : formatNumber(Number(cell))}</td>
                  ))}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}
