// The Kubernetes manifests (deploy/k8s) parse, and agree with the service they deploy: every env var
// they set is a configuration key (README's Configuration table, read by src/ or, AWS_*, by the AWS
// SDK) whose value loadConfig accepts; each Deployment sets what a cluster needs (PostgreSQL, the
// bucket, API keys); probes reach a route that answers without a key; ports, selectors and the
// objects they name match.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseAllDocuments } from 'yaml';
import { isLoopback, loadConfig } from '../../src/config.ts';
import { startTestServer, type TestServer } from '../support/server.ts';

const ROOT = path.resolve(import.meta.dirname, '../..');
const K8S = path.join(ROOT, 'deploy/k8s');

type Manifest = { apiVersion: string; kind: string; metadata: { name: string; labels?: Record<string, string>; annotations?: Record<string, string> }; [key: string]: any };

const files = fs.readdirSync(K8S).filter((f) => f.endsWith('.yaml')).sort();
const manifests: (Manifest & { file: string })[] = files.flatMap((file) =>
  parseAllDocuments(fs.readFileSync(path.join(K8S, file), 'utf8')).map((doc) => {
    assert.deepEqual(doc.errors, [], `${file} parses`);
    return { ...(doc.toJS() as Manifest), file };
  }),
);
const named = (kind: string, name: string) => manifests.find((m) => m.kind === kind && m.metadata.name === name);
const ofKind = (kind: string) => manifests.filter((m) => m.kind === kind);
const deployment = (name: string) => named('Deployment', name)!;

/** Env var names README's Configuration table documents (full names in its first column). */
function documentedKeys(): Set<string> {
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const table = readme.split('## Configuration')[1].split('\n## ')[0];
  const keys = new Set<string>();
  for (const line of table.split('\n').filter((l) => l.startsWith('| `'))) {
    for (const [, name] of line.split('|')[1].matchAll(/`([A-Z][A-Z0-9_]+)`/g)) keys.add(name);
  }
  return keys;
}

/** Every .ts file under src/, concatenated: a key the code reads appears in it by name. */
const sourceText = (function read(dir: string): string {
  return fs.readdirSync(dir, { withFileTypes: true }).map((e) => (e.isDirectory() ? read(path.join(dir, e.name)) : e.name.endsWith('.ts') ? fs.readFileSync(path.join(dir, e.name), 'utf8') : '')).join('\n');
})(path.join(ROOT, 'src'));

/** A container's environment as the pod sees it: its ConfigMaps and Secrets, then its own env (resource fields resolved). */
function containerEnv(container: any): Record<string, string> {
  const env: Record<string, string> = {};
  for (const from of container.envFrom ?? []) {
    const source = from.configMapRef ? named('ConfigMap', from.configMapRef.name) : named('Secret', from.secretRef.name);
    assert.ok(source, `${container.name}: envFrom names ${JSON.stringify(from)}, which the manifests define`);
    Object.assign(env, source.data ?? {}, source.stringData ?? {});
  }
  for (const e of container.env ?? []) {
    if (e.value !== undefined) env[e.name] = e.value;
    else if (e.valueFrom?.resourceFieldRef) {
      const [kind, resource] = e.valueFrom.resourceFieldRef.resource.split('.');
      const amount = container.resources?.[kind]?.[resource];
      assert.ok(amount !== undefined, `${container.name}: ${e.name} reads ${kind}.${resource}, which the container sets`);
      env[e.name] = String(Math.ceil(Number(amount)));
    } else assert.fail(`${container.name}: ${e.name} has neither a value nor a resource field`);
  }
  return env;
}

const onlyContainer = (name: string) => {
  const containers = deployment(name).spec.template.spec.containers;
  assert.equal(containers.length, 1);
  return containers[0];
};

