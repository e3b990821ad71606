// Ops: each function emits its forward ONNX node(s) and attaches its backward rule right beside it.
// Backward rules are written with these same ops, so gradients are ordinary graph nodes.
// Everything is static-shaped (a graph for any length aside: see ANY_LENGTH in ir.ts); broadcasting follows ONNX/numpy rules and gradients of broadcast
// operands are reduced back to the operand's shape by `unbroadcast`.

import { type DType, type Graph, type Shape, Tensor, isFloat, isLengthDim, sameShape } from './ir.ts';
import { ONNX_TYPE } from './onnx.ts';

const norm = (axis: number, rank: number) => (axis < 0 ? axis + rank : axis);

export function broadcastShapes(a: Shape, b: Shape): number[] {
  const n = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i] ?? 1;
    const y = b[b.length - n + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) throw new Error(`cannot broadcast [${a}] with [${b}]`);
    out.push(x === 1 ? y : x);
  }
  return out;
}

/** Sums a broadcast gradient back down to `shape`. */
export function unbroadcast(dy: Tensor, shape: Shape): Tensor {
  if (sameShape(dy.shape, shape)) return dy;
  const lead = dy.rank - shape.length;
  const axes: number[] = [];
  for (let i = 0; i < dy.rank; i++) {
    if (i < lead || (shape[i - lead] === 1 && dy.shape[i] !== 1)) axes.push(i);
  }
  return reshape(reduceSum(dy, axes, true), shape);
}

// ---------------------------------------------------------------- elementwise binary

function binary(op: string, a: Tensor, b: Tensor, rule: (dy: Tensor, y: Tensor) => [Tensor, Tensor]): Tensor {
  const g = a.graph;
  const shape = broadcastShapes(a.shape, b.shape);
  const [y] = g.emit(op, [a, b], {}, [{ shape, dtype: a.dtype }], ([dy]) => {
    const [da, db] = rule(dy!, y);
    return [unbroadcast(da, a.shape), unbroadcast(db, b.shape)];
  });
  return y;
}

const lift = (a: Tensor, b: Tensor | number): Tensor => (typeof b === 'number' ? a.graph.constant(a.dtype, [], [b]) : b);

export function add(a: Tensor, b: Tensor | number): Tensor {
  const bb = lift(a, b);
  return binary('Add', a, bb, (dy) => [dy, dy]);
}

export function sub(a: Tensor, b: Tensor | number): Tensor {
  const bb = lift(a, b);
  return binary('Sub', a, bb, (dy) => [dy, neg(dy)]);
}

export function mul(a: Tensor, b: Tensor | number): Tensor {
  const bb = lift(a, b);
  return binary('Mul', a, bb, (dy) => [mul(dy, bb), mul(dy, a)]);
}

export function div(a: Tensor, b: Tensor | number): Tensor {
  const bb = lift(a, b);
  // y = a/b: da = dy/b, db = -dy·a/b² = -dy·y/b
  return binary('Div', a, bb, (dy, y) => [div(dy, bb), neg(div(mul(dy, y), bb))]);
}

// ---------------------------------------------------------------- elementwise unary

function unary(op: string, x: Tensor, rule: (dy: Tensor, y: Tensor) => Tensor): Tensor {
  const [y] = x.graph.emit(op, [x], {}, [{ shape: x.shape, dtype: x.dtype }], ([dy]) => [rule(dy!, y)]);
  return y;
}

export const neg = (x: Tensor): Tensor => unary('Neg', x, (dy) => neg(dy));
export const exp = (x: Tensor): Tensor => unary('Exp', x, (dy, y) => mul(dy, y));
export const log = (x: Tensor): Tensor => unary('Log', x, (dy) => div(dy, x));
export const sqrt = (x: Tensor): Tensor => unary('Sqrt', x, (dy, y) => div(mul(dy, 0.5), y));
export const reciprocal = (x: Tensor): Tensor => unary('Reciprocal', x, (dy, y) => neg(mul(dy, mul(y, y))));
export const sigmoid = (x: Tensor): Tensor => unary('Sigmoid', x, (dy, y) => mul(dy, mul(y, sub(y.graph.constant(y.dtype, [], [1]), y))));

