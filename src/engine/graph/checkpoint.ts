// Activation recomputation (gradient checkpointing): a block's forward keeps only its input; its
// backward runs the block again on that input and differentiates the copy. Two things about ORT
// shape this: common-subexpression elimination (level ALL) would merge a copy fed the same inputs
// with the original, and its scheduler could run the copy as soon as its inputs exist. Feeding the
// copy `after(x, [dy])` prevents both: it differs from x as a node and waits for dy. And ORT puts
// off what only the step's outputs need (the weights' gradients) to the end, which would keep every
// layer's recomputed activations alive until then: the input's gradient waits for the weights'.

import type { Tensor } from './ir.ts';
import { isFloat } from './ir.ts';
import * as op from './ops.ts';
import { customGradient, gradients } from './autodiff.ts';

/**
 * x + Σ 0·dep[0]: x's value, as a tensor that exists only once every dep does. No gradient flows
 * through it (a recomputation's input is a fresh leaf, not a way back into the forward).
 */
export function after(x: Tensor, deps: Tensor[]): Tensor {
  const zero = deps.map((d) => op.mul(op.slice(op.reshape(d, [d.size]), 0, 0, 1), 0)).reduce((a, b) => op.add(a, b));
  const [y] = x.graph.emit('Add', [x, zero], {}, [{ shape: x.shape, dtype: x.dtype }], () => [null, null]);
  return y;
}

/**
 * y = block(x), keeping only x for the backward. The block may read other tensors (weights, masks,
 * tables) built outside it; their gradients come from the recomputed copy too. `block` must build
 * the same subgraph each time it is called (it is called twice: forward and backward).
 */
export function checkpoint(x: Tensor, block: (x: Tensor) => Tensor): Tensor {
  const g = x.graph;
  const first = g.nodes.length;
  const y = block(x);
  const inside = g.nodes.slice(first);
  const made = new Set(inside.flatMap((n) => n.outputs));
  const read = new Set<Tensor>();
  for (const n of inside) {
    for (const t of n.gradientInputs ?? n.inputs) if (t && t !== x && !made.has(t) && isFloat(t.dtype)) read.add(t);
  }
  const others = [...read];
  return customGradient(y, [x, ...others], (dy, wanted) => {
    const xAgain = after(x, [dy]);
    const wrt = [xAgain, ...others].filter((_, i) => wanted[i]);
    const grads = gradients(block(xAgain), wrt, dy);
    let k = 0;
    const out = wanted.map((w) => (w ? grads[k++] : null));
    const weightGrads = out.slice(1).filter((d): d is Tensor => d !== null);
    if (out[0] && weightGrads.length > 0) out[0] = after(out[0], weightGrads);
    return out;
  });
}
