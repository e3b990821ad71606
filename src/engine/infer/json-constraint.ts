// response_format {type: "json_object"} by constrained decoding: at each step only the tokens whose
// bytes keep the output a prefix of some JSON object (RFC 8259) may be sampled, and generation ends
// when the top-level object closes.
//
// The recogniser runs over bytes, not characters, so that a token carrying half of a UTF-8
// character is judged correctly (bytes ≥ 0x80 are only valid inside strings). Its state is a small
// immutable record (the container stack is a string), so trying a token is: feed its bytes to a
// copy, keep or drop. The vocabulary is walked as a byte trie, pruned at the first rejected byte;
// inside strings, only tokens with a quote, backslash or control byte need trying.

const enum Mode {
  Start, // before the top-level object: whitespace or '{'
  ObjectKeyOrEnd, // after '{': '"' or '}'
  ObjectKey, // after ',' in an object: '"'
  Colon, // after a key
  Value, // after ':' or a ',' in an array: any value
  ArrayValueOrEnd, // after '[': a value or ']'
  CommaOrEnd, // after a value inside a container: ',' or the container's closer
  String, // inside a string (key or value)
  StringEscape, // after '\'
  StringHex, // inside \uXXXX
  Literal, // inside true/false/null
  Number, // inside a number; `numberPart` says where
  Done, // the top-level object has closed
}

const enum NumberPart { Minus, Zero, Integer, Dot, Fraction, Exponent, ExponentSign, ExponentDigits }

interface State {
  readonly mode: Mode;
  /** Open containers, innermost last: '{' or '['. */
  readonly stack: string;
  /** Whether the string being read is an object key (a value follows it after ':'). */
  readonly key: boolean;
  /** Remaining bytes of a literal, or hex digits of a \u escape. */
  readonly pending: string;
  readonly hexLeft: number;
  readonly numberPart: NumberPart;
  /** Whitespace bytes in a row: capped, so a model cannot pad forever. */
  readonly spaces: number;
}

const MAX_SPACES = 16;
const isDigit = (b: number) => b >= 0x30 && b <= 0x39;
const isSpace = (b: number) => b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;
const isHex = (b: number) => isDigit(b) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);

const initial: State = { mode: Mode.Start, stack: '', key: false, pending: '', hexLeft: 0, numberPart: NumberPart.Minus, spaces: 0 };

/** After a complete value: back to the enclosing container, or done at the top. */
function afterValue(s: State): State {
  return { ...s, mode: s.stack.length === 0 ? Mode.Done : Mode.CommaOrEnd, spaces: 0 };
}

/** The first byte of a value. */
function startValue(s: State, b: number): State | null {
  switch (b) {
    case 0x7b: return { ...s, mode: Mode.ObjectKeyOrEnd, stack: s.stack + '{', spaces: 0 }; // {
    case 0x5b: return { ...s, mode: Mode.ArrayValueOrEnd, stack: s.stack + '[', spaces: 0 }; // [
    case 0x22: return { ...s, mode: Mode.String, key: false, spaces: 0 }; // "
    case 0x74: return { ...s, mode: Mode.Literal, pending: 'rue', spaces: 0 };
    case 0x66: return { ...s, mode: Mode.Literal, pending: 'alse', spaces: 0 };
    case 0x6e: return { ...s, mode: Mode.Literal, pending: 'ull', spaces: 0 };
    case 0x2d: return { ...s, mode: Mode.Number, numberPart: NumberPart.Minus, spaces: 0 };
    default:
      if (b === 0x30) return { ...s, mode: Mode.Number, numberPart: NumberPart.Zero, spaces: 0 };
      if (isDigit(b)) return { ...s, mode: Mode.Number, numberPart: NumberPart.Integer, spaces: 0 };
      return null;
  }
}

function closeContainer(s: State, closer: number): State | null {
  const open = s.stack[s.stack.length - 1];
  if ((closer === 0x7d && open !== '{') || (closer === 0x5d && open !== '[')) return null;
  return afterValue({ ...s, stack: s.stack.slice(0, -1) });
}