/**
 * SiLU(x) = x·σ(x); dSiLU = σ(x)·(1 + x·(1 − σ(x))) = σ(x)·(1 + x − y): one rule instead of three
 * nodes' worth, four element-wise passes in the backward.
 */
export function silu(x: Tensor): Tensor {
  const g = x.graph;
  const s = sigmoid(x);
  const [y] = g.emit('Mul', [x, s], {}, [{ shape: x.shape, dtype: x.dtype }], ([dy]) => {
    return [mul(dy!, mul(s, add(sub(x, y), 1))), null];
  });
  return y;
}

export const tanh = (x: Tensor): Tensor => unary('Tanh', x, (dy, y) => mul(dy, sub(y.graph.constant(y.dtype, [], [1]), mul(y, y))));

/** c·tanh(x/c): soft-capping (Gemma 2's attention scores and logits); d/dx = 1 − tanh². */
export const softcap = (x: Tensor, c: number): Tensor => mul(tanh(mul(x, 1 / c)), c);

/**
 * GELU with the tanh approximation (PyTorch's gelu(approximate='tanh')): y = ½x(1 + t),
 * t = tanh(√(2/π)(x + 0.044715x³)); dy = ½(1 + t) + ½x(1 − t²)·√(2/π)(1 + 3·0.044715x²), one rule.
 */
export function geluTanh(x: Tensor): Tensor {
  const k = Math.sqrt(2 / Math.PI);
  const x2 = mul(x, x);
  const t = tanh(mul(mul(x, add(mul(x2, 0.044715), 1)), k));
  const half = mul(add(t, 1), 0.5);
  const [y] = x.graph.emit('Mul', [x, half], {}, [{ shape: x.shape, dtype: x.dtype }], ([dy]) => {
    const dt = mul(mul(add(neg(mul(t, t)), 1), add(mul(x2, 3 * 0.044715 * k), k)), mul(x, 0.5));
    return [mul(dy!, add(half, dt)), null];
  });
  return y;
}

export function cast(x: Tensor, dtype: DType): Tensor {
  if (x.dtype === dtype) return x;
  const [y] = x.graph.emit('Cast', [x], { to: ONNX_TYPE[dtype] }, [{ shape: x.shape, dtype }], ([dy]) => [
    isFloat(x.dtype) && isFloat(dtype) ? cast(dy!, x.dtype) : null,
  ]);
  return y;
}

// ---------------------------------------------------------------- shape ops

/** Element count, exact past 2⁵³ (a graph for any length has [G·T, T] tiles at T = ANY_LENGTH). */
const count = (shape: Shape) => shape.reduce((a, d) => a * BigInt(d), 1n);

export function reshape(x: Tensor, shape: Shape): Tensor {
  if (count(shape) !== count(x.shape)) throw new Error(`reshape [${x.shape}] → [${shape}]`);
  if (sameShape(x.shape, shape)) return x;
  const [y] = x.graph.emit('Reshape', [x, reshapeTarget(x, shape)], {}, [{ shape, dtype: x.dtype }], ([dy]) => [
    reshape(dy!, x.shape),
  ]);
  return y;
}

/**
 * Reshape's shape operand. In a graph for any length, its length-dependent dimensions are written
 * as 0 (the input's own, where it has the same one at that axis) and at most one −1 (the rest),
 * so the operand stays a constant and ONNX Runtime's shape inference keeps the rank and the
 * static dimensions, which its fusions (MatMul + Add → Gemm among them) need; the operand is
 * computed from the fed length only where that cannot say it.
 */
function reshapeTarget(x: Tensor, shape: Shape): Tensor {
  const g = x.graph;
  if (!g.anyLength || !shape.some(isLengthDim)) return g.ints([...shape]);
  let inferred = false;
  const written = shape.map((d, i) => {
    if (!isLengthDim(d)) return d;
    if (x.shape[i] === d) return 0;
    if (inferred) return null;
    inferred = true;
    return -1;
  });
  return written.every((d) => d !== null) ? g.ints(written as number[]) : g.ints([...shape]);
}

