// A training step's peak memory and time, predicted before any session exists, from the step
// graph itself: the graph is built (no weights needed) and run on paper in the order ORT's
// sequential executor runs it (ortOrder), each tensor freed after its last consumer. So the
// estimate follows whatever the graph does (chunked head, attention tiling, recomputation) with no
// per-op formulas to keep in step. The host side adds what the runner keeps in JS: frozen weights,
// trainable tensors, AdamW's two moments and the returned gradients. The two memory constants
// below were set from issue 11's measured peaks and are checked with bench:train (`npm run
// bench:estimate`, figures in README's "Training memory").
import { Graph, type DType, type Node, type Tensor } from '../graph/ir.ts';
import { reachableNodes } from '../graph/onnx.ts';
import { matmul } from '../graph/ops.ts';
import { CompiledGraph } from '../runtime/session.ts';
import { disableHugePages } from '../runtime/huge-pages.ts';
import { EngineError } from '../errors.ts';
import type { TrainSpec } from '../contract.ts';
import { buildStepGraph, halfFrozen, type ModelSetup, type StepObjective, type StepShape } from './step.ts';

/** Node, ONNX Runtime and the process's own allocations, before any model. */
const RUNTIME_BYTES = 0.45e9;
/** ORT's arena and allocator slack over the graph's live tensors. */
const GRAPH_OVERHEAD = 1.15;
/** Whole-step time over the time its matrix products take at the calibrated rate. */
const STEP_OVER_MATMUL = 1.4;

const BYTES: Record<DType, number> = { float32: 4, float64: 8, int64: 8, int32: 4, uint16: 2, bool: 1 };
const bytesOf = (t: Tensor) => t.size * BYTES[t.dtype];

/** Ops whose output ORT gives the input's buffer (or, for a transposed matmul operand, fuses away). */
function aliases(n: Node, consumers: Map<Tensor, Node[]>): boolean {
  if (['Reshape', 'Identity', 'Squeeze', 'Unsqueeze'].includes(n.opType)) return true;
  return n.opType === 'Transpose' && (consumers.get(n.outputs[0]) ?? []).every((c) => c.opType === 'MatMul' || c.opType === 'Gemm');
}

export interface GraphCost {
  /** Most bytes of intermediate tensors alive at once (graph inputs are the host's). */
  peakBytes: number;
  /** 2·m·k·n over every matrix product. */
  matmulFlops: number;
  /**
   * The buffers allocated at the peak, largest first: what holds the memory (`idle`: held by ORT's
   * planner for a later tensor of the same size, not in use).
   */
  atPeak: { bytes: number; opType: string; node: number; idle: boolean }[];
}

/**
 * The order ONNX Runtime's sequential executor runs `nodes` in (ExecutionOrder::DEFAULT, the
 * only one its Node API offers): a reverse depth-first search from the nodes whose outputs
 * nothing reads, the last of them first, entering a node's producers highest index first, each
 * node emitted once all its producers are. Not the build order: work that only a late output
 * needs (the weights' gradients, a loss output) runs late, and what it reads stays alive.
 */
export function ortOrder(nodes: Node[]): Node[] {
  const index = new Map(nodes.map((n, i) => [n, i]));
  const producers = nodes.map((n) => {
    const from = new Set<number>();
    for (const t of n.inputs) if (t?.producer && index.has(t.producer)) from.add(index.get(t.producer)!);
    return [...from].sort((a, b) => a - b);
  });
  const read = new Set(producers.flat());
  // The stack holds [node, leaving]; leaves are pushed in index order, so the last is run first.
  const stack: [number, boolean][] = nodes.map((_, i) => [i, false] as [number, boolean]).filter(([i]) => !read.has(i));
  const visited = new Uint8Array(nodes.length);
  const order: Node[] = [];
  while (stack.length > 0) {
    const [i, leaving] = stack.pop()!;
    if (leaving) {
      order.push(nodes[i]);
      continue;
    }
    if (visited[i]) continue;
    visited[i] = 1;
    stack.push([i, true]);
    for (const p of producers[i]) if (!visited[p]) stack.push([p, false]);
  }
  return order;
}

