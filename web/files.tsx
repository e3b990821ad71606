// Files: the organisation's uploads, a new upload with its progress, and deleting one.
import { useState } from 'preact/hooks';
import { api, listAll, uploadWithProgress, type FileObject } from './api.ts';
import { ErrorNote, Section, formatBytes, formatTime, useAction, usePoll } from './ui.tsx';

const PURPOSES = ['fine-tune', 'user_data', 'evals'];

export function FilesPage() {
  const [files, setFiles] = useState<FileObject[] | null>(null);
  const [file, setFile] = useState<File | null>(null);
  const [purpose, setPurpose] = useState(PURPOSES[0]);
  const [progress, setProgress] = useState<number | null>(null);
  const [uploaded, setUploaded] = useState<FileObject | null>(null);
  const [act, busy, error] = useAction();
  const reload = usePoll(async () => setFiles(await listAll<FileObject>('/files')), 10_000);

  const upload = (e: Event) => {
    e.preventDefault();
    if (!file) return;
    void act(async () => {
      setUploaded(null);
      setProgress(0);
      try {
        setUploaded(await uploadWithProgress(file, purpose, setProgress));
      } finally {
        setProgress(null);
      }
      (e.target as HTMLFormElement).reset();
      setFile(null);
      await reload();
    });
  };
  const remove = (f: FileObject) => {
    if (!confirm(`Delete ${f.filename} (${f.id})?`)) return;
    void act(async () => {
      await api('DELETE', `/files/${encodeURIComponent(f.id)}`);
      await reload();
    });
  };

  return (
    <>
      <Section title="Upload a file">
        <form class="inline" onSubmit={upload}>
          <label>
            File
            <input type="file" name="file" accept=".jsonl,.json,.txt" required onChange={(e) => setFile(e.currentTarget.files?.[0] ?? null)} />
          </label>
          <label>
            Purpose
            <select value={purpose} onChange={(e) => setPurpose(e.currentTarget.value)}>
              {PURPOSES.map((p) => (
                <option value={p}>{p}</option>
              ))}
            </select>
          </label>
          <button type="submit" class="primary" disabled={busy || !file}>
            Upload
          </button>
          {progress !== null && <progress aria-label="Upload progress" max={1} value={progress} />}
        </form>
        {uploaded && <p class="ok" role="status">Uploaded {uploaded.filename} as {uploaded.id}.</p>}
        <ErrorNote error={error} />
      </Section>
      <Section title="Files">
        {files === null ? (
          <p class="loading">Loading…</p>
        ) : files.length === 0 ? (
          <p class="empty">No files yet.</p>
        ) : (
          <table>
            <thead>
              <tr>
                <th scope="col">File</th>
                <th scope="col">Name</th>
                <th scope="col">Purpose</th>
                <th scope="col">Size</th>
                <th scope="col">Created</th>
                <th scope="col">Actions</th>
              </tr>
            </thead>
            <tbody>
              {files.map((f) => (
                <tr key={f.id}>
                  <td class="mono">{f.id}</td>
                  <td>{f.filename}</td>
                  <td>{f.purpose}</td>
                  <td>{formatBytes(f.bytes)}</td>
                  <td>{formatTime(f.created_at)}</td>
                  <td>
                    <button class="danger" aria-label={`Delete ${f.filename}`} disabled={busy} onClick={() => remove(f)}>
                      Delete
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Section>
    </>
  );
}
