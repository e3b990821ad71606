// Reverse-mode autodiff: walk the nodes between `wrt` and `y` backwards, calling each node's
// backward rule and summing the gradients of tensors used more than once.

import { Tensor, type BackwardRule, type Node } from './ir.ts';
import { add } from './ops.ts';

/**
 * Gradients of the scalar `y` (or of Σ y·seed when `seed` is given) with respect to each of `wrt`.
 * A tensor that `y` does not depend on gets a zero-free null → returned as null.
 */
export function gradients(y: Tensor, wrt: Tensor[], seed?: Tensor): (Tensor | null)[] {
  const g = y.graph;
  const nodes = between(y, new Set(wrt));

  // Forward sweep: which tensors depend on any of `wrt`?
  const live = new Set<Tensor>(wrt);
  const inputsOf = (n: (typeof nodes)[number]) => n.gradientInputs ?? n.inputs;
  for (const n of nodes) {
    if (inputsOf(n).some((t) => t && live.has(t))) for (const o of n.outputs) live.add(o);
  }
  if (!live.has(y)) return wrt.map(() => null);

  const grad = new Map<Tensor, Tensor>();
  const accumulate = (t: Tensor, d: Tensor) => {
    const prev = grad.get(t);
    grad.set(t, prev ? add(prev, d) : d);
  };
  accumulate(y, seed ?? g.constant(y.dtype, y.shape, new Array(y.size).fill(1)));

  for (let i = nodes.length - 1; i >= 0; i--) {
    const n = nodes[i];
    if (!n.outputs.some((o) => grad.has(o))) continue;
    const wanted = inputsOf(n).map((t) => !!t && live.has(t));
    if (!wanted.some(Boolean)) continue;
    if (!n.backward) throw new Error(`no backward rule for ${n.opType} on the path to the loss`);
    const dxs = n.backward(n.outputs.map((o) => grad.get(o) ?? null), wanted);
    inputsOf(n).forEach((t, k) => {
      const d = dxs[k];
      if (t && d && wanted[k]) accumulate(t, d);
    });
  }
  return wrt.map((t) => grad.get(t) ?? null);
}

/**
 * The nodes y depends on without passing through `stop`, in a topological order: what the
 * backward walks. Only these, not the whole graph: a recomputed layer's backward is built once
 * per layer, and scanning every node each time made building long-sequence graphs quadratic.
 */
function between(y: Tensor, stop: Set<Tensor>): Node[] {
  const order: Node[] = [];
  const seen = new Set<Node>();
  const stack: [Node, boolean][] = y.producer && !stop.has(y) ? [[y.producer, false]] : [];
  while (stack.length > 0) {
    const [n, done] = stack.pop()!;
    if (done) {
      order.push(n);
      continue;
    }
    if (seen.has(n)) continue;
    seen.add(n);
    stack.push([n, true]);
    for (const t of n.gradientInputs ?? n.inputs) if (t?.producer && !stop.has(t) && !seen.has(t.producer)) stack.push([t.producer, false]);
  }
  return order;
}

/**
 * A composite op: `y`, computed by any nodes from `inputs`, gets `rule` as its backward (autodiff
 * differentiates an Identity of `y` with respect to `inputs` and never walks the nodes between), so
 * the rule alone decides what the backward keeps and what it recomputes. It sees y's gradient and,
 * per input, whether that input's gradient is wanted.
 */
export function customGradient(y: Tensor, inputs: Tensor[], rule: (dy: Tensor, wanted: boolean[]) => (Tensor | null)[]): Tensor {
  const backward: BackwardRule = ([dy], wanted) => (dy ? rule(dy, wanted) : inputs.map(() => null));
  const [out] = y.graph.emit('Identity', [y], {}, [{ shape: y.shape, dtype: y.dtype }], backward);
  out.producer!.gradientInputs = inputs;
  return out;
}
