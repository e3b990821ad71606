// The python grader's sandbox: user code `grade(sample, item) -> float` runs in a child process that
//   - has no network: a new network namespace (`unshare --net`) holds only a loopback that is down;
//   - runs as nobody (65534) with no capabilities and no_new_privs (`setpriv`), in new PID, IPC, UTS
//     and mount namespaces (`unshare --pid --fork --kill-child --mount-proc`): it sees no other
//     process, and every process it starts dies with it;
//   - writes only to a private tmpfs of `diskBytes` mounted on /tmp (its working directory); /var/tmp,
//     /dev/shm and /run/lock are read-only empty tmpfs, and `hidePaths` (the data and models folders,
//     the server's working directory) are covered by empty read-only tmpfs; RLIMIT_FSIZE = diskBytes;
//   - has RLIMIT_CPU = cpuSeconds, RLIMIT_AS = memoryBytes, RLIMIT_NPROC, RLIMIT_NOFILE and no core
//     files (`prlimit`), and is SIGKILLed (its whole process group and PID namespace) after
//     wallSeconds (and by `timeout` 5 s later, should the server itself have died);
//   - gets the source and the JSON arguments on stdin and answers JSON on a duplicate of stdout
//     (stdout itself goes to stderr, so prints cannot forge a result).
// When any of this is unavailable (not Linux, not root, no unshare/setpriv/prlimit/timeout, no python3
// runnable by nobody), `pythonSandboxStatus` says why and python graders are refused (400), never run
// with weaker isolation. Defaults follow OpenAI's published limits: 2 minutes, 2 GB RAM, 1 GB disk,
// 2 CPUs (RLIMIT_CPU counts every thread's time, so 2 CPUs for 2 minutes is 240 CPU seconds).

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';

export interface PythonLimits {
  /** RLIMIT_CPU, summed over threads. Default 240: 2 CPUs for the 2-minute wall time. */
  cpuSeconds: number;
  /** Killed after this long. Default 120. */
  wallSeconds: number;
  /** RLIMIT_AS. Default 2 GiB. */
  memoryBytes: number;
  /** Size of the writable tmpfs and RLIMIT_FSIZE. Default 1 GiB. */
  diskBytes: number;
  /** RLIMIT_NPROC (processes and threads of the sandbox user). Default 64. */
  maxProcesses: number;
  /** Most sandboxes running at once (others wait). Default 2. */
  maxConcurrent: number;
}

export const DEFAULT_PYTHON_LIMITS: PythonLimits = {
  cpuSeconds: 240,
  wallSeconds: 120,
  memoryBytes: 2 * 1024 ** 3,
  diskBytes: 1024 ** 3,
  maxProcesses: 64,
  maxConcurrent: 2,
};

export interface PythonSandboxOptions {
  limits?: Partial<PythonLimits>;
  /** The interpreter (absolute path, runnable by nobody). Default: PYTHON_GRADER_PYTHON, /usr/bin/python3, then python3 on PATH. */
  python?: string;
  /** Folders the code must not see (covered by an empty read-only tmpfs). */
  hidePaths?: string[];
}

