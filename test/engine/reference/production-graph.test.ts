// The graphs that really train (issue 16, item 2). The gradient checks and torch-model.test.ts run
// float64 graphs, which ONNX Runtime compiles at its basic optimisation level; training runs
// float32 graphs at the full level, whose fusions nothing else checks. Here the step graphs are
// built and compiled the way StepRunner does it (float32, default session settings, LoRA tensors
// packed into one flat vector; a gradient graph, then an accumulate graph for a second
// micro-batch) and compared with PyTorch's float64 values (see torch-model.test.ts) on the same
// inputs, LoRA dropout masks included.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CompiledGraph, type HostArray } from '../../../src/engine/runtime/session.ts';
import { buildStepGraph, names, trainableSlots, type ModelSetup, type StepShape } from '../../../src/engine/train/step.ts';
import { microBatchFeeds, type MicroBatch } from '../../../src/engine/train/runner.ts';
import { assertClose, CASES, loadCase, rowsOf } from './torch-fixtures.ts';

// Float32 against a float64 reference: rounding in float32 (2⁻²⁴ ≈ 6e-8 per operation) grows
// through the layers, softmaxes and sums of up to 352 terms. Measured with onnxruntime-node 1.30:
// gradients within 1.3e-6 of each tensor's largest value, losses within 7e-8 relative. The
// tolerances leave about 15× margin for other kernels and accumulation orders; real bugs (a wrong
// RoPE half, LoRA scale or RMSNorm ε, a packed tensor routed to another's place) are off by 1e-4
// to 1.
const GRAD_TOL = 2e-5;
const LOSS_TOL = 1e-6;

interface Probe {
  setup: ModelSetup;
  shape: StepShape;
  /** Frozen tensors, resident in the sessions as the runner keeps them. */
  frozen: Map<string, Float32Array>;
  params: Map<string, Float32Array>;
}

/**
 * Gradients of Σ w·nll / Σ w over `micro` (each with its dropout masks), from the runner's graphs:
 * `gradient` for the first micro-batch, `accumulate` (fed the running sum) for the rest.
 */
async function trainingGradients(
  p: Probe,
  micro: { batch: MicroBatch; dropoutFeeds: Record<string, Float32Array> }[],
): Promise<{ loss: number; grads: Map<string, Float32Array> }> {
  const slots = trainableSlots(p.setup);
  const sizeOf = (n: string) => p.setup.shapes.get(n)!.reduce((a, b) => a * b, 1);
  const flat = (members: string[]) => {
    const out = new Float32Array(members.reduce((a, n) => a + sizeOf(n), 0));
    let at = 0;
    for (const n of members) out.set(p.params.get(n)!, (at += sizeOf(n)) - sizeOf(n));
    return out;
  };
  const paramFeeds = Object.fromEntries(slots.map((s) => [s.name, flat(s.members ?? [s.name])]));
  const weightSum = micro.reduce((a, m) => a + m.batch.lossWeights.reduce((x, w) => x + w, 0), 0);
  let out: Record<string, HostArray> = {};
  let lossSum = 0;
  for (const [i, { batch, dropoutFeeds }] of micro.entries()) {
    const session = await CompiledGraph.compile(buildStepGraph(p.setup, p.shape, i === 0 ? 'gradient' : 'accumulate'));
    for (const [n, w] of p.frozen) session.setResident(n, w);
    const gradIn = i === 0 ? {} : Object.fromEntries(slots.map((s) => [names.gradIn(s.name), out[names.grad(s.name)]]));
    out = await session.run({ ...paramFeeds, ...gradIn, ...microBatchFeeds(batch), ...dropoutFeeds, inv_total_weight: Float32Array.of(1 / weightSum) });
    lossSum += (out.loss_sum as Float32Array)[0];
    await session.release();
  }
  const grads = new Map<string, Float32Array>();
  for (const s of slots) {
    const g = out[names.grad(s.name)] as Float32Array;
    let at = 0;
    for (const n of s.members ?? [s.name]) grads.set(n, g.subarray(at, (at += sizeOf(n))));
  }
  return { loss: lossSum / weightSum, grads };
}

for (const key of CASES) {
  test(`${key}: the float32 training graphs match PyTorch, in one micro-batch and accumulated over two`, async () => {
    const c = loadCase(key);
    assert.equal(!!c.setup.packed, c.setup.lora !== null, 'LoRA runs packed, as the runner has it');
    const lora = c.setup.lora !== null;
    const frozen = lora ? c.base : new Map<string, Float32Array>();
    const half = c.shape.rows / 2;
    const runs = {
      whole: await trainingGradients({ setup: c.setup, shape: c.shape, frozen, params: c.params }, [c]),
      accumulated: await trainingGradients({ setup: c.setup, shape: { ...c.shape, rows: half }, frozen, params: c.params }, [
        rowsOf(c, 0, half),
        rowsOf(c, half, c.shape.rows),
      ]),
    };
    for (const [how, run] of Object.entries(runs)) {
      assert.ok(Math.abs(run.loss - c.loss) <= LOSS_TOL * c.loss, `${how}: loss ${run.loss} vs torch ${c.loss}`);
      for (const [n, expected] of c.grads) assertClose(`${key} (${how}) grad ${n}`, run.grads.get(n)!, expected, GRAD_TOL);
    }
  });
}
