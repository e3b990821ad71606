// GET /v1/models/{model}/export: auth, 404 (unknown, foreign, base, no weights), 400 (format, dtype,
// peft of a full fine-tune), and real exports of a LoRA model and a full fine-tuned checkpoint on
// tiny-llama: the tars unpack into folders our loader and PEFT reader load, the GGUF parses.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { connect } from 'node:net';
import { once } from 'node:events';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expectError, startTestServer, waitFor, type TestServer } from '../support/server.ts';
import type { FsBlobStore } from '../../src/store/blobs.ts';
import { exportMerged } from '../../src/engine/export/index.ts';
import { readGguf } from '../../src/engine/io/gguf.ts';
import { loadHfModel } from '../../src/engine/io/hf-model.ts';
import { loadPeftAdapter } from '../../src/engine/io/peft.ts';
import { loadModelForInference } from '../../src/engine/infer/model.ts';
import { SeededRandom } from '../../src/engine/data/random.ts';
import { maxAbsDiff, writeAdapter } from '../engine/infer/fixtures.ts';
import { extractTar } from '../engine/export/untar.ts';

const tinyLlama = new URL('../../models/tiny-llama/', import.meta.url).pathname;
const A = { key: 'sk-a' };
const B = { key: 'sk-b' };
const LORA_MODEL = 'ft:tiny-llama:org-a:pirate:abcd1234';
const FULL_CHECKPOINT = 'ft:tiny-llama:org-a:full:efgh5678:ckpt-step-4';
const EMPTY_MODEL = 'ft:tiny-llama:org-a::nofiles1';
const url = (id: string, query = '') => `/v1/models/${encodeURIComponent(id)}/export${query}`;

