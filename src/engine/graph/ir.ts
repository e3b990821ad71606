// The tensor-graph IR: tensors with static shapes, nodes that are ONNX operators, and for each node
// the backward rule that its op function attached when it was built (see ops.ts).
// Shapes are static numbers: a training step is compiled once per (batch rows, sequence length),
// so every shape is known while the graph is built and no shape inference is needed at run time.

// uint16 holds 2-byte floats' raw bits (frozen weights stored as bf16/f16, see models/llama.ts's
// widen), int32 the lookup indices they are widened through.
export type DType = 'float32' | 'float64' | 'int64' | 'int32' | 'uint16' | 'bool';
export type FloatType = 'float32' | 'float64';
export type Shape = readonly number[];

/** Numbers are INT attributes; `{ f }` is a FLOAT attribute. */
export type AttrValue = number | number[] | string | { f: number } | { tensor: ConstData };

export interface ConstData {
  dtype: DType;
  shape: Shape;
  data: Float32Array | Float64Array | BigInt64Array | Int32Array | Uint16Array | Uint8Array;
}

/**
 * A backward rule: given the gradients of a node's outputs (null where nothing flows back),
 * return one gradient per input (null for inputs that are not differentiable). `wanted` says,
 * per input, whether the loss's gradient needs it (a rule may skip building the others).
 */
export type BackwardRule = (dys: (Tensor | null)[], wanted: boolean[]) => (Tensor | null)[];

export interface Node {
  opType: string;
  domain: string;
  inputs: (Tensor | null)[]; // null = an omitted optional ONNX input
  outputs: Tensor[];
  attrs: Record<string, AttrValue>;
  backward?: BackwardRule;
  /**
   * What autodiff differentiates this node with respect to, when not its ONNX inputs (see
   * customGradient in autodiff.ts); `backward` then returns one gradient per entry here.
   */
  gradientInputs?: Tensor[];
}

export class Tensor {
  constructor(
    readonly graph: Graph,
    public name: string,
    readonly shape: Shape,
    readonly dtype: DType,
    readonly producer: Node | null,
  ) {}
  get rank(): number {
    return this.shape.length;
  }
  get size(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }
  toString(): string {
    return `${this.name}:${this.dtype}[${this.shape.join(',')}]`;
  }
}

export class Graph {
  readonly nodes: Node[] = [];
  readonly inputs: Tensor[] = [];
  readonly outputs: Tensor[] = [];
  readonly initializers: { tensor: Tensor; value: ConstData }[] = [];
  private counter = 0;
  private constCache = new Map<string, Tensor>();

  /** `float` is the dtype of every floating tensor: float32 to train, float64 for gradient checks. */
  constructor(readonly float: FloatType = 'float32') {}

  private fresh(prefix: string): string {
    return `${prefix}${this.counter++}`;
  }

  input(name: string, shape: Shape, dtype: DType = this.float): Tensor {
    if (this.inputs.some((t) => t.name === name)) throw new Error(`duplicate graph input ${name}`);
    const t = new Tensor(this, name, shape, dtype, null);
    this.inputs.push(t);
    return t;
  }

  /** Marks `t` as a graph output called `name` (renaming it, or via Identity when it must keep its name). */
  output(name: string, t: Tensor): Tensor {
    const isInput = t.producer === null;
    if (isInput || this.outputs.includes(t)) {
      t = this.emit('Identity', [t], {}, [{ shape: t.shape, dtype: t.dtype }])[0];
    }
    t.name = name;
    this.outputs.push(t);
    return t;
  }

  /** A constant (ONNX initializer). Small constants with the same value are shared. */
  constant(dtype: DType, shape: Shape, values: ArrayLike<number> | ArrayLike<bigint>): Tensor {
    const n = shape.reduce((a, b) => a * b, 1);
    if (values.length !== n) throw new Error(`constant: ${values.length} values for shape [${shape}]`);
    const key = n <= 16 ? `${dtype}[${shape}]${Array.from(values as ArrayLike<number>).join(',')}` : null;
    if (key && this.constCache.has(key)) return this.constCache.get(key)!;
    const data =
      dtype === 'float32' ? Float32Array.from(values as ArrayLike<number>)
      : dtype === 'float64' ? Float64Array.from(values as ArrayLike<number>)
      : dtype === 'int64' ? BigInt64Array.from(Array.from(values as ArrayLike<number>, (v) => BigInt(v)))
      : dtype === 'int32' ? Int32Array.from(values as ArrayLike<number>)
      : dtype === 'uint16' ? Uint16Array.from(values as ArrayLike<number>)
      : Uint8Array.from(values as ArrayLike<number>);
    const t = new Tensor(this, this.fresh('c'), shape, dtype, null);
    this.initializers.push({ tensor: t, value: { dtype, shape, data } });
    if (key) this.constCache.set(key, t);
    return t;
  }

  /** A scalar of the graph's float type. */
  scalar(v: number): Tensor {
    return this.constant(this.float, [], [v]);
  }

  ints(values: number[]): Tensor {
    return this.constant('int64', [values.length], values);
  }

  /** Appends one ONNX node. `backward` (if any) is the op's gradient rule. */
  emit(
    opType: string,
    inputs: (Tensor | null)[],
    attrs: Record<string, AttrValue>,
    outs: { shape: Shape; dtype: DType }[],
    backward?: BackwardRule,
    domain = '',
  ): Tensor[] {
    const node: Node = { opType, domain, inputs, outputs: [], attrs, backward };
    node.outputs = outs.map((o) => new Tensor(this, this.fresh('t'), o.shape, o.dtype, node));
    this.nodes.push(node);
    return [...node.outputs]; // a copy: callers may reuse the array, the node's must not change
  }
}

export function sameShape(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

export function isFloat(dtype: DType): dtype is FloatType {
  return dtype === 'float32' || dtype === 'float64';
}