/** Runs the graph on paper: peak live bytes in ONNX Runtime's order, and the matrix products' FLOPs. */
export function graphCost(graph: Graph): GraphCost {
  const built = reachableNodes(graph);
  const nodes = ortOrder(built);
  const nodeIndex = new Map(nodes.map((n, i) => [n, i]));
  const consumers = new Map<Tensor, Node[]>();
  for (const n of nodes) {
    for (const t of n.inputs) {
      if (!t) continue;
      const list = consumers.get(t);
      if (list) list.push(n);
      else consumers.set(t, [n]);
    }
  }
  // Each tensor's memory: its own, or (for an alias) its source's.
  const buffer = new Map<Tensor, Tensor>();
  const root = (t: Tensor) => buffer.get(t) ?? t;
  const lastUse = new Map<Tensor, number>();
  nodes.forEach((n, i) => {
    if (aliases(n, consumers) && n.inputs[0]) buffer.set(n.outputs[0], root(n.inputs[0]));
    for (const t of n.inputs) if (t) lastUse.set(root(t), i);
  });
  const outputs = new Set(graph.outputs.map(root));
  // ORT's allocation planner gives a new tensor the buffer of a dead one of exactly the same
  // size (the most recently freed first), and that buffer stays allocated from its first tensor's
  // birth to its last one's death: a size that comes back later (the next layer, the backward)
  // holds its buffers in between. Graph outputs get buffers of their own, kept to the end.
  const allocations: { bytes: number; from: number; to: number; tensors: Tensor[] }[] = [];
  const freed = new Map<number, number[]>(); // bytes → allocations free for reuse, most recently freed last
  const owner = new Map<Tensor, number>();
  nodes.forEach((n, i) => {
    for (const o of n.outputs) {
      if (root(o) !== o) continue;
      const bytes = bytesOf(o);
      const reusable = outputs.has(o) ? undefined : freed.get(bytes)?.pop();
      const a = reusable ?? allocations.push({ bytes, from: i, to: i, tensors: [] }) - 1;
      allocations[a].tensors.push(o);
      allocations[a].to = outputs.has(o) ? Infinity : (lastUse.get(o) ?? i);
      owner.set(o, a);
    }
    for (const t of new Set([...n.inputs, ...n.outputs])) {
      const a = t ? owner.get(root(t)) : undefined;
      if (a === undefined || allocations[a].to !== i || root(t!) !== allocations[a].tensors.at(-1)) continue;
      const same = freed.get(allocations[a].bytes);
      if (same) same.push(a);
      else freed.set(allocations[a].bytes, [a]);
    }
  });
  // Sweep: live bytes after each node's outputs exist, before its dead inputs go.
  const initial = graph.initializers.reduce((s, c) => s + bytesOf(c.tensor), 0);
  const change = new Float64Array(nodes.length + 1);
  for (const a of allocations) {
    change[a.from] += a.bytes;
    if (a.to < nodes.length) change[a.to + 1] -= a.bytes;
  }
  let live = initial;
  let peakBytes = initial;
  let peakAt = 0;
  for (let i = 0; i < nodes.length; i++) {
    live += change[i];
    if (live > peakBytes) [peakBytes, peakAt] = [live, i];
  }
  const builtIndex = new Map(built.map((n, i) => [n, i]));
  const atPeak = allocations
    .filter((a) => a.from <= peakAt && a.to >= peakAt)
    .sort((x, y) => y.bytes - x.bytes)
    .map((a) => {
      // The tensor in the buffer at the peak, or (idle: kept for a later tensor of its size) the last one before it.
      const t = [...a.tensors].reverse().find((x) => nodeIndex.get(x.producer!)! <= peakAt)!;
      const idle = (lastUse.get(t) ?? nodeIndex.get(t.producer!)!) < peakAt && !outputs.has(t);
      return { bytes: a.bytes, opType: t.producer!.opType, node: builtIndex.get(t.producer!)!, idle };
    });
  let matmulFlops = 0;
  for (const n of nodes) {
    if (n.opType === 'MatMul' || n.opType === 'Gemm') {
      const [x] = n.inputs;
      const k = n.opType === 'Gemm' && n.attrs.transA ? x!.shape[0] : x!.shape[x!.rank - 1];
      matmulFlops += 2 * n.outputs[0].size * k;
    }
  }
  return { peakBytes, matmulFlops, atPeak };
}

export interface StepEstimate {
  /** Predicted peak resident memory of the training process. */
  peakBytes: number;
  /** Of which: what the host holds (frozen weights, trainable tensors with AdamW moments and gradients), the step graph. */
  hostBytes: number;
  /** Of hostBytes: the frozen weights, at their stored width (2 bytes a value under setup.frozenDtype). */
  frozenBytes: number;
  graphBytes: number;
  /** Predicted seconds per micro-batch at `matmulGflops`. */
  stepSeconds: number;
  matmulFlops: number;
}