export function transpose(x: Tensor, perm: number[]): Tensor {
  if (perm.every((p, i) => p === i)) return x;
  // Transpose of a transpose (e.g. Wᵀᵀ in a backward rule): compose into one, or none.
  const inner = x.producer;
  if (inner?.opType === 'Transpose' && inner.inputs[0]) return transpose(inner.inputs[0], perm.map((p) => (inner.attrs.perm as number[])[p]));
  const shape = perm.map((p) => x.shape[p]);
  const inverse = perm.map((_, i) => perm.indexOf(i));
  const [y] = x.graph.emit('Transpose', [x], { perm }, [{ shape, dtype: x.dtype }], ([dy]) => [transpose(dy!, inverse)]);
  return y;
}

/** Swaps the last two axes. */
export function T(x: Tensor): Tensor {
  const perm = x.shape.map((_, i) => i);
  [perm[x.rank - 2], perm[x.rank - 1]] = [perm[x.rank - 1], perm[x.rank - 2]];
  return transpose(x, perm);
}

/** x[..., start:end, ...] along one axis; backward pads the gradient back with zeros. */
export function slice(x: Tensor, axis: number, start: number, end: number): Tensor {
  const g = x.graph;
  axis = norm(axis, x.rank);
  if (start === 0 && end === x.shape[axis]) return x;
  const shape = [...x.shape];
  shape[axis] = end - start;
  const [y] = g.emit('Slice', [x, g.ints([start]), g.ints([end]), g.ints([axis])], {}, [{ shape, dtype: x.dtype }], ([dy]) => {
    const pads = new Array(2 * x.rank).fill(0);
    pads[axis] = start;
    pads[x.rank + axis] = x.shape[axis] - end;
    const [dx] = g.emit('Pad', [dy!, g.ints(pads)], {}, [{ shape: x.shape, dtype: x.dtype }]);
    return [dx];
  });
  return y;
}

export function concat(xs: Tensor[], axis: number): Tensor {
  const g = xs[0].graph;
  axis = norm(axis, xs[0].rank);
  const shape = [...xs[0].shape];
  shape[axis] = xs.reduce((s, x) => s + x.shape[axis], 0);
  const [y] = g.emit('Concat', xs, { axis }, [{ shape, dtype: xs[0].dtype }], ([dy]) => {
    let at = 0;
    return xs.map((x) => slice(dy!, axis, at, (at += x.shape[axis])));
  });
  return y;
}

/** Splits `axis` into consecutive parts of the given sizes; backward concatenates the gradients. */
export function split(x: Tensor, sizes: number[], axis = 0): Tensor[] {
  const g = x.graph;
  axis = norm(axis, x.rank);
  if (sizes.length === 1) return [x];
  if (sizes.reduce((a, b) => a + b, 0) !== x.shape[axis]) throw new Error(`split [${x.shape}] into ${sizes}`);
  const outs = sizes.map((n) => ({ shape: x.shape.map((d, i) => (i === axis ? n : d)), dtype: x.dtype }));
  return g.emit('Split', [x, g.ints(sizes)], { axis }, outs, (dys) => [
    concat(dys.map((d, i) => d ?? zeros(outs[i], g)), axis),
  ]);
}

export function expand(x: Tensor, shape: Shape): Tensor {
  const out = broadcastShapes(x.shape, shape);
  if (sameShape(out, x.shape)) return x;
  const [y] = x.graph.emit('Expand', [x, x.graph.ints([...shape])], {}, [{ shape: out, dtype: x.dtype }], ([dy]) => [
    unbroadcast(dy!, x.shape),
  ]);
  return y;
}

// ---------------------------------------------------------------- reductions

function reducedShape(x: Tensor, axes: number[], keepdims: boolean): number[] {
  return x.shape.flatMap((d, i) => (axes.includes(i) ? (keepdims ? [1] : []) : [d]));
}

