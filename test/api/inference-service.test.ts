// The inference service over the bundled tiny model: a failure of the inference host itself is
// told by its EngineError code (never its wording), fails that request with a 500, and the next
// request gets a fresh host.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { InferenceService } from '../../src/api/inference/service.ts';
import { ModelCatalogue } from '../../src/models/catalogue.ts';
import { tempStore } from '../support/store.ts';

const modelsDir = path.resolve(import.meta.dirname, '../../models');

describe('InferenceService', () => {
  let service: InferenceService;
  let cleanup: () => Promise<void>;
  before(async () => {
    const temp = await tempStore();
    cleanup = temp.cleanup;
    service = new InferenceService(new ModelCatalogue(temp.store, modelsDir));
  });
  after(async () => {
    await service.close();
    await cleanup();
  });

  /** One greedy token from the tiny model, as a completion route runs it. */
  const oneToken = () =>
    service.withModel('tiny-llama', 'org-a', async (model) => {
      const promptIds = await service.textPrompt(model.key, 'Ahoy');
      return service.settle(new AbortController(), () => service.generate(model.key, promptIds, { maxTokens: 1, temperature: 0 }));
    });

  it('a host that went away fails the request in flight with a 500 and is replaced for the next', async () => {
    const first = await oneToken();
    assert.equal(first?.completionTokens, 1);
    // As when its worker thread died: every request to the host rejects (EngineError inference_host_closed).
    await service.withModel('tiny-llama', 'org-a', async () => {
      await (service as unknown as { inferenceHost: { close(): Promise<void> } }).inferenceHost.close();
    });
    await assert.rejects(oneToken(), { status: 500, code: 'generation_failed' });
    assert.deepEqual((await oneToken())?.tokenIds, first?.tokenIds);
  });

  it('a model name nobody has is the catalogue’s not-found (the API answers it with a 404)', async () => {
    await assert.rejects(service.withModel('no-such-model', 'org-a', async () => null), { name: 'ModelNotFoundError', reason: 'unknown' });
  });
});