/** Limits from the environment: PYTHON_GRADER_CPU_SECONDS, _WALL_SECONDS, _MEMORY_MB, _DISK_MB, _MAX_CONCURRENT. */
export function pythonLimitsFromEnv(env: NodeJS.ProcessEnv = process.env): Partial<PythonLimits> {
  const out: Partial<PythonLimits> = {};
  const num = (name: string) => {
    const v = env[name];
    if (v === undefined || v === '') return undefined;
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive number, got ${JSON.stringify(v)}`);
    return n;
  };
  const cpu = num('PYTHON_GRADER_CPU_SECONDS');
  const wall = num('PYTHON_GRADER_WALL_SECONDS');
  const mem = num('PYTHON_GRADER_MEMORY_MB');
  const disk = num('PYTHON_GRADER_DISK_MB');
  const conc = num('PYTHON_GRADER_MAX_CONCURRENT');
  if (cpu) out.cpuSeconds = cpu;
  if (wall) out.wallSeconds = wall;
  if (mem) out.memoryBytes = mem * 1024 * 1024;
  if (disk) out.diskBytes = disk * 1024 * 1024;
  if (conc) out.maxConcurrent = Math.floor(conc);
  return out;
}

const NOBODY = 65534;

// Runs as nobody inside the sandbox. Reads {mode, source, sample, item} from stdin.
const RUNNER = String.raw`
import sys, os, json, math, traceback
out = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
def answer(obj):
    out.write(json.dumps(obj))
    out.flush()
req = json.loads(sys.stdin.read())
sys.stdin = open(os.devnull)
if req["mode"] == "check":
    import ast
    try:
        tree = ast.parse(req["source"], filename="grader.py")
    except SyntaxError as e:
        answer({"ok": False, "error": "SyntaxError: %s (line %s, column %s)" % (e.msg, e.lineno, e.offset)})
        sys.exit(0)
    if not any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == "grade" for n in tree.body):
        answer({"ok": False, "error": "the source must define a top-level function grade(sample, item)"})
    else:
        answer({"ok": True})
    sys.exit(0)
try:
    namespace = {"__name__": "grader"}
    exec(compile(req["source"], "grader.py", "exec"), namespace)
    grade = namespace.get("grade")
    if not callable(grade):
        raise TypeError("the source must define grade(sample, item)")
    value = grade(req["sample"], req["item"])
    if not isinstance(value, (int, float)):
        raise TypeError("grade() must return a number, not %s" % type(value).__name__)
    value = float(value)
    if not math.isfinite(value):
        raise ValueError("grade() returned %r" % value)
    answer({"ok": True, "score": value})
except BaseException:
    answer({"ok": False, "error": traceback.format_exc()[-4000:]})
`;

// Root inside the new namespaces: private mounts, then drop to nobody with limits. $1 disk bytes,
// $2 python, $3 runner, $4 CPU seconds, $5 address-space bytes, $6 processes, $7… paths to hide. Not exec'd into python: the shell stays PID 1 of the
// namespace so that python gets ordinary signal handling (RLIMIT_CPU's SIGXCPU).
const SETUP = String.raw`
set -e
disk="$1"; python="$2"; runner="$3"; cpu="$4"; mem="$5"; nproc="$6"; shift 6
for hidden in "$@"; do
  if [ -d "$hidden" ]; then mount -t tmpfs -o ro,size=4k,mode=0555 tmpfs "$hidden"; fi
done
mount -t tmpfs -o "size=$disk,mode=1777,nosuid,nodev" tmpfs /tmp
for ro in /var/tmp /dev/shm /run/lock; do
  if [ -d "$ro" ]; then mount -t tmpfs -o ro,size=4k,mode=0555 tmpfs "$ro"; fi
done
mkdir -m 0700 /tmp/grader
chown ${NOBODY}:${NOBODY} /tmp/grader
cd /tmp/grader
set +e
setpriv --reuid=${NOBODY} --regid=${NOBODY} --clear-groups --no-new-privs --inh-caps=-all --bounding-set=-all -- \
  prlimit --cpu="$cpu:$((cpu + 1))" --as="$mem" --fsize="$disk" --nproc="$nproc" --nofile=64 --core=0 -- \
  env -i HOME=/tmp/grader TMPDIR=/tmp/grader PATH=/usr/bin:/bin LANG=C.UTF-8 "$python" -I -c "$runner"
exit $?
`;

export type SandboxStatus = { ok: true; python: string } | { ok: false; reason: string };

const statusCache = new Map<string, SandboxStatus>();

function which(cmd: string): string | null {
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(':')) {
    const p = `${dir}/${cmd}`;
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // next
    }
  }
  return null;
}

function candidatePythons(explicit?: string): string[] {
  if (explicit) return [explicit];
  const list: string[] = [];
  if (process.env.PYTHON_GRADER_PYTHON) return [process.env.PYTHON_GRADER_PYTHON];
  list.push('/usr/bin/python3');
  const onPath = which('python3');
  if (onPath) {
    try {
      list.push(fs.realpathSync(onPath));
    } catch {
      // ignore
    }
  }
  return [...new Set(list)];
}

function sandboxArgs(python: string, limits: PythonLimits, hidePaths: string[]): string[] {
  return [
    '--net', '--mount', '--pid', '--ipc', '--uts', '--fork', '--kill-child', '--mount-proc',
    '--', '/bin/sh', '-c', SETUP, 'sandbox',
    String(Math.floor(limits.diskBytes)), python, RUNNER,
    String(Math.max(1, Math.ceil(limits.cpuSeconds))), String(Math.floor(limits.memoryBytes)), String(limits.maxProcesses),
    ...hidePaths,
  ];
}

function resolveLimits(options: PythonSandboxOptions): PythonLimits {
  return { ...DEFAULT_PYTHON_LIMITS, ...(options.limits ?? {}) };
}

function defaultHidePaths(options: PythonSandboxOptions): string[] {
  const paths = options.hidePaths ?? [process.cwd()];
  // /tmp is replaced wholesale; a hidden path under it needs no cover (and could not be mounted).
  return paths.filter((p) => p.startsWith('/') && !p.includes('\n') && !/^\/(tmp|usr|bin|sbin|lib\w*|etc|proc|dev|sys)?(\/|$)/.test(p));
}

/**
 * Whether python graders can run isolated here, probed once per interpreter choice and hidden paths
 * by running the full sandbox on a trivial check (synchronous: ~0.1 s, once).
 */
export function pythonSandboxStatus(options: PythonSandboxOptions = {}): SandboxStatus {
  const key = JSON.stringify([candidatePythons(options.python), defaultHidePaths(options)]);
  const cached = statusCache.get(key);
  if (cached) return cached;
  const status = probe(options);
  statusCache.set(key, status);
  return status;
}

function probe(options: PythonSandboxOptions): SandboxStatus {
  if (process.platform !== 'linux') return { ok: false, reason: `python graders need Linux namespaces; this server runs on ${process.platform}` };
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    return { ok: false, reason: 'python graders need the server to run as root (to create network, PID and mount namespaces and drop to nobody)' };
  }
  for (const tool of ['unshare', 'setpriv', 'prlimit', 'timeout']) {
    if (!which(tool)) return { ok: false, reason: `python graders need '${tool}' (util-linux), which is not installed` };
  }
  const limits: PythonLimits = { ...DEFAULT_PYTHON_LIMITS, diskBytes: 16 * 1024 * 1024, memoryBytes: 512 * 1024 * 1024, cpuSeconds: 10 };
  let lastError = 'no python3 interpreter found';
  for (const python of candidatePythons(options.python)) {
    if (!fs.existsSync(python)) {
      lastError = `${python} does not exist`;
      continue;
    }
    const res = spawnSync('unshare', sandboxArgs(python, limits, defaultHidePaths(options)), {
      input: JSON.stringify({ mode: 'check', source: 'def grade(sample, item):\n    return 1.0\n' }),
      timeout: 20_000,
      encoding: 'utf8',
    });
    const text = (res.stdout ?? '').trim();
    try {
      if (JSON.parse(text).ok === true) return { ok: true, python };
    } catch {
      // fall through
    }
    lastError = `the sandbox did not start with ${python}: ${(res.stderr || res.error?.message || `exit ${res.status}`).trim().slice(-300)}`;
  }
  return { ok: false, reason: `python graders cannot be isolated on this server (${lastError})` };
}

export type SandboxResult = { ok: true; score: number } | { ok: false; error: string; kind: 'runtime' | 'server' };

// A FIFO gate for concurrent sandboxes.
let running = 0;
const waiting: (() => void)[] = [];
async function acquire(max: number): Promise<() => void> {
  while (running >= max) await new Promise<void>((r) => waiting.push(r));
  running++;
  return () => {
    running--;
    waiting.shift()?.();
  };
}

const MAX_OUTPUT = 1024 * 1024;

/** Runs `mode: 'grade'` (or 'check': parse only) in the sandbox. Never throws for user-code problems. */
export async function runPythonSandbox(
  request: { mode: 'grade'; source: string; sample: unknown; item: unknown } | { mode: 'check'; source: string },
  options: PythonSandboxOptions = {},
): Promise<SandboxResult> {
  const status = pythonSandboxStatus(options);
  if (!status.ok) return { ok: false, kind: 'server', error: status.reason };
  const limits = resolveLimits(options);
  const release = await acquire(limits.maxConcurrent);
  try {
    return await runOnce(status.python, request, limits, defaultHidePaths(options));
  } finally {
    release();
  }
}

function runOnce(python: string, request: object, limits: PythonLimits, hidePaths: string[]): Promise<SandboxResult> {
  return new Promise((resolve) => {
    // `timeout` is a second guard: should this server die, the sandbox still ends shortly after its wall time.
    const guard = String(Math.ceil(limits.wallSeconds) + 5);
    const child = spawn('timeout', ['-s', 'KILL', guard, 'unshare', ...sandboxArgs(python, limits, hidePaths)], { detached: true, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let killedFor: string | null = null;
    const kill = (why: string) => {
      if (killedFor) return;
      killedFor = why;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    };
    const timer = setTimeout(() => kill(`killed after the wall-time limit of ${limits.wallSeconds} s`), limits.wallSeconds * 1000);
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      if (stdout.length > MAX_OUTPUT) kill('killed: the result was larger than 1 MiB');
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr = (stderr + d).slice(-8000);
    });
    child.stdin.on('error', () => {}); // the child may exit before reading everything
    child.stdin.end(JSON.stringify(request));
    child.on('error', (err) => {
      clearTimeout(timer);
      resolve({ ok: false, kind: 'server', error: `could not start the python sandbox: ${err.message}` });
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (killedFor) return resolve({ ok: false, kind: 'runtime', error: killedFor });
      let answer: { ok?: boolean; score?: unknown; error?: unknown } | null = null;
      try {
        answer = JSON.parse(stdout);
      } catch {
        answer = null;
      }
      if (answer && answer.ok === true && (request as { mode: string }).mode === 'check') return resolve({ ok: true, score: 0 });
      if (answer && answer.ok === true && typeof answer.score === 'number') return resolve({ ok: true, score: answer.score });
      if (answer && answer.ok === false) return resolve({ ok: false, kind: 'runtime', error: String(answer.error) });
      resolve({ ok: false, kind: 'runtime', error: describeExit(code, signal, limits, stderr) });
    });
  });
}

function describeExit(code: number | null, signal: NodeJS.Signals | null, limits: PythonLimits, stderr: string): string {
  const tail = stderr.trim().slice(-1500);
  const sig = signal ?? (code !== null && code > 128 ? signalName(code - 128) : null);
  let why: string;
  if (sig === 'SIGXCPU') why = `killed after the CPU-time limit of ${limits.cpuSeconds} s`;
  else if (sig === 'SIGKILL') why = `killed by SIGKILL (the CPU-time limit of ${limits.cpuSeconds} s or the memory limit of ${Math.round(limits.memoryBytes / 1024 / 1024)} MiB)`;
  else if (sig === 'SIGXFSZ') why = `killed: a file exceeded the disk limit of ${Math.round(limits.diskBytes / 1024 / 1024)} MiB`;
  else if (sig) why = `killed by ${sig}`;
  else why = `the grader exited (code ${code}) without a result`;
  return tail ? `${why}\n${tail}` : why;
}

function signalName(n: number): string | null {
  const names: Record<number, string> = { 9: 'SIGKILL', 11: 'SIGSEGV', 6: 'SIGABRT', 24: 'SIGXCPU', 25: 'SIGXFSZ', 15: 'SIGTERM' };
  return names[n] ?? `signal ${n}`;
}
