// The tensor-graph IR: tensors with static shapes, nodes that are ONNX operators, and for each node
// the backward rule that its op function attached when it was built (see ops.ts).
// Shapes are static numbers: a training step is compiled once per (batch rows, sequence length),
// so every shape is known while the graph is built and no shape inference is needed at run time.
// The one exception is a graph for rows of any length (ANY_LENGTH): built at a stand-in length,
// its shape operands are computed from the length fed at run time.

// uint16 holds 2-byte floats' raw bits (frozen weights stored as bf16/f16, see models/llama.ts's
// widen), int32 the lookup indices they are widened through.
export type DType = 'float32' | 'float64' | 'int64' | 'int32' | 'uint16' | 'bool';
export type FloatType = 'float32' | 'float64';
export type Shape = readonly number[];

/**
 * The stand-in length of a graph for rows of any length (one session for every length, no
 * padding): the prime 2³¹ − 1, far above any static size that sits beside it, so a dimension
 * a·ANY_LENGTH + b (b small) is a length-dependent one. Such a graph computes its shape operands
 * (Graph.ints) from the length it is fed, the ONNX export names those dimensions (a·T), and the
 * session reads T from the feeds. Nothing may read the stand-in as a value (a constant's size, a
 * mean's count, a loop bound): Graph.constant and the ops that would refuse it.
 */
export const ANY_LENGTH = 2 ** 31 - 1;

/** v as a·ANY_LENGTH + b (a = 0: a static value). Throws where v is quadratic in the length. */
export function lengthTerms(v: number): { a: number; b: number } {
  const a = Math.round(v / ANY_LENGTH);
  const b = v - a * ANY_LENGTH;
  if (a === 0 || Math.abs(b) > 2 ** 20) return { a: 0, b: v };
  if (Math.abs(a) >= 2 ** 20) throw new Error(`${v}: quadratic in the length, which a graph for any length cannot compute`);
  return { a, b };
}

/** Whether a dimension depends on the length of a graph for any length. */
export const isLengthDim = (d: number): boolean => lengthTerms(d).a !== 0;

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
  /** The fed length, [1] int64, of a graph for any length (see ANY_LENGTH), and its shape operands computed from it. */
  private fedLength: Tensor | null = null;
  private lengthInts = new Map<string, Tensor>();
  /**
   * Tensors whose first dimension is a count of rows picked at run time (Compress, see loss.ts):
   * their declared shape is its upper bound, so the ONNX export leaves their shape to ONNX Runtime.
   * A node's outputs join the set when an input is in it; whatever puts the rows back leaves it.
   */
  readonly rowsPicked = new Set<Tensor>();

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
    if (this.anyLength && shape.some(isLengthDim)) throw new Error(`a constant of shape [${shape}] depends on the length of a graph for any length`);
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

  /** An int64 vector (shape operands, axes); values that depend on the length are computed from the fed one. */
  ints(values: number[]): Tensor {
    if (!this.anyLength || !values.some(isLengthDim)) return this.constant('int64', [values.length], values);
    const key = values.join(',');
    if (!this.lengthInts.has(key)) {
      const parts = values.map((v) => {
        const { a, b } = lengthTerms(v);
        if (a === 0) return this.ints([v]);
        const scaled = a === 1 ? this.length() : this.emit('Mul', [this.length(), this.ints([a])], {}, [{ shape: [1], dtype: 'int64' }])[0];
        return b === 0 ? scaled : this.emit('Add', [scaled, this.ints([b])], {}, [{ shape: [1], dtype: 'int64' }])[0];
      });
      this.lengthInts.set(key, parts.length > 1 ? this.emit('Concat', parts, { axis: 0 }, [{ shape: [values.length], dtype: 'int64' }])[0] : parts[0]);
    }
    return this.lengthInts.get(key)!;
  }

  /** Whether this graph is for rows of any length: an input has the dimension ANY_LENGTH. */
  get anyLength(): boolean {
    return this.inputs.some((t) => t.shape.includes(ANY_LENGTH));
  }

  /** The fed length of a graph for any length, [1] int64: read from the first input with a dimension ANY_LENGTH. */
  length(): Tensor {
    if (!this.fedLength) {
      const source = this.inputs.find((t) => t.shape.includes(ANY_LENGTH))!;
      const axis = source.shape.indexOf(ANY_LENGTH);
      this.fedLength = this.emit('Shape', [source], { start: axis, end: axis + 1 }, [{ shape: [1], dtype: 'int64' }])[0];
    }
    return this.fedLength;
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
    if (this.rowsPicked.size > 0 && inputs.some((t) => t && this.rowsPicked.has(t))) for (const t of node.outputs) this.rowsPicked.add(t);
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
