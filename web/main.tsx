// The dashboard's shell: sign-in (when the server has API keys), navigation, and the page of the
// current #/ route. Every page is a client of the OpenAI-compatible API and nothing else.
import './style.css';
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { RequestError, api, storedKey } from './api.ts';
import { ErrorNote, useRoute } from './ui.tsx';
import { JobsPage, ComparePage } from './jobs.tsx';
import { JobPage } from './job.tsx';
import { CreateJobPage } from './create-job.tsx';
import { FilesPage } from './files.tsx';
import { ModelsPage } from './models.tsx';
import { PlaygroundPage } from './playground.tsx';

type Session = 'checking' | 'signed-out' | 'open' | 'signed-in';

function SignIn({ onSignedIn }: { onSignedIn: () => void }) {
  const [key, setKey] = useState('');
  const [error, setError] = useState<unknown>(null);
  const submit = async (e: Event) => {
    e.preventDefault();
    setError(null);
    try {
      await api('GET', '/models', undefined, key.trim());
      storedKey.set(key.trim());
      onSignedIn();
    } catch (err) {
      setError(err);
    }
  };
  return (
    <main class="signin">
      <h1>tuneforge</h1>
      <form onSubmit={submit}>
        <label>
          API key
          <input type="password" name="api_key" autocomplete="current-password" required value={key} onInput={(e) => setKey(e.currentTarget.value)} autofocus />
        </label>
        <button type="submit">Sign in</button>
        <ErrorNote error={error} />
      </form>
    </main>
  );
}

const NAV = [
  ['jobs', 'Jobs'],
  ['files', 'Files'],
  ['models', 'Models'],
  ['playground', 'Playground'],
] as const;

function Page() {
  const { path, query } = useRoute();
  const [section = 'jobs', id] = path;
  if (section === 'jobs' && id === 'new') return <CreateJobPage />;
  if (section === 'jobs' && id) return <JobPage key={id} id={id} />;
  if (section === 'compare') return <ComparePage key={query.get('jobs') ?? ''} ids={(query.get('jobs') ?? '').split(',').filter(Boolean)} />;
  if (section === 'files') return <FilesPage />;
  if (section === 'models') return <ModelsPage />;
  if (section === 'playground') return <PlaygroundPage base={query.get('base')} tuned={query.get('tuned')} />;
  return <JobsPage />;
}

function App() {
  const [session, setSession] = useState<Session>('checking');
  const [error, setError] = useState<unknown>(null);
  const { path } = useRoute();

  const check = async () => {
    try {
      await api('GET', '/models');
      setSession(storedKey.get() ? 'signed-in' : 'open');
    } catch (err) {
      if (err instanceof RequestError && err.status === 401) {
        storedKey.clear();
        setSession('signed-out');
      } else setError(err);
    }
  };
  useEffect(() => void check(), []);

  if (error) return <ErrorNote error={error} />;
  if (session === 'checking') return <p class="loading">Loading…</p>;
  if (session === 'signed-out') return <SignIn onSignedIn={() => setSession('signed-in')} />;
  const current = path[0] === 'compare' || !path[0] ? 'jobs' : path[0];
  return (
    <>
      <header>
        <a class="brand" href="#/jobs">
          tuneforge
        </a>
        <nav aria-label="Main">
          {NAV.map(([route, label]) => (
            <a href={`#/${route}`} aria-current={current === route ? 'page' : undefined}>
              {label}
            </a>
          ))}
        </nav>
        {session === 'signed-in' && (
          <button
            class="link"
            onClick={() => {
              storedKey.clear();
              setSession('signed-out');
            }}
          >
            Sign out
          </button>
        )}
      </header>
      <main>
        <Page />
      </main>
    </>
  );
}

render(<App />, document.getElementById('app')!);