export function reduceSum(x: Tensor, axes: number[], keepdims = false): Tensor {
  const g = x.graph;
  axes = axes.map((a) => norm(a, x.rank));
  const shape = reducedShape(x, axes, keepdims);
  const [y] = g.emit('ReduceSum', [x, g.ints(axes)], { keepdims: keepdims ? 1 : 0 }, [{ shape, dtype: x.dtype }], ([dy]) => [
    expand(reshape(dy!, reducedShape(x, axes, true)), x.shape),
  ]);
  return y;
}

export function reduceMean(x: Tensor, axes: number[], keepdims = false): Tensor {
  axes = axes.map((a) => norm(a, x.rank));
  if (x.graph.anyLength && axes.some((a) => isLengthDim(x.shape[a]))) throw new Error('a mean over the length of a graph for any length');
  const n = axes.reduce((k, a) => k * x.shape[a], 1);
  return mul(reduceSum(x, axes, keepdims), 1 / n);
}

/** Sum of all elements, as a scalar. */
export const sumAll = (x: Tensor): Tensor => reduceSum(x, x.shape.map((_, i) => i), false);

/** Σ x² over all elements, as a scalar, in one pass (no backward rule: for gradient norms). */
export const sumSquares = (x: Tensor): Tensor => x.graph.emit('ReduceSumSquare', [x], { keepdims: 0 }, [{ shape: [], dtype: x.dtype }])[0];

// ---------------------------------------------------------------- linear algebra

/** Batched matrix product with numpy broadcasting of the batch axes (both operands rank ≥ 2). */
export function matmul(a: Tensor, b: Tensor): Tensor {
  const [m, k] = a.shape.slice(-2);
  const [k2, n] = b.shape.slice(-2);
  if (k !== k2) throw new Error(`matmul [${a.shape}] @ [${b.shape}]`);
  const batch = broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2));
  // b = Wᵀ (a weight used transposed, e.g. x @ Wᵀ): write db as (dyᵀ a)ᵀ so that the Transpose's own
  // rule composes the two transposes away and dW = dyᵀ a is one FusedMatMul, instead of
  // materialising aᵀ dy and then transposing it (111 ms for the [49152, 576] tied head).
  const bIsTransposed = b.rank === 2 && a.rank === 2 && b.producer?.opType === 'Transpose';
  const [y] = a.graph.emit('MatMul', [a, b], {}, [{ shape: [...batch, m, n], dtype: a.dtype }], ([dy]) => [
    unbroadcast(matmul(dy!, T(b)), a.shape),
    bIsTransposed ? T(matmul(T(dy!), a)) : unbroadcast(matmul(T(a), dy!), b.shape),
  ]);
  return y;
}

// ---------------------------------------------------------------- softmax family (rules by hand)

/** Softmax over the last axis: dx = y ⊙ (dy − Σ dy⊙y). */
export function softmax(x: Tensor): Tensor {
  const [y] = x.graph.emit('Softmax', [x], { axis: -1 }, [{ shape: x.shape, dtype: x.dtype }], ([dy]) => [
    mul(y, sub(dy!, reduceSum(mul(dy!, y), [-1], true))),
  ]);
  return y;
}

/** LogSoftmax over the last axis: dx = dy − exp(y) ⊙ Σ dy. */
export function logSoftmax(x: Tensor): Tensor {
  const [y] = x.graph.emit('LogSoftmax', [x], { axis: -1 }, [{ shape: x.shape, dtype: x.dtype }], ([dy]) => [
    sub(dy!, mul(exp(y), reduceSum(dy!, [-1], true))),
  ]);
  return y;
}

// ---------------------------------------------------------------- indexing

export function zeros(like: { shape: Shape; dtype: DType }, g = (like as Tensor).graph): Tensor {
  const value = { dtype: like.dtype, shape: [1], data: like.dtype === 'float64' ? new Float64Array(1) : new Float32Array(1) };
  const [z] = g.emit('ConstantOfShape', [g.ints([...like.shape])], { value: { tensor: value } }, [{ shape: like.shape, dtype: like.dtype }]);
  return z;
}