describe('Kubernetes manifests (deploy/k8s)', () => {
  it('parse, and the kustomization lists every one but the ServiceMonitor (which needs the Prometheus Operator)', () => {
    assert.ok(manifests.length >= 8);
    for (const m of manifests) assert.ok(m.apiVersion && m.kind && (m.kind === 'Kustomization' || m.metadata?.name), `${m.file}: apiVersion, kind and a name`);
    const kustomization = manifests.find((m) => m.kind === 'Kustomization')!;
    assert.deepEqual([...kustomization.resources].sort(), files.filter((f) => f !== 'kustomization.yaml' && f !== 'servicemonitor.yaml'));
    assert.ok(kustomization.images.some((i: { name: string }) => i.name === onlyContainer('tuneforge-api').image));
  });

  it('set only configuration keys, as strings: documented in README and read by the code (AWS_* by the AWS SDK)', () => {
    const documented = documentedKeys();
    const values: [string, unknown][] = [
      ...[...ofKind('ConfigMap'), ...ofKind('Secret').filter((s) => s.metadata.name === 'tuneforge-secrets')].flatMap((m) => Object.entries({ ...m.data, ...m.stringData })),
      ...ofKind('Deployment').flatMap((d) => d.spec.template.spec.containers.flatMap((c: any) => (c.env ?? []).map((e: any) => [e.name, e.value ?? 'from a resource field']))),
    ];
    assert.ok(values.length > 10);
    for (const [name, value] of values) {
      assert.ok(documented.has(name), `${name} is in README's Configuration table`);
      assert.ok(name.startsWith('AWS_') || sourceText.includes(name), `${name} is read by src/`);
      assert.equal(typeof value, 'string', `${name}: Kubernetes takes env values as strings`);
    }
  });

  for (const [name, role] of [['tuneforge-api', 'api'], ['tuneforge-worker', 'worker']] as const) {
    it(`${name}: its environment loads, with PostgreSQL, the bucket and its credentials set`, () => {
      const env = containerEnv(onlyContainer(name));
      const config = loadConfig({}, env);
      assert.match(config.databaseUrl ?? '', /^postgres(ql)?:\/\//, 'DATABASE_URL: rows shared by every pod');
      assert.match(config.blobStore ?? '', /^s3:\/\//, 'BLOB_STORE: blobs shared by every pod');
      for (const key of ['AWS_ENDPOINT_URL', 'AWS_REGION', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY']) assert.ok(env[key], `${key} set`);
      if (role === 'api') {
        assert.ok(!isLoopback(config.host), 'the API listens beyond loopback');
        assert.ok(config.apiKeys.length > 0 && config.apiKeys.some((k) => k.admin), 'API_KEYS and ADMIN_API_KEYS set (required beyond loopback; /metrics needs an admin key)');
        assert.equal(config.training.embeddedWorker, false, 'API replicas leave training to the workers');
        assert.ok(path.isAbsolute(config.modelsDir));
      } else {
        assert.equal(config.worker.cores, Number(onlyContainer(name).resources.limits.cpu), 'WORKER_CORES: the container’s CPU limit');
      }
    });
  }

  it('mount what they name: data and models folders, the models claim', () => {
    for (const d of ofKind('Deployment')) {
      const container = d.spec.template.spec.containers[0];
      const env = containerEnv(container);
      const mounted = (dir: string) => container.volumeMounts.some((v: { mountPath: string }) => dir === v.mountPath || dir.startsWith(`${v.mountPath}/`));
      assert.ok(mounted(env.DATA_DIR) && mounted(env.MODELS_DIR), `${d.metadata.name}: DATA_DIR and MODELS_DIR on volumes`);
      for (const volume of d.spec.template.spec.volumes) {
        if (volume.persistentVolumeClaim) assert.ok(named('PersistentVolumeClaim', volume.persistentVolumeClaim.claimName), `${volume.persistentVolumeClaim.claimName} defined`);
      }
    }
  });

  it('the Service, the Prometheus annotations and the ServiceMonitor reach the API container’s port', () => {
    const api = deployment('tuneforge-api');
    const container = onlyContainer('tuneforge-api');
    const env = containerEnv(container);
    const [port] = container.ports;
    assert.equal(String(port.containerPort), env.PORT, 'the container port is the PORT it listens on');
    const podLabels = api.spec.template.metadata.labels;
    const selects = (selector: Record<string, string>) => Object.entries(selector).every(([k, v]) => podLabels[k] === v);

    const service = named('Service', 'tuneforge-api')!;
    assert.ok(selects(service.spec.selector), 'the Service selects the API pods');
    assert.ok(!selects({ 'app.kubernetes.io/component': 'worker' }));
    assert.ok(service.spec.ports.every((p: { targetPort: string | number }) => p.targetPort === port.name || p.targetPort === port.containerPort));
    assert.ok(selects(api.spec.selector.matchLabels));

    const annotations = api.spec.template.metadata.annotations;
    assert.equal(annotations['prometheus.io/scrape'], 'true');
    assert.equal(annotations['prometheus.io/path'], '/metrics');
    assert.equal(annotations['prometheus.io/port'], String(port.containerPort));

    const monitor = named('ServiceMonitor', 'tuneforge-api')!;
    assert.ok(Object.entries(monitor.spec.selector.matchLabels).every(([k, v]) => service.metadata.labels![k] === v), 'the ServiceMonitor selects the Service');
    const [endpoint] = monitor.spec.endpoints;
    assert.ok(service.spec.ports.some((p: { name: string }) => p.name === endpoint.port));
    assert.equal(endpoint.path, '/metrics');
    const token = named('Secret', endpoint.bearerTokenSecret.name)!;
    const adminKeys = loadConfig({}, env).apiKeys.filter((k) => k.admin).map((k) => k.key);
    assert.ok(adminKeys.includes(token.stringData[endpoint.bearerTokenSecret.key]), 'Prometheus scrapes with one of ADMIN_API_KEYS');
  });

  describe('probes', () => {
    let server: TestServer;
    before(async () => {
      server = await startTestServer({ env: { API_KEYS: 'sk-user:org-a', ADMIN_API_KEYS: 'sk-admin:org-a' } });
    });
    after(() => server?.close());

    it('point at the API container’s port and at a route that answers 200 without a key', async () => {
      const container = onlyContainer('tuneforge-api');
      const probes = [container.readinessProbe, container.livenessProbe];
      for (const probe of probes) {
        assert.ok(probe?.httpGet, 'an HTTP probe');
        assert.ok(container.ports.some((p: { name: string; containerPort: number }) => probe.httpGet.port === p.name || probe.httpGet.port === p.containerPort));
        const res = await server.request('GET', probe.httpGet.path);
        assert.equal(res.status, 200, `${probe.httpGet.path} answers`);
      }
      // The metrics path the annotations name exists too, behind an admin key.
      assert.equal((await server.request('GET', deployment('tuneforge-api').spec.template.metadata.annotations['prometheus.io/path'], { key: 'sk-admin' })).status, 200);
    });
  });
});
