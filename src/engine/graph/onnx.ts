// ONNX emission: the reachable part of a Graph → ModelProto bytes (opset 21, IR version 10).
// Nodes not needed for any output (e.g. gradients nobody asked for) are pruned here, so backward
// rules may build more than is used.

import onnxProto from 'onnx-proto';
import { lengthTerms, type ConstData, type DType, type Graph, type Node, type Tensor } from './ir.ts';

const { onnx } = onnxProto;
export const OPSET = 21;
const IR_VERSION = 10;

export const ONNX_TYPE: Record<DType, number> = { float32: 1, uint16: 4, int32: 6, int64: 7, bool: 9, float64: 11 };

function tensorProto(name: string, c: ConstData) {
  const bytes = new Uint8Array(c.data.buffer, c.data.byteOffset, c.data.byteLength);
  return onnx.TensorProto.create({ name, dims: [...c.shape], dataType: ONNX_TYPE[c.dtype], rawData: bytes });
}

/** A dimension: its value, or for one that depends on the length of a graph for any length, its name (T, 2T+1, …). */
function dimension(d: number) {
  const { a, b } = lengthTerms(d);
  if (a === 0) return { dimValue: d };
  return { dimParam: `${a === 1 ? '' : a}T${b === 0 ? '' : b > 0 ? `+${b}` : b}` };
}

function valueInfo(t: Tensor) {
  return onnx.ValueInfoProto.create({
    name: t.name,
    type: {
      tensorType: { elemType: ONNX_TYPE[t.dtype], shape: { dim: t.shape.map(dimension) } },
    },
  });
}

function attribute(name: string, v: Node['attrs'][string]) {
  const A = onnx.AttributeProto.AttributeType;
  if (typeof v === 'number') return { name, type: A.INT, i: v };
  if (typeof v === 'string') return { name, type: A.STRING, s: new TextEncoder().encode(v) };
  if (Array.isArray(v)) return { name, type: A.INTS, ints: v };
  if ('f' in v) return { name, type: A.FLOAT, f: v.f };
  return { name, type: A.TENSOR, t: tensorProto('', v.tensor) };
}

/** The nodes needed to compute the graph's outputs, in topological order. */
export function reachableNodes(graph: Graph): Node[] {
  const needed = new Set<Tensor>(graph.outputs);
  const keep: Node[] = [];
  for (let i = graph.nodes.length - 1; i >= 0; i--) {
    const n = graph.nodes[i];
    if (!n.outputs.some((o) => needed.has(o))) continue;
    keep.push(n);
    for (const t of n.inputs) if (t) needed.add(t);
  }
  return keep.reverse();
}

export function toOnnx(graph: Graph, name = 'tuneforge'): Uint8Array {
  const nodes = reachableNodes(graph);
  const used = new Set<Tensor>(graph.outputs);
  for (const n of nodes) for (const t of n.inputs) if (t) used.add(t);
  const model = onnx.ModelProto.create({
    irVersion: IR_VERSION,
    producerName: 'tuneforge',
    opsetImport: [{ domain: '', version: OPSET }, { domain: 'com.microsoft', version: 1 }],
    graph: {
      name,
      node: nodes.map((n, k) =>
        onnx.NodeProto.create({
          name: `${n.opType}_${k}`,
          opType: n.opType,
          domain: n.domain,
          input: n.inputs.map((t) => (t ? t.name : '')),
          output: n.outputs.map((t) => t.name),
          attribute: Object.entries(n.attrs).map(([k2, v]) => attribute(k2, v)),
        }),
      ),
      // Unused inputs are dropped; the runtime feeds only the names a session asks for.
      input: graph.inputs.filter((t) => used.has(t)).map(valueInfo),
      output: graph.outputs.map(valueInfo),
      initializer: graph.initializers.filter((c) => used.has(c.tensor)).map((c) => tensorProto(c.tensor.name, c.value)),
      valueInfo: graph.anyLength ? nodes.flatMap((n) => n.outputs).filter((t) => !graph.outputs.includes(t) && !graph.rowsPicked.has(t)).map(valueInfo) : [],
    },
  });
  return onnx.ModelProto.encode(model).finish();
}