/** Embedding lookup: table[ids]. Backward scatters-adds rows (ScatterND, reduction=add). */
export function gather(table: Tensor, ids: Tensor): Tensor {
  const g = table.graph;
  const shape = [...ids.shape, ...table.shape.slice(1)];
  const [y] = g.emit('Gather', [table, ids], { axis: 0 }, [{ shape, dtype: table.dtype }], ([dy]) => {
    const idx = reshape(ids, [...ids.shape, 1]);
    const [dt] = g.emit('ScatterND', [zeros(table), idx, dy!], { reduction: 'add' }, [{ shape: table.shape, dtype: table.dtype }]);
    return [dt, null];
  });
  return y;
}

/** y[i][j] = x[i][idx[i][j]] along `axis`. Backward: ScatterElements with reduction=add. */
export function gatherElements(x: Tensor, idx: Tensor, axis: number): Tensor {
  const g = x.graph;
  axis = norm(axis, x.rank);
  const [y] = g.emit('GatherElements', [x, idx], { axis }, [{ shape: idx.shape, dtype: x.dtype }], ([dy]) => {
    const [dx] = g.emit('ScatterElements', [zeros(x), idx, dy!], { axis, reduction: 'add' }, [{ shape: x.shape, dtype: x.dtype }]);
    return [dx, null];
  });
  return y;
}

export function where(cond: Tensor, a: Tensor, b: Tensor): Tensor {
  const g = cond.graph;
  const shape = broadcastShapes(cond.shape, broadcastShapes(a.shape, b.shape));
  const [y] = g.emit('Where', [cond, a, b], {}, [{ shape, dtype: a.dtype }], ([dy]) => {
    const zero = g.constant(a.dtype, [], [0]);
    return [null, unbroadcast(where(cond, dy!, zero), a.shape), unbroadcast(where(cond, zero, dy!), b.shape)];
  });
  return y;
}

// ---------------------------------------------------------------- non-differentiable helpers

/**
 * start, start + 1, …, end − 1 as int64 of `shape` (default [end − start]); in a graph for any
 * length, an end that depends on the length is the fed one (ONNX Range).
 */
export function arange(g: Graph, start: number, end: number, shape: Shape = [end - start]): Tensor {
  if (!g.anyLength || !isLengthDim(end)) return g.constant('int64', shape, Array.from({ length: end - start }, (_, i) => start + i));
  const scalar = (v: number) => reshape(g.ints([v]), []);
  const [r] = g.emit('Range', [scalar(start), scalar(end), scalar(1)], {}, [{ shape: [end - start], dtype: 'int64' }]);
  return reshape(r, shape);
}

function compare(op: string, a: Tensor, b: Tensor): Tensor {
  return a.graph.emit(op, [a, b], {}, [{ shape: broadcastShapes(a.shape, b.shape), dtype: 'bool' }])[0];
}
export const equal = (a: Tensor, b: Tensor) => compare('Equal', a, b);
export const greater = (a: Tensor, b: Tensor) => compare('Greater', a, b);
export const less = (a: Tensor, b: Tensor) => compare('Less', a, b);
export const and = (a: Tensor, b: Tensor) => compare('And', a, b);
export const not = (a: Tensor): Tensor => a.graph.emit('Not', [a], {}, [{ shape: a.shape, dtype: 'bool' }])[0];

export function argmax(x: Tensor, axis: number): Tensor {
  axis = norm(axis, x.rank);
  const shape = x.shape.filter((_, i) => i !== axis);
  return x.graph.emit('ArgMax', [x], { axis, keepdims: 0 }, [{ shape, dtype: 'int64' }])[0];
}

export function min(a: Tensor, b: Tensor): Tensor {
  return a.graph.emit('Min', [a, b], {}, [{ shape: broadcastShapes(a.shape, b.shape), dtype: a.dtype }])[0];
}

/** Cuts gradient flow (like torch's detach). */
export function stopGradient(x: Tensor): Tensor {
  return x.graph.emit('Identity', [x], {}, [{ shape: x.shape, dtype: x.dtype }], () => [null])[0];
}
