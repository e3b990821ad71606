// The create-job form. The API is the one judge of what is valid: a 400's `param` (e.g.
// method.supervised.hyperparameters.n_epochs) puts its message on the field of that name.
import { useState } from 'preact/hooks';
import { RequestError, api, listAll, type FileObject, type Job, type Model } from './api.ts';
import { ErrorNote, Section, href, usePoll } from './ui.tsx';

const HYPERPARAMETERS: Record<string, string[]> = {
  supervised: ['n_epochs', 'batch_size', 'learning_rate_multiplier'],
  dpo: ['n_epochs', 'batch_size', 'learning_rate_multiplier', 'beta'],
};

/** "" → left to the server ("auto"); a number → that number; anything else as typed. */
function valueOf(text: string): string | number | undefined {
  const trimmed = text.trim();
  if (trimmed === '') return undefined;
  return trimmed !== 'auto' && Number.isFinite(Number(trimmed)) ? Number(trimmed) : trimmed;
}

export function CreateJobPage() {
  const [models, setModels] = useState<Model[]>([]);
  const [files, setFiles] = useState<FileObject[]>([]);
  const [fields, setFields] = useState<Record<string, string>>({ model: '', training_file: '', validation_file: '', method: 'supervised', suffix: '', seed: '' });
  const [fieldErrors, setFieldErrors] = useState<Record<string, string>>({});
  const [formError, setFormError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  usePoll(
    async () => {
      const [m, f] = await Promise.all([api<{ data: Model[] }>('GET', '/models'), listAll<FileObject>('/files')]);
      setModels(m.data);
      setFiles(f.filter((x) => x.purpose === 'fine-tune'));
      setFields((s) => ({ ...s, model: s.model || m.data[0]?.id || '', training_file: s.training_file || f.find((x) => x.purpose === 'fine-tune')?.id || '' }));
    },
    0,
    false,
  );

  const set = (name: string) => (e: Event) => setFields((s) => ({ ...s, [name]: (e.currentTarget as HTMLInputElement).value }));

  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setFieldErrors({});
    setFormError(null);
    const hyperparameters = Object.fromEntries(HYPERPARAMETERS[fields.method].map((k) => [k, valueOf(fields[k] ?? '')]).filter(([, v]) => v !== undefined));
    try {
      const job = await api<Job>('POST', '/fine_tuning/jobs', {
        model: fields.model,
        training_file: fields.training_file,
        ...(fields.validation_file ? { validation_file: fields.validation_file } : {}),
        ...(fields.suffix.trim() ? { suffix: fields.suffix.trim() } : {}),
        ...(valueOf(fields.seed) !== undefined ? { seed: valueOf(fields.seed) } : {}),
        method: { type: fields.method, [fields.method]: { hyperparameters } },
      });
      location.hash = href('jobs', job.id);
    } catch (err) {
      const field = err instanceof RequestError && err.param ? fieldOf(err.param) : null;
      if (field) setFieldErrors({ [field]: (err as RequestError).message });
      else setFormError(err);
    } finally {
      setBusy(false);
    }
  };

  /** The form field a param names: its last segment (method.type → method). */
  const fieldOf = (param: string) => {
    const parts = param.split('.');
    const name = parts[parts.length - 1] === 'type' ? parts[parts.length - 2] : parts[parts.length - 1];
    return name in fields || HYPERPARAMETERS[fields.method].includes(name) ? name : null;
  };

  const field = (name: string, label: string, input: (props: Record<string, unknown>) => preact.JSX.Element, hint?: string) => {
    const error = fieldErrors[name];
    return (
      <div class={`field${error ? ' invalid' : ''}`}>
        <label for={`f-${name}`}>{label}</label>
        {input({ id: `f-${name}`, name, value: fields[name] ?? '', onInput: set(name), onChange: set(name), 'aria-invalid': error ? 'true' : undefined, 'aria-describedby': error ? `e-${name}` : hint ? `h-${name}` : undefined })}
        {error ? (
          <p class="field-error" id={`e-${name}`} role="alert">
            {error}
          </p>
        ) : (
          hint && (
            <p class="hint" id={`h-${name}`}>
              {hint}
            </p>
          )
        )}
      </div>
    );
  };
  const fileOptions = files.map((f) => <option value={f.id}>{`${f.filename} (${f.id})`}</option>);

  // A select shows its value only once its options exist.
  if (models.length === 0) return <p class="loading">Loading…</p>;
  return (
    <Section title="Create a fine-tuning job">
      <form class="create-job" onSubmit={submit} noValidate>
        {field('model', 'Base model', (p) => <select {...p}>{models.map((m) => <option value={m.id}>{m.id}</option>)}</select>)}
        {field('training_file', 'Training file', (p) => <select {...p}><option value="">Choose a file</option>{fileOptions}</select>, 'Upload files on the Files page.')}
        {field('validation_file', 'Validation file (optional)', (p) => <select {...p}><option value="">None</option>{fileOptions}</select>)}
        {field('method', 'Method', (p) => (
          <select {...p}>
            <option value="supervised">supervised</option>
            <option value="dpo">dpo</option>
          </select>
        ))}
        <fieldset>
          <legend>Hyperparameters (blank: auto)</legend>
          {HYPERPARAMETERS[fields.method].map((k) => field(k, k, (p) => <input inputMode="decimal" placeholder="auto" {...p} />))}
        </fieldset>
        {field('suffix', 'Suffix', (p) => <input {...p} placeholder="optional" />, 'Up to 64 characters, part of the fine-tuned model name.')}
        {field('seed', 'Seed', (p) => <input inputMode="numeric" placeholder="random" {...p} />)}
        <ErrorNote error={formError} />
        <button class="primary" type="submit" disabled={busy}>
          Create job
        </button>
      </form>
    </Section>
  );
}
