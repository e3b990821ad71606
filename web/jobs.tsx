// The jobs list (filters, live status by polling, selection for comparing) and the compare page,
// which overlays one metric of several jobs.
import { useMemo, useState } from 'preact/hooks';
import { listAll, type Job } from './api.ts';
import { Chart } from './chart.tsx';
import { EventLog, metricPoints } from './metrics.ts';
import { ErrorNote, Section, Status, formatTime, href, usePoll } from './ui.tsx';
import { isTerminalStatus } from '../src/domain/job-status.ts';

const POLL_MS = 3000;

export function JobsPage() {
  const [jobs, setJobs] = useState<Job[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [status, setStatus] = useState('');
  const [model, setModel] = useState('');
  const [method, setMethod] = useState('');
  const [selected, setSelected] = useState<string[]>([]);

  usePoll(async () => {
    try {
      setJobs(await listAll<Job>('/fine_tuning/jobs'));
      setError(null);
    } catch (err) {
      setError(err);
    }
  }, POLL_MS);

  const shown = (jobs ?? []).filter((j) => (!status || j.status === status) && (!model || j.model === model) && (!method || j.method.type === method));
  const distinct = (values: string[]) => [...new Set(values)].sort();
  const toggle = (id: string) => setSelected((s) => (s.includes(id) ? s.filter((x) => x !== id) : [...s, id]));

  return (
    <Section
      title="Fine-tuning jobs"
      actions={
        <div class="actions">
          {selected.length >= 2 ? (
            <a class="button" href={`#/compare?jobs=${selected.join(',')}`}>
              Compare {selected.length} jobs
            </a>
          ) : (
            <span class="hint">Select two or more jobs to compare them</span>
          )}
          <a class="button primary" href="#/jobs/new">
            Create job
          </a>
        </div>
      }
    >
      <div class="filters">
        <Filter label="Status" value={status} onChange={setStatus} options={distinct((jobs ?? []).map((j) => j.status))} />
        <Filter label="Model" value={model} onChange={setModel} options={distinct((jobs ?? []).map((j) => j.model))} />
        <Filter label="Method" value={method} onChange={setMethod} options={distinct((jobs ?? []).map((j) => j.method.type))} />
      </div>
      <ErrorNote error={error} />
      {jobs === null ? (
        <p class="loading">Loading…</p>
      ) : shown.length === 0 ? (
        <p class="empty">{jobs.length ? 'No job matches the filters.' : 'No fine-tuning jobs yet.'}</p>
      ) : (
        <table class="jobs">
          <thead>
            <tr>
              <th scope="col">Compare</th>
              <th scope="col">Job</th>
              <th scope="col">Status</th>
              <th scope="col">Model</th>
              <th scope="col">Method</th>
              <th scope="col">Created</th>
              <th scope="col">Finished</th>
            </tr>
          </thead>
          <tbody>
            {shown.map((j) => (
              <tr key={j.id}>
                <td>
                  <input type="checkbox" aria-label={`Compare ${j.id}`} checked={selected.includes(j.id)} onChange={() => toggle(j.id)} />
                </td>
                <td>
                  <a href={href('jobs', j.id)}>{j.id}</a>
                  {j.fine_tuned_model && <div class="sub">{j.fine_tuned_model}</div>}
                </td>
                <td>
                  <Status status={j.status} />
                </td>
                <td>{j.model}</td>
                <td>{j.method.type}</td>
                <td>{formatTime(j.created_at)}</td>
                <td>{formatTime(j.finished_at)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </Section>
  );
}

function Filter({ label, value, onChange, options }: { label: string; value: string; onChange: (v: string) => void; options: string[] }) {
  return (
    <label>
      {label}
      <select value={value} onChange={(e) => onChange(e.currentTarget.value)}>
        <option value="">All</option>
        {options.map((o) => (
          <option value={o}>{o}</option>
        ))}
      </select>
    </label>
  );
}

export function ComparePage({ ids }: { ids: string[] }) {
  const [logs] = useState(() => ids.map((id) => new EventLog(id)));
  const [version, setVersion] = useState(0);
  const [metric, setMetric] = useState('train_loss');
  const [error, setError] = useState<unknown>(null);
  const [finished, setFinished] = useState(false);

  usePoll(
    async () => {
      try {
        const jobs = await listAll<Job>('/fine_tuning/jobs');
        const added = await Promise.all(logs.map((log) => log.update()));
        if (added.some(Boolean)) setVersion((v) => v + 1);
        setFinished(ids.every((id) => isTerminalStatus(jobs.find((j) => j.id === id)?.status ?? 'succeeded')));
      } catch (err) {
        setError(err);
      }
    },
    POLL_MS,
    !finished,
  );

  const perJob = useMemo(() => logs.map((log) => ({ id: log.jobId, points: metricPoints(log.events) })), [version]);
  const metrics = [...new Set(perJob.flatMap((j) => [...j.points.keys()]))].sort();
  const series = perJob.map((j) => ({ label: j.id, points: j.points.get(metric) ?? [] }));

  return (
    <Section title="Compare runs">
      <ErrorNote error={error} />
      <label>
        Metric
        <select value={metric} onChange={(e) => setMetric(e.currentTarget.value)}>
          {(metrics.length ? metrics : [metric]).map((m) => (
            <option value={m}>{m}</option>
          ))}
        </select>
      </label>
      <Chart title={metric} series={series} />
      <ul class="plain">
        {ids.map((id) => (
          <li>
            <a href={href('jobs', id)}>{id}</a>
          </li>
        ))}
      </ul>
    </Section>
  );
}
