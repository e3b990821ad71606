// The python grader's sandbox, with short limits. Each test is a grader trying to get out.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { pythonSandboxStatus, runGrader, type PythonSandboxOptions, type RunGraderResponse } from '../../src/graders/index.ts';
import { pythonSandboxSkip, sandboxExpected } from '../support/python-sandbox.ts';

const python: PythonSandboxOptions = {
  limits: { wallSeconds: 2, cpuSeconds: 1, memoryBytes: 256 * 1024 * 1024, diskBytes: 8 * 1024 * 1024 },
  hidePaths: [process.cwd()],
};
const skip = pythonSandboxSkip(python);
/** A file of the server's folder (this checkout, wherever it is): the grader must not see or touch it. */
const serverFile = path.join(process.cwd(), 'package.json');

const grade = (source: string, item: unknown = { label: 'Paris' }, modelSample = 'Paris') =>
  runGrader({ type: 'python', name: 'py', source }, { item, modelSample }, { python });

function assertFailed(res: RunGraderResponse, details: RegExp) {
  assert.equal(res.reward, 0);
  assert.equal(res.metadata.errors.python_grader_runtime_error, true);
  assert.match(String(res.metadata.errors.python_grader_runtime_error_details), details);
}

test('the sandbox starts on Linux as root (as in CI)', { skip: sandboxExpected ? false : 'not Linux as root' }, () => {
  const status = pythonSandboxStatus(python);
  assert.ok(status.ok, !status.ok ? status.reason : '');
});

test('a correct grader: reward from grade(sample, item); prints do not forge the result', { skip }, async () => {
  const res = await grade(
    'def grade(sample, item):\n' +
      '    print(\'{"ok": true, "score": 99}\')\n' +
      '    return 1.0 if sample["output_text"] == item["label"] and sample["output_json"] is None else 0.25\n',
  );
  assert.equal(res.reward, 1);
  assert.equal(res.metadata.type, 'python');
  assert.equal(res.metadata.errors.python_grader_runtime_error, false);
  assert.equal((await grade('def grade(s, i):\n    return s["output_json"]["x"] / 4\n', {}, '{"x": 1}')).reward, 0.25);
});

test('a grader that raises scores 0 with the traceback in metadata.errors', { skip }, async () => {
  assertFailed(await grade('def grade(sample, item):\n    raise ValueError("no way")\n'), /ValueError: no way/);
  assertFailed(await grade('def grade(sample, item):\n    return "high"\n'), /must return a number, not str/);
  assertFailed(await grade('def grade(sample, item):\n    return float("nan")\n'), /returned nan/);
  assertFailed(await grade('def nope(sample, item):\n    return 1\n'), /must define grade/);
  assertFailed(await grade('import sys\ndef grade(sample, item):\n    sys.exit(3)\n'), /SystemExit/);
});

test('a grader that loops forever is killed at the CPU/wall limit', { skip }, async () => {
  const started = Date.now();
  assertFailed(await grade('def grade(sample, item):\n    while True:\n        pass\n'), /killed after the (CPU|wall)-time limit/);
  assert.ok(Date.now() - started < 5000);
  assertFailed(await grade('import time\ndef grade(sample, item):\n    time.sleep(60)\n'), /killed after the wall-time limit of 2 s/);
});

test('a grader that allocates too much memory fails', { skip }, async () => {
  assertFailed(await grade('def grade(sample, item):\n    x = bytearray(1024 * 1024 * 1024)\n    return 1\n'), /MemoryError|killed/);
});

test('a grader that tries the network fails (no route, not even to a server on this host)', { skip }, async () => {
  let connections = 0;
  const server = net.createServer((s) => {
    connections++;
    s.destroy();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  try {
    assertFailed(
      await grade(`import socket\ndef grade(sample, item):\n    socket.create_connection(("127.0.0.1", ${port}), timeout=1)\n    return 1\n`),
      /ConnectionRefused|OSError|unreachable/i,
    );
    assertFailed(await grade('import socket\ndef grade(sample, item):\n    socket.create_connection(("1.1.1.1", 80), timeout=1)\n    return 1\n'), /unreachable|OSError/i);
    assertFailed(await grade('import socket\ndef grade(sample, item):\n    socket.getaddrinfo("example.com", 80)\n    return 1\n'), /gaierror|OSError/i);
    assert.equal(connections, 0);
  } finally {
    server.close();
  }
});

test('a grader that writes too much to disk fails; outside its tmpfs it cannot write at all', { skip }, async () => {
  assertFailed(
    await grade('def grade(sample, item):\n    with open("big", "wb") as f:\n        for _ in range(64):\n            f.write(b"x" * 1024 * 1024)\n    return 1\n'),
    /File too large|No space left/,
  );
  assertFailed(
    await grade('def grade(sample, item):\n    for k in range(16):\n        with open("part%d" % k, "wb") as f:\n            f.write(b"x" * 4 * 1024 * 1024)\n    return 1\n'),
    /No space left|File too large/,
  );
  for (const where of ['/var/tmp/x', '/dev/shm/x', '/etc/escape']) {
    assertFailed(await grade(`def grade(sample, item):\n    open(${JSON.stringify(where)}, "w").write("x")\n    return 1\n`), /Read-only|Permission denied/);
  }
  // The server's folder is covered (read-only) or, under /tmp, not there at all: either way nothing lands.
  const escape = path.join(process.cwd(), 'escape.txt');
  assertFailed(await grade(`def grade(sample, item):\n    open(${JSON.stringify(escape)}, "w").write("x")\n    return 1\n`), /Read-only|Permission denied|No such file/);
  assert.ok(!fs.existsSync(escape), 'the grader wrote into the server folder');
});

test('the grader runs as nobody, sees no host processes and none of the server folder; its children die with it', { skip }, async () => {
  assert.ok(fs.existsSync(serverFile));
  const res = await grade(
    'import os\n' +
      'def grade(sample, item):\n' +
      '    assert os.getuid() == 65534 and os.geteuid() == 65534\n' +
      `    assert not os.path.exists(${JSON.stringify(serverFile)})\n` +
      '    pids = [p for p in os.listdir("/proc") if p.isdigit()]\n' +
      '    assert len(pids) < 10, pids\n' +
      '    return 1\n',
  );
  assert.equal(res.reward, 1, JSON.stringify(res.metadata.errors));
  const marker = `sleep ${4000 + Math.floor(Math.random() * 1000)}`;
  const spawned = await grade(
    `import subprocess\ndef grade(sample, item):\n    subprocess.Popen(${JSON.stringify(marker.split(' '))}, start_new_session=True)\n    return 1\n`,
  );
  assert.equal(spawned.reward, 1, JSON.stringify(spawned.metadata.errors));
  await new Promise((r) => setTimeout(r, 200));
  const processes = execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' });
  assert.ok(!processes.includes(marker), 'a process the grader started outlived it');
});