/** The estimate for micro-batches of `shape` (a supervised step unless `objective` says otherwise). */
export function estimateStep(setup: ModelSetup, shape: StepShape, matmulGflops: number, objective?: StepObjective): StepEstimate {
  const cost = graphCost(buildStepGraph({ ...setup, float: 'float32' }, shape, 'gradient', objective, true));
  const trainable = new Set(setup.trainable);
  const half = halfFrozen(setup);
  let frozen = 0, trained = 0;
  for (const [name, s] of setup.shapes) {
    const n = s.reduce((a, b) => a * b, 1);
    if (trainable.has(name)) trained += 4 * n;
    else frozen += (half.has(name) ? 2 : 4) * n;
  }
  const hostBytes = frozen + 4 * trained; // parameters, m, v, and the gradients returned to JS
  const graphBytes = GRAPH_OVERHEAD * cost.peakBytes;
  return {
    peakBytes: RUNTIME_BYTES + hostBytes + graphBytes,
    hostBytes,
    frozenBytes: frozen,
    graphBytes,
    stepSeconds: (STEP_OVER_MATMUL * cost.matmulFlops) / (matmulGflops * 1e9),
    matmulFlops: cost.matmulFlops,
  };
}

/** GFLOP/s of one float32 matrix product on this machine now, at the engine's thread count. */
export async function measureMatmulGflops(threads = 2): Promise<number> {
  const [m, k, n] = [4096, 576, 1536];
  const g = new Graph();
  g.output('y', matmul(g.input('a', [m, k]), g.input('b', [k, n])));
  const s = await CompiledGraph.compile(g, { intraOpNumThreads: threads });
  const feeds = { a: new Float32Array(m * k).fill(0.5), b: new Float32Array(k * n).fill(0.25) };
  let best = Infinity;
  for (let i = 0; i < 6; i++) {
    const t = performance.now();
    await s.run(feeds);
    best = Math.min(best, performance.now() - t);
  }
  await s.release();
  return (2 * m * k * n) / (best / 1000) / 1e9;
}

/**
 * What 'auto' recomputation leaves between the estimate and the limit: measured peaks have come to
 * 0.90–1.14× the estimate (bench:estimate), and a step planned right at the limit would be killed
 * for the estimate's error.
 */
export const AUTO_RECOMPUTE_MARGIN = 1.1;

/**
 * Recomputation plans, from the least memory saved to the most: at level ℓ ≤ L (L decoder layers)
 * the first ℓ layers recompute their MLP only (two products and the SwiGLU, most of a layer's
 * activations for a fraction of its work); past L, the first ℓ − L layers recompute everything and
 * the others their MLP. Level 2L recomputes every layer.
 */
export function recomputeLevel(level: number, numLayers: number): { recompute: number; recomputeMlp: number } {
  return level <= numLayers ? { recompute: 0, recomputeMlp: level } : { recompute: level - numLayers, recomputeMlp: 2 * numLayers - level };
}

/**
 * The recomputation level (recomputeLevel) for 'auto': the lowest of 0…levels whose step's
 * estimate, with AUTO_RECOMPUTE_MARGIN, fits `limitBytes` (the highest when none does: the memory
 * check then decides whether the job can run). The peak falls as the level rises, so bisection
 * finds it in 1 + ⌈log₂ levels⌉ estimates, each a step graph built and run on paper.
 */
export function autoRecompute(estimateWith: (level: number) => StepEstimate, levels: number, limitBytes: number): number {
  const fits = (level: number) => estimateWith(level).peakBytes * AUTO_RECOMPUTE_MARGIN <= limitBytes;
  if (fits(0)) return 0;
  let [over, fitting] = [0, levels]; // `over` does not fit; `fitting` does, or is the highest level
  while (fitting - over > 1) {
    const mid = (over + fitting) >> 1;
    if (fits(mid)) fitting = mid;
    else over = mid;
  }
  return fitting;
}

/** The largest micro-batch (rows × seqLen, rows first, then shorter rows) that fits, or null. */
export function largestFitting(fits: (shape: StepShape) => boolean, shape: StepShape): StepShape | null {
  for (let rows = shape.rows - 1; rows >= 1; rows--) if (fits({ rows, seqLen: shape.seqLen })) return { rows, seqLen: shape.seqLen };
  for (let seqLen = Math.floor(shape.seqLen / 2 / 32) * 32; seqLen >= 32; seqLen = Math.floor(seqLen / 2 / 32) * 32) {
    if (fits({ rows: 1, seqLen })) return { rows: 1, seqLen };
  }
  return null;
}

const GB = (b: number) => `${(b / 1e9).toFixed(2)} GB`;

/**
 * Fails with `insufficient_memory` when a step of `shape` is predicted to need more than
 * `limitBytes`, naming the estimate, the limit and the largest micro-batch that would fit.
 * `need` is that step's estimate when the caller has it already.
 */