function space(s: State): State | null {
  return s.spaces >= MAX_SPACES ? null : { ...s, spaces: s.spaces + 1 };
}

/** Feeds one byte; null when no JSON object can continue this way. */
export function step(s: State, b: number): State | null {
  switch (s.mode) {
    case Mode.Start:
      if (isSpace(b)) return space(s);
      return b === 0x7b ? startValue(s, b) : null;
    case Mode.ObjectKeyOrEnd:
    case Mode.ObjectKey:
      if (isSpace(b)) return space(s);
      if (b === 0x22) return { ...s, mode: Mode.String, key: true, spaces: 0 };
      if (b === 0x7d && s.mode === Mode.ObjectKeyOrEnd) return closeContainer(s, b);
      return null;
    case Mode.Colon:
      if (isSpace(b)) return space(s);
      return b === 0x3a ? { ...s, mode: Mode.Value, spaces: 0 } : null;
    case Mode.Value:
    case Mode.ArrayValueOrEnd:
      if (isSpace(b)) return space(s);
      if (b === 0x5d && s.mode === Mode.ArrayValueOrEnd) return closeContainer(s, b);
      return startValue(s, b);
    case Mode.CommaOrEnd: {
      if (isSpace(b)) return space(s);
      const inObject = s.stack[s.stack.length - 1] === '{';
      if (b === 0x2c) return { ...s, mode: inObject ? Mode.ObjectKey : Mode.Value, spaces: 0 };
      if (b === 0x7d || b === 0x5d) return closeContainer(s, b);
      return null;
    }
    case Mode.String:
      if (b === 0x22) return s.key ? { ...s, mode: Mode.Colon, key: false } : afterValue(s);
      if (b === 0x5c) return { ...s, mode: Mode.StringEscape };
      return b < 0x20 ? null : s; // control characters must be escaped
    case Mode.StringEscape:
      if (b === 0x75) return { ...s, mode: Mode.StringHex, hexLeft: 4 }; // \u
      return '"\\/bfnrt'.includes(String.fromCharCode(b)) ? { ...s, mode: Mode.String } : null;
    case Mode.StringHex:
      if (!isHex(b)) return null;
      return s.hexLeft === 1 ? { ...s, mode: Mode.String, hexLeft: 0 } : { ...s, hexLeft: s.hexLeft - 1 };
    case Mode.Literal:
      if (b !== s.pending.charCodeAt(0)) return null;
      return s.pending.length === 1 ? afterValue({ ...s, pending: '' }) : { ...s, pending: s.pending.slice(1) };
    case Mode.Number:
      return numberStep(s, b);
    case Mode.Done:
      return null;
  }
}

function numberStep(s: State, b: number): State | null {
  const part = (numberPart: NumberPart): State => ({ ...s, numberPart });
  switch (s.numberPart) {
    case NumberPart.Minus:
      return b === 0x30 ? part(NumberPart.Zero) : isDigit(b) ? part(NumberPart.Integer) : null;
    case NumberPart.Dot:
      return isDigit(b) ? part(NumberPart.Fraction) : null;
    case NumberPart.Exponent:
      return b === 0x2b || b === 0x2d ? part(NumberPart.ExponentSign) : isDigit(b) ? part(NumberPart.ExponentDigits) : null;
    case NumberPart.ExponentSign:
      return isDigit(b) ? part(NumberPart.ExponentDigits) : null;
    default: {
      // Zero, Integer, Fraction, ExponentDigits: the number may continue, or end at this byte.
      const p = s.numberPart;
      if (isDigit(b) && p !== NumberPart.Zero) return s;
      if (b === 0x2e && (p === NumberPart.Zero || p === NumberPart.Integer)) return part(NumberPart.Dot);
      if ((b === 0x65 || b === 0x45) && p !== NumberPart.ExponentDigits) return part(NumberPart.Exponent);
      // Numbers only occur inside containers here (the top level is an object), so the byte that
      // ends one belongs to the container.
      return step(afterValue(s), b);
    }
  }
}

/**
 * The vocabulary as a byte trie, so that tokens sharing a prefix are checked together and a
 * rejected byte prunes every token below it (outside strings almost every first byte is rejected).
 */