describe('model export', () => {
  let server: TestServer;
  let work: string;
  let adapterDir: string;

  before(async () => {
    server = await startTestServer({ env: { API_KEYS: 'sk-a:org-a,sk-b:org-b' } });
    cpSync(tinyLlama, join(server.modelsDir, 'tiny-llama'), { recursive: true });
    work = mkdtempSync(join(tmpdir(), 'tuneforge-export-api-'));
    // The model's and the checkpoint's weights where the worker pushes them: in the (local) blob store.
    const blobs = server.store.blobs as FsBlobStore;
    adapterDir = blobs.pathOf('jobs/ftjob-lora/checkpoints/step-4');
    const cfg = loadHfModel(tinyLlama).config;
    const rng = new SeededRandom(21);
    writeAdapter(cfg, adapterDir, (_n, n) => new Float32Array(n).map(() => (rng.next() * 2 - 1) * 0.3), 4, ['q_proj', 'k_proj', 'v_proj', 'o_proj']);
    const fullDir = blobs.pathOf('jobs/ftjob-full/checkpoints/step-4');
    exportMerged(tinyLlama, adapterDir, fullDir, 'f32'); // stands in for a full fine-tune's checkpoint folder
    await server.store.models.add({ id: LORA_MODEL, organization_id: 'org-a', created_at: 1, job_id: 'ftjob-lora', base_model: 'tiny-llama', dir: 'jobs/ftjob-lora/checkpoints/step-4' });
    await server.store.models.add({ id: EMPTY_MODEL, organization_id: 'org-a', created_at: 1, job_id: 'ftjob-none', base_model: 'tiny-llama', dir: null });
    await server.store.checkpoints.add({
      id: 'ftckpt_full', job_id: 'ftjob-full', organization_id: 'org-a', created_at: 1, fine_tuned_model_checkpoint: FULL_CHECKPOINT,
      step_number: 4, metrics: { step: 4 }, dir: 'jobs/ftjob-full/checkpoints/step-4',
    });
  });
  after(async () => {
    await server.close();
    rmSync(work, { recursive: true, force: true });
  });

  async function download(id: string, query: string, key = A.key) {
    const res = await fetch(`${server.url}${url(id, query)}`, { headers: { authorization: `Bearer ${key}` } });
    assert.equal(res.status, 200, await res.clone().text().catch(() => ''));
    return { headers: res.headers, body: Buffer.from(await res.arrayBuffer()) };
  }

  it('needs an API key', async () => {
    expectError(await server.request('GET', url(LORA_MODEL, '?format=gguf')), 401);
  });

  it('404 for unknown, foreign, base and weightless models', async () => {
    expectError(await server.request('GET', url('ft:tiny-llama:org-a::unknown1', '?format=gguf'), A), 404, { param: 'model', code: 'model_not_found' });
    expectError(await server.request('GET', url(LORA_MODEL, '?format=gguf'), B), 404, { code: 'model_not_found' });
    expectError(await server.request('GET', url(FULL_CHECKPOINT, '?format=safetensors'), B), 404, { code: 'model_not_found' });
    expectError(await server.request('GET', url('tiny-llama', '?format=gguf'), A), 404, { code: 'model_not_found' });
    expectError(await server.request('GET', url(EMPTY_MODEL, '?format=safetensors'), A), 404, { message: /no stored weights/ });
    assert.equal((await server.request('HEAD', url(LORA_MODEL, '?format=gguf'), A)).status, 404); // no HEAD: it would export
  });

  it('400 for a missing or bad format, a dtype that does not fit, peft of a full fine-tune', async () => {
    expectError(await server.request('GET', url(LORA_MODEL), A), 400, { param: 'format' });
    expectError(await server.request('GET', url(LORA_MODEL, '?format=zip'), A), 400, { param: 'format' });
    expectError(await server.request('GET', url(LORA_MODEL, '?format=gguf&dtype=q4'), A), 400, { param: 'dtype' });
    expectError(await server.request('GET', url(LORA_MODEL, '?format=gguf&dtype=bf16'), A), 400, { param: 'dtype' });
    expectError(await server.request('GET', url(LORA_MODEL, '?format=peft&dtype=f16'), A), 400, { param: 'dtype' });
    expectError(await server.request('GET', url(LORA_MODEL, '?format=gguf&extra=1'), A), 400, { param: 'extra' });
    expectError(await server.request('GET', url(FULL_CHECKPOINT, '?format=peft'), A), 400, { param: 'format', message: /full fine-tune/ });
  });

  it('peft: a tar of the adapter, base model named', async () => {
    const { headers, body } = await download(LORA_MODEL, '?format=peft');
    assert.equal(headers.get('content-type'), 'application/x-tar');
    assert.equal(headers.get('content-disposition'), 'attachment; filename="ft-tiny-llama-org-a-pirate-abcd1234-peft.tar"');
    assert.equal(Number(headers.get('content-length')), body.length);
    const out = join(work, 'peft-out');
    assert.deepEqual(extractTar(body, out).sort(), ['ft-tiny-llama-org-a-pirate-abcd1234-peft/adapter_config.json', 'ft-tiny-llama-org-a-pirate-abcd1234-peft/adapter_model.safetensors']);
    const exported = loadPeftAdapter(join(out, 'ft-tiny-llama-org-a-pirate-abcd1234-peft'));
    const original = loadPeftAdapter(adapterDir);
    assert.equal(exported.settings.baseModelName, 'tiny-llama');
    for (const [k, t] of original.tensors) assert.deepEqual(exported.tensors.get(k), t, k);
  });

  it('safetensors: a tar that unpacks into a loadable merged folder (LoRA model and full checkpoint)', async () => {
    const ids = [678, 5, 6, 7, 300, 679, 12, 678];
    const reference = await loadModelForInference({ baseModelDir: tinyLlama, adapterDir }, { intraOpNumThreads: 1 });
    const expected = await reference.nextTokenLogits(ids);
    await reference.release();
    for (const id of [LORA_MODEL, FULL_CHECKPOINT]) {
      const { headers, body } = await download(id, '?format=safetensors&dtype=f32');
      assert.equal(headers.get('content-type'), 'application/x-tar');
      const out = join(work, `st-${id.length}`);
      extractTar(body, out);
      const [folder] = readdirSync(out);
      const dir = join(out, folder);
      assert.ok(readdirSync(dir).includes('tokenizer.json') && readdirSync(dir).includes('model.safetensors'), readdirSync(dir).join());
      const model = await loadModelForInference({ baseModelDir: dir }, { intraOpNumThreads: 1 });
      assert.ok(maxAbsDiff(await model.nextTokenLogits(ids), expected) < 1e-4, id);
      await model.release();
    }
  });

  it('gguf: the file itself, default dtype from the base (f32), and nothing left behind', async () => {
    const { headers, body } = await download(LORA_MODEL, '?format=gguf');
    assert.equal(headers.get('content-type'), 'application/octet-stream');
    assert.equal(headers.get('content-disposition'), 'attachment; filename="ft-tiny-llama-org-a-pirate-abcd1234.gguf"');
    assert.equal(Number(headers.get('content-length')), body.length);
    const file = join(work, 'model.gguf');
    writeFileSync(file, body);
    const g = readGguf(file);
    assert.equal(g.metadata.get('general.name'), LORA_MODEL);
    assert.equal(g.metadata.get('general.file_type'), 0);
    assert.equal(g.tensors.length, 1 + 4 * 9 + 2);
    const f16 = await download(FULL_CHECKPOINT, '?format=gguf&dtype=f16');
    assert.ok(f16.body.length < body.length * 0.6);
    await new Promise((r) => setTimeout(r, 50));
    const exportsDir = join(server.dataDir, 'exports');
    mkdirSync(exportsDir, { recursive: true });
    assert.deepEqual(readdirSync(exportsDir), []);
  });

  it('a client that leaves mid-export leaves nothing behind', async () => {
    // A bare socket (fetch's pool would keep a spare connection open past the test).
    const { port } = new URL(server.url);
    const socket = connect(Number(port), '127.0.0.1');
    await once(socket, 'connect');
    socket.write(`GET ${url(LORA_MODEL, '?format=safetensors')} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${A.key}\r\n\r\n`);
    const exportsDir = join(server.dataDir, 'exports');
    await waitFor(async () => (existsSync(exportsDir) ? readdirSync(exportsDir).length : 0), (n) => n > 0, 5);
    socket.destroy();
    await waitFor(async () => readdirSync(exportsDir).length, (n) => n === 0);
  });

  it('CLI: tuneforge export reads DATA_DIR/MODELS_DIR and writes a GGUF file or a tar', async () => {
    const run = promisify(execFile);
    const cli = new URL('../../src/cli/main.ts', import.meta.url).pathname;
    const env = { ...process.env, DATA_DIR: server.dataDir, MODELS_DIR: server.modelsDir };
    const exec = (...args: string[]) => run(process.execPath, ['--import', 'tsx', cli, 'export', ...args], { env });
    const gguf = join(work, 'cli.gguf');
    const { stdout } = await exec('--model', LORA_MODEL, '--format', 'gguf', '--out', gguf, '--dtype', 'f16');
    assert.equal(JSON.parse(stdout.trim().split('\n').pop()!).msg, 'exported');
    assert.equal(readGguf(gguf).metadata.get('general.file_type'), 1);
    const tar = join(work, 'cli-merged.tar');
    await exec('--model', FULL_CHECKPOINT, '--format', 'safetensors', '--out', tar);
    assert.ok(extractTar(readFileSync(tar), join(work, 'cli-untar')).includes('cli-merged/model.safetensors'));
    // --org limits the lookup to one organization's models, as the API does.
    await assert.rejects(exec('--model', LORA_MODEL, '--format', 'gguf', '--out', join(work, 'x.gguf'), '--org', 'org-b'), /does not exist/);
    assert.ok(!existsSync(join(work, 'x.gguf')));
  });
});