export function checkStepMemory(setup: ModelSetup, shape: StepShape, limitBytes: number, objective?: StepObjective, need = estimateStep(setup, shape, 1, objective)): StepEstimate {
  const estimate = (s: StepShape) => estimateStep(setup, s, 1, objective);
  if (need.peakBytes <= limitBytes) return need;
  const fitting = largestFitting((s) => estimate(s).peakBytes <= limitBytes, shape);
  const what = `${shape.rows} × ${shape.seqLen} tokens`;
  const advice = !fitting
    ? `Even one row of 32 tokens would not fit: the model's weights and optimizer state alone need ${GB(estimate({ rows: 1, seqLen: 32 }).peakBytes)}; use LoRA or a smaller model.`
    : fitting.rows < shape.rows
      ? `${fitting.rows} row${fitting.rows > 1 ? 's' : ''} of ${fitting.seqLen} tokens per micro-batch would fit: use a smaller batch_size.`
      : `Rows of ${fitting.seqLen} tokens would fit: use shorter examples (fewer tokens each).`;
  throw new EngineError(
    'insufficient_memory',
    `Training needs an estimated ${GB(need.peakBytes)} of memory for micro-batches of ${what}, over this worker's limit of ${GB(limitBytes)}. ${advice}`,
    need.peakBytes,
  );
}

/** The share of the memory limit a step's estimate may reach and still spend memory on speed. */
export const SPARE_MEMORY_SHARE = 0.6;

type Recomputation = Pick<ModelSetup, 'recompute' | 'recomputeMlp'>;
const recomputes = (s: Recomputation) => (s.recompute ?? 0) + (s.recomputeMlp ?? 0) > 0;

/**
 * Whether a step has memory to spare: nothing recomputed (recomputation means memory is what the
 * plan is short of) and its estimate within SPARE_MEMORY_SHARE of the limit. Such a step keeps
 * transparent huge pages (runtime/huge-pages.ts: they can raise the peak by ~20%, which the estimate
 * does not model) and its frozen weights in f32 (widenFrozenWhenSpare).
 */
export function hasMemoryToSpare(setup: Recomputation, peakBytes: number, limitBytes: number): boolean {
  return !recomputes(setup) && peakBytes <= SPARE_MEMORY_SHARE * limitBytes;
}

/**
 * 2-byte frozen weights (setup.frozenDtype) are widened to f32 at every use, each frozen value looked
 * up forward and again backward: a cost per step that a short row feels most (one row of 292 tokens
 * on the SmolLM2-135M shape took 2.6–2.8 s a step against 1.4–1.7 in f32, README "Training memory").
 * A step that recomputes nothing and has memory to spare with them in f32 reads them widened once,
 * at load, instead. Returns the setup to train with and its estimate (`need` is `setup`'s).
 */
export function widenFrozenWhenSpare<S extends ModelSetup>(
  setup: S,
  need: StepEstimate,
  limitBytes: number,
  estimate: (s: S) => StepEstimate,
): { setup: S; need: StepEstimate } {
  if (!setup.frozenDtype || recomputes(setup)) return { setup, need };
  const wide: S = { ...setup, frozenDtype: undefined };
  const wideNeed = estimate(wide);
  return hasMemoryToSpare(wide, wideNeed.peakBytes, limitBytes) ? { setup: wide, need: wideNeed } : { setup, need };
}

/**
 * The setup with the recomputation decided by spec.recompute ('auto': the lowest level of
 * recomputeLevel that makes the step fit the memory limit; 'on': every layer whole; 'off': none),
 * checked against that limit when the spec sets one. With memory to spare (hasMemoryToSpare) the
 * frozen weights are kept in f32 (widenFrozenWhenSpare) and this process keeps its transparent
 * huge pages; otherwise it turns them off before it allocates the step.
 */
export function ensureStepFits(spec: TrainSpec, setup: ModelSetup, shape: StepShape, objective?: StepObjective): ModelSetup {
  const limit = spec.memoryLimitBytes;
  const policy = spec.recompute ?? 'auto';
  const layers = setup.cfg.numLayers;
  const estimates = new Map<number, StepEstimate>(); // by level: the one chosen is checked below without building its graph again
  const estimateAt = (l: number) => {
    if (!estimates.has(l)) estimates.set(l, estimateStep({ ...setup, ...recomputeLevel(l, layers) }, shape, 1, objective));
    return estimates.get(l)!;
  };
  const level =
    policy === 'auto'
      ? limit === undefined ? 0 : autoRecompute(estimateAt, 2 * layers, limit)
      : policy === 'on' ? 2 * layers : 0;
  const decided = { ...setup, ...recomputeLevel(level, layers) };
  if (limit === undefined) return decided;
  const checked = checkStepMemory(decided, shape, limit, objective, estimates.get(level));
  const chosen = widenFrozenWhenSpare(decided, checked, limit, (s) => estimateStep(s, shape, 1, objective));
  if (!hasMemoryToSpare(chosen.setup, chosen.need.peakBytes, limit)) disableHugePages();
  return chosen.setup;
}