class ByteTrie {
  /** Per node: child bytes and child nodes, parallel arrays; token ids ending at the node. */
  readonly bytes: number[][] = [[]];
  readonly children: number[][] = [[]];
  readonly ids: number[][] = [[]];

  constructor(tokenBytes: (Uint8Array | null)[]) {
    tokenBytes.forEach((bytes, id) => {
      if (!bytes || bytes.length === 0) return;
      let node = 0;
      for (const b of bytes) {
        const at = this.bytes[node].indexOf(b);
        if (at >= 0) node = this.children[node][at];
        else {
          const child = this.bytes.length;
          this.bytes.push([]);
          this.children.push([]);
          this.ids.push([]);
          this.bytes[node].push(b);
          this.children[node].push(child);
          node = child;
        }
      }
      this.ids[node].push(id);
    });
  }
}

/** The constraint of one generation: which tokens may come next, and whether the object is done. */
export class JsonObjectConstraint {
  private state: State = initial;
  private readonly trie: ByteTrie;
  /** Tokens that may sit anywhere inside a string and leave it open (no '"', '\\' or control bytes). */
  private readonly plainInString: Uint8Array;
  /** The other tokens: inside a string only these need simulating. */
  private readonly notPlainInString: number[] = [];

  /**
   * `tokenBytes[id]`: the bytes a token adds to the text, or null for tokens that may never be
   * generated here (special tokens such as <|im_end|>; EOS is not needed, the closing brace ends).
   */
  constructor(private readonly tokenBytes: (Uint8Array | null)[]) {
    this.trie = constraintTries.get(tokenBytes) ?? new ByteTrie(tokenBytes);
    constraintTries.set(tokenBytes, this.trie);
    this.plainInString = Uint8Array.from(tokenBytes, (bytes) => (bytes && bytes.length > 0 && bytes.every((b) => b >= 0x20 && b !== 0x22 && b !== 0x5c) ? 1 : 0));
    tokenBytes.forEach((bytes, id) => bytes && bytes.length > 0 && !this.plainInString[id] && this.notPlainInString.push(id));
  }

  get complete(): boolean {
    return this.state.mode === Mode.Done;
  }

  private feed(state: State, bytes: Uint8Array): State | null {
    let s: State | null = state;
    for (let i = 0; i < bytes.length && s; i++) s = step(s, bytes[i]);
    return s;
  }

  /** Sets the logits of every token that would break the JSON to −∞. */
  maskLogits(logits: Float32Array): void {
    const allowed = new Uint8Array(logits.length);
    if (this.state.mode === Mode.String) {
      // Inside a string (where most of a JSON answer's tokens go) most tokens need no check.
      allowed.set(this.plainInString.subarray(0, logits.length));
      for (const id of this.notPlainInString) if (this.feed(this.state, this.tokenBytes[id]!)) allowed[id] = 1;
    } else {
      const { bytes, children, ids } = this.trie;
      const nodes: number[] = [0];
      const states: State[] = [this.state];
      while (nodes.length > 0) {
        const node = nodes.pop()!;
        const state = states.pop()!;
        for (let k = 0; k < bytes[node].length; k++) {
          const next = step(state, bytes[node][k]);
          if (!next) continue;
          const child = children[node][k];
          for (const id of ids[child]) allowed[id] = 1;
          nodes.push(child);
          states.push(next);
        }
      }
    }
    for (let id = 0; id < logits.length; id++) if (!allowed[id]) logits[id] = -Infinity;
  }

  advance(id: number): void {
    const next = this.tokenBytes[id] ? this.feed(this.state, this.tokenBytes[id]!) : null;
    if (!next) throw new Error(`json constraint: token ${id} does not continue the JSON`);
    this.state = next;
  }
}

const constraintTries = new WeakMap<(Uint8Array | null)[], ByteTrie>();

/** Whether `text` is accepted as a whole JSON object by the recogniser (for tests). */
export function isCompleteJsonObject(text: string): boolean {
  let s: State | null = initial;
  for (const b of Buffer.from(text, 'utf8')) if (!(s = s && step(s, b))) return false;
  return s?.mode === Mode.Done;
}
