// JSON as a character-level pushdown automaton, for constrained decoding (response_format
// json_object / json_schema, forced tool calls).
//
// The state is an immutable stack of frames (a linked list), so a state can be extended by one
// character without copying and shared by every token that starts with the same text: index.ts
// walks a trie of the vocabulary from the current state and prunes at the first character that
// cannot continue the JSON. Each frame says what it still expects:
//   value  a JSON value of a (sub)schema, leading whitespace allowed
//   lit    one of a few literal strings (true/false/null, enum and const values, fixed text)
//   str    inside a string (escapes tracked)
//   num    inside a number (JSON's number grammar; integers for "type": "integer")
//   obj    inside an object: with declared properties, keys come from them in declared order,
//          each at most once, every required one present (as OpenAI's structured outputs do);
//          without, any keys
//   arr    inside an array (items schema, minItems / maxItems)
// A frame that completes without consuming the character (a number ends at the `,` after it)
// pops and hands the character to the frame below.
//
// `completion(state)`: the shortest text that completes the document. index.ts keeps the tokens
// of that text within the tokens left, so a generation always ends as complete JSON within
// max_tokens, even from a random model.
//
// Schema keywords honoured: type (string or list), properties, required, additionalProperties
// (false, or a schema for free-form objects), items, minItems, maxItems, enum, const, anyOf /
// oneOf (branches followed side by side until the text picks one; oneOf's exclusivity is not
// checked), $ref to #/$defs, #/definitions or #.
// Not enforced: pattern, format, minLength/maxLength, minimum/maximum, multipleOf, allOf, not.

export type JsonSchema = boolean | { [key: string]: unknown };
type SchemaObject = { [key: string]: unknown };

const MAX_WHITESPACE = 20; // per gap between tokens of the JSON text
const MAX_DIGITS = 16; // per part of a number
const IMPOSSIBLE = 1e6;
/** Thrown inside frameCompletion when no completion exists (caught in completion()). */
const UNREACHABLE = Symbol('unreachable');

interface Prop {
  key: string;
  /** The key's JSON text without its quotes. */
  inner: string;
  schema: JsonSchema;
  required: boolean;
}

interface ObjectPlan {
  /** Declared properties in order, or null for free-form keys. */
  props: Prop[] | null;
  /** Value schema of free-form keys. */
  free: JsonSchema;
}

type NumPhase = 'start' | 'minus' | 'zero' | 'int' | 'dot' | 'frac' | 'e' | 'esign' | 'exp';

export type Frame =
  | { k: 'value'; s: JsonSchema; ws: number }
  | { k: 'lit'; options: string[]; pos: number }
  | { k: 'str'; esc: number }
  | { k: 'num'; ph: NumPhase; int: boolean; digits: number }
  | { k: 'obj'; plan: ObjectPlan; ph: 'first' | 'key' | 'colon' | 'after' | 'next'; next: number; cur: number; key: string; ws: number }
  | { k: 'arr'; items: JsonSchema; ph: 'first' | 'after'; count: number; min: number; max: number; ws: number };

/** What is still expected, innermost first; null: the document is complete. */
type Stack = { f: Frame; next: Stack } | null;

/**
 * The stacks the text so far may be in: one, except under anyOf/oneOf, whose branches are
 * followed side by side until the text tells them apart.
 */
export type JsonState = readonly Stack[];

const MAX_ALTERNATIVES = 16;

interface Step {
  /** Frames that replace the top one, first = new top. */
  push: Frame[];
  consumed: boolean;
}

const WS = new Set([' ', '\t', '\n', '\r']);
const isDigit = (c: string) => c >= '0' && c <= '9';
const isHex = (c: string) => /^[0-9a-fA-F]$/.test(c);

export class JsonGrammar {
  private readonly minTexts = new Map<JsonSchema, string | null>();
  private readonly plans = new Map<SchemaObject, ObjectPlan>();

  /** `schema`: the root (for $ref); undefined → any JSON object (json_object mode). */
  constructor(private readonly root: JsonSchema = { type: 'object' }) {}

  /** The state before any text: optional literal text, a value of the root schema, optional literal text. */
  initial(prefix = '', suffix = ''): JsonState {
    let stack: Stack = null;
    if (suffix) stack = { f: { k: 'lit', options: [suffix], pos: 0 }, next: stack };
    stack = { f: { k: 'value', s: this.root, ws: 0 }, next: stack };
    if (prefix) stack = { f: { k: 'lit', options: [prefix], pos: 0 }, next: stack };
    return [stack];
  }

  /** The state after `text`, or undefined when no valid document starts that way. */
  feed(state: JsonState, text: string): JsonState | undefined {
    let s: JsonState | undefined = state;
    for (const c of text) {
      s = this.feedChar(s, c);
      if (s === undefined) return undefined;
    }
    return s;
  }

  feedChar(state: JsonState, c: string): JsonState | undefined {
    const out: Stack[] = [];
    for (const stack of state) {
      this.feedStack(stack, c, out);
      if (out.length >= MAX_ALTERNATIVES) break;
    }
    return out.length > 0 ? out : undefined;
  }

  private feedStack(stack: Stack, c: string, out: Stack[]): void {
    if (stack === null) return; // complete: nothing may follow
    for (const step of this.steps(stack.f, c)) {
      let rest: Stack = stack.next;
      for (let i = step.push.length - 1; i >= 0; i--) rest = { f: step.push[i], next: rest };
      if (step.consumed) out.push(rest);
      else this.feedStack(rest, c, out);
    }
  }

  /** The document is complete (only end of text may follow). */
  isComplete(state: JsonState): boolean {
    return state.some((stack) => stack === null || (stack.next === null && this.accepting(stack.f)));
  }

  /** Inside a string with no escape pending: any text without `"`, `\` or control characters keeps the state as it is. */
  inPlainString(state: JsonState): boolean {
    return state.every((stack) => stack !== null && stack.f.k === 'str' && stack.f.esc === 0);
  }

  /** The fewest characters that complete the document from `state`. */
  closingLength(state: JsonState): number {
    return this.completion(state)?.length ?? IMPOSSIBLE;
  }

  /** The shortest text that completes the document from `state` ('' when complete; null: none exists). */
  completion(state: JsonState): string | null {
    let best: string | null = null;
    for (const stack of state) {
      const text = this.stackCompletion(stack);
      if (text !== null && (best === null || text.length < best.length)) best = text;
    }
    return best;
  }

  private stackCompletion(stack: Stack): string | null {
    let text = '';
    try {
      for (let s = stack; s !== null; s = s.next) text += this.frameCompletion(s.f);
    } catch (error) {
      if (error === UNREACHABLE) return null;
      throw error;
    }
    return text;
  }

  // ---------------------------------------------------------------------------------- schemas

  private resolve(schema: JsonSchema): JsonSchema {
    let s = schema;
    for (let depth = 0; typeof s === 'object' && typeof s.$ref === 'string' && depth < 32; depth++) {
      s = this.lookup(s.$ref as string);
    }
    return s;
  }

  private lookup(ref: string): JsonSchema {
    if (ref === '#') return this.root;
    if (!ref.startsWith('#/')) return true; // remote refs: anything
    let node: unknown = this.root;
    for (const part of ref.slice(2).split('/')) {
      const key = part.replace(/~1/g, '/').replace(/~0/g, '~');
      node = node && typeof node === 'object' ? (node as SchemaObject)[key] : undefined;
    }
    return node === undefined ? true : (node as JsonSchema);
  }

  /** JSON types a schema admits ('number' covers 'integer'), from `type` or from its keywords. */
  private types(s: SchemaObject): Set<string> {
    const t = s.type;
    if (typeof t === 'string') return new Set([t]);
    if (Array.isArray(t)) return new Set(t.filter((x): x is string => typeof x === 'string'));
    if (s.properties || s.additionalProperties !== undefined || s.required) return new Set(['object']);
    if (s.items || s.minItems !== undefined || s.maxItems !== undefined) return new Set(['array']);
    return new Set(['object', 'array', 'string', 'number', 'integer', 'boolean', 'null']);
  }

  private branches(s: SchemaObject): JsonSchema[] | null {
    const list = (s.anyOf ?? s.oneOf) as JsonSchema[] | undefined;
    return Array.isArray(list) && list.length > 0 ? list : null;
  }

  private literals(s: SchemaObject): string[] | null {
    if ('const' in s) return [JSON.stringify(s.const)];
    if (Array.isArray(s.enum) && s.enum.length > 0) return [...new Set(s.enum.map((v) => JSON.stringify(v)))];
    return null;
  }

  private plan(s: SchemaObject): ObjectPlan {
    let plan = this.plans.get(s);
    if (plan) return plan;
    const properties = s.properties && typeof s.properties === 'object' ? (s.properties as Record<string, JsonSchema>) : null;
    const required = new Set(Array.isArray(s.required) ? (s.required as string[]) : []);
    const additional = s.additionalProperties;
    if (properties && Object.keys(properties).length > 0) {
      const props = Object.entries(properties).map(([key, schema]) => ({ key, inner: JSON.stringify(key).slice(1, -1), schema, required: required.has(key) }));
      // Required keys that are not declared cannot be written with a plan: allow them too.
      for (const key of required) if (!(key in properties)) props.push({ key, inner: JSON.stringify(key).slice(1, -1), schema: additional && typeof additional === 'object' ? (additional as JsonSchema) : true, required: true });
      plan = { props, free: false };
    } else {
      plan = { props: null, free: additional === undefined || additional === true ? true : (additional as JsonSchema) };
    }
    this.plans.set(s, plan);
    return plan;
  }

  /** The fewest characters of a value of `schema`. */
  minLength(schema: JsonSchema): number {
    return this.minText(schema)?.length ?? IMPOSSIBLE;
  }

  /** The shortest value of `schema` as JSON text (null: none, e.g. a cycle through required members). */
  minText(schema: JsonSchema): string | null {
    if (this.minTexts.has(schema)) return this.minTexts.get(schema)!;
    this.minTexts.set(schema, null); // while computing: a cycle back here has no finite value
    const value = this.computeMinText(schema);
    this.minTexts.set(schema, value);
    return value;
  }

  private computeMinText(schema: JsonSchema): string | null {
    const s = this.resolve(schema);
    if (s === false) return null;
    if (s === true) return '0';
    const shortest = (texts: (string | null)[]) => texts.reduce<string | null>((best, t) => (t !== null && (best === null || t.length < best.length) ? t : best), null);
    const lits = this.literals(s);
    if (lits) return shortest(lits);
    const branches = this.branches(s);
    if (branches) return shortest(branches.map((b) => this.minText(b)));
    const candidates: (string | null)[] = [];
    for (const t of this.types(s)) {
      if (t === 'string') candidates.push('""');
      else if (t === 'number' || t === 'integer') candidates.push('0');
      else if (t === 'boolean') candidates.push('true');
      else if (t === 'null') candidates.push('null');
      else if (t === 'array') {
        const min = typeof s.minItems === 'number' ? s.minItems : 0;
        const item = min > 0 ? this.minText((s.items as JsonSchema) ?? true) : '';
        candidates.push(item === null ? null : '[' + Array(min).fill(item).join(',') + ']');
      } else if (t === 'object') {
        const members = this.requiredText(this.plan(s), 0, false);
        candidates.push(members === null ? null : '{' + members + '}');
      }
    }
    return shortest(candidates);
  }

  /** The required members from index `from` on, minimal (`"key":value`, comma separated). */
  private requiredText(plan: ObjectPlan, from: number, needComma: boolean): string | null {
    if (!plan.props) return '';
    let text = '';
    for (let j = from; j < plan.props.length; j++) {
      const p = plan.props[j];
      if (!p.required) continue;
      const value = this.minText(p.schema);
      if (value === null) return null;
      text += (text || needComma ? ',' : '') + '"' + p.inner + '":' + value;
    }
    return text;
  }

  /** Indices of the properties that may come next: from `next` up to and including the first required one. */
  private candidates(plan: ObjectPlan, next: number): number[] {
    const out: number[] = [];
    for (let j = next; j < plan.props!.length; j++) {
      out.push(j);
      if (plan.props![j].required) break;
    }
    return out;
  }

  private canClose(plan: ObjectPlan, next: number): boolean {
    return !plan.props || plan.props.slice(next).every((p) => !p.required);
  }

  // ---------------------------------------------------------------------------------- frames

  private accepting(f: Frame): boolean {
    if (f.k === 'num') return f.ph === 'zero' || f.ph === 'int' || f.ph === 'frac' || f.ph === 'exp';
    if (f.k === 'lit') return f.options.some((o) => o.length === f.pos);
    return false;
  }

  private frameCompletion(f: Frame): string {
    const or = (text: string | null): string => {
      if (text === null) throw UNREACHABLE;
      return text;
    };
    switch (f.k) {
      case 'value':
        return or(this.minText(f.s));
      case 'lit':
        return f.options.map((o) => o.slice(f.pos)).reduce((a, b) => (b.length < a.length ? b : a));
      case 'str':
        return f.esc === 0 ? '"' : f.esc < 0 ? 'n"' : '0'.repeat(f.esc) + '"';
      case 'num':
        return this.accepting(f) ? '' : '0';
      case 'arr': {
        const left = Math.max(0, f.min - f.count);
        const item = left > 0 ? or(this.minText(f.items)) : '';
        if (f.ph === 'first') return Array(left).fill(item).join(',') + ']';
        return (',' + item).repeat(left) + ']';
      }
      case 'obj': {
        const { plan } = f;
        if (!plan.props) {
          const value = or(this.minText(plan.free));
          if (f.ph === 'first' || f.ph === 'after') return '}';
          if (f.ph === 'next') return '"":' + value + '}';
          return ':' + value + '}'; // colon (a free key's string frame is above this one)
        }
        if (f.ph === 'first') return or(this.requiredText(plan, f.next, false)) + '}';
        if (f.ph === 'after') return or(this.requiredText(plan, f.next, true)) + '}';
        const rest = (j: number) => ':' + or(this.minText(plan.props![j].schema)) + or(this.requiredText(plan, j + 1, true)) + '}';
        if (f.ph === 'colon') return rest(f.cur);
        const options = f.ph === 'next'
          ? this.candidates(plan, f.next).map((j) => '"' + plan.props![j].inner + '"' + rest(j))
          : this.candidates(plan, f.next).filter((j) => plan.props![j].inner.startsWith(f.key)).map((j) => plan.props![j].inner.slice(f.key.length) + '"' + rest(j));
        return or(options.length ? options.reduce((a, b) => (b.length < a.length ? b : a)) : null);
      }
    }
  }

  private steps(f: Frame, c: string): Step[] {
    if (f.k === 'value') return this.stepValue(f, c);
    const step = this.step(f, c);
    return step ? [step] : [];
  }

  private step(f: Exclude<Frame, { k: 'value' }>, c: string): Step | null {
    switch (f.k) {
      case 'lit': {
        const options = f.options.filter((o) => o.length > f.pos && o[f.pos] === c);
        if (options.length === 0) return this.accepting(f) ? { push: [], consumed: false } : null;
        const pos = f.pos + 1;
        if (options.every((o) => o.length === pos)) return { push: [], consumed: true };
        return { push: [{ k: 'lit', options, pos }], consumed: true };
      }
      case 'str': {
        if (f.esc === 0) {
          if (c === '"') return { push: [], consumed: true };
          if (c === '\\') return { push: [{ k: 'str', esc: -1 }], consumed: true };
          if (c.charCodeAt(0) < 0x20) return null;
          return { push: [f], consumed: true };
        }
        if (f.esc < 0) {
          if (c === 'u') return { push: [{ k: 'str', esc: 4 }], consumed: true };
          return '"\\/bfnrt'.includes(c) ? { push: [{ k: 'str', esc: 0 }], consumed: true } : null;
        }
        return isHex(c) ? { push: [{ k: 'str', esc: f.esc - 1 }], consumed: true } : null;
      }
      case 'num':
        return this.stepNumber(f, c);
      case 'arr':
        return this.stepArray(f, c);
      case 'obj':
        return this.stepObject(f, c);
    }
  }

  private stepValue(f: Extract<Frame, { k: 'value' }>, c: string): Step[] {
    if (WS.has(c)) return f.ws < MAX_WHITESPACE ? [{ push: [{ ...f, ws: f.ws + 1 }], consumed: true }] : [];
    return this.startValue(f.s, c).map((push) => ({ push, consumed: false }));
  }

  /** The frames for a value of `schema` whose first character is `c` (not yet consumed): one list per branch that fits. */
  private startValue(schema: JsonSchema, c: string, depth = 0): Frame[][] {
    const s = this.resolve(schema);
    if (s === false) return [];
    const obj: SchemaObject = s === true ? {} : s;
    const lits = this.literals(obj);
    if (lits) return lits.some((l) => l[0] === c) ? [[{ k: 'lit', options: lits, pos: 0 }]] : [];
    const branches = this.branches(obj);
    if (branches) return depth > 8 ? [] : branches.flatMap((b) => this.startValue(b, c, depth + 1));
    const start = this.startTyped(obj, c);
    return start ? [start] : [];
  }

  private startTyped(obj: SchemaObject, c: string): Frame[] | null {
    const types = this.types(obj);
    if (c === '{' && types.has('object')) return [{ k: 'lit', options: ['{'], pos: 0 }, { k: 'obj', plan: this.plan(obj), ph: 'first', next: 0, cur: -1, key: '', ws: 0 }];
    if (c === '[' && types.has('array')) {
      const min = typeof obj.minItems === 'number' ? obj.minItems : 0;
      const max = typeof obj.maxItems === 'number' ? obj.maxItems : Infinity;
      return [{ k: 'lit', options: ['['], pos: 0 }, { k: 'arr', items: (obj.items as JsonSchema) ?? true, ph: 'first', count: 0, min, max, ws: 0 }];
    }
    if (c === '"' && types.has('string')) return [{ k: 'lit', options: ['"'], pos: 0 }, { k: 'str', esc: 0 }];
    if ((c === '-' || isDigit(c)) && (types.has('number') || types.has('integer'))) {
      return [{ k: 'num', ph: 'start', int: !types.has('number'), digits: 0 }];
    }
    if ((c === 't' || c === 'f') && types.has('boolean')) return [{ k: 'lit', options: ['true', 'false'], pos: 0 }];
    if (c === 'n' && types.has('null')) return [{ k: 'lit', options: ['null'], pos: 0 }];
    return null;
  }

  private stepNumber(f: Extract<Frame, { k: 'num' }>, c: string): Step | null {
    const to = (ph: NumPhase, digits = 0): Step => ({ push: [{ ...f, ph, digits }], consumed: true });
    const end: Step | null = this.accepting(f) ? { push: [], consumed: false } : null;
    const digit = isDigit(c);
    switch (f.ph) {
      case 'start':
        if (c === '-') return to('minus');
        if (c === '0') return to('zero', 1);
        return digit ? to('int', 1) : null;
      case 'minus':
        if (c === '0') return to('zero', 1);
        return digit ? to('int', 1) : null;
      case 'zero':
      case 'int':
        if (digit && f.ph === 'int') return f.digits < MAX_DIGITS ? to('int', f.digits + 1) : end;
        if (c === '.' && !f.int) return to('dot');
        if ((c === 'e' || c === 'E') && !f.int) return to('e');
        return end;
      case 'dot':
        return digit ? to('frac', 1) : null;
      case 'frac':
        if (digit) return f.digits < MAX_DIGITS ? to('frac', f.digits + 1) : end;
        if (c === 'e' || c === 'E') return to('e');
        return end;
      case 'e':
        if (c === '+' || c === '-') return to('esign');
        return digit ? to('exp', 1) : null;
      case 'esign':
        return digit ? to('exp', 1) : null;
      case 'exp':
        return digit && f.digits < 3 ? to('exp', f.digits + 1) : end;
    }
  }

  private stepArray(f: Extract<Frame, { k: 'arr' }>, c: string): Step | null {
    if (WS.has(c)) return f.ws < MAX_WHITESPACE ? { push: [{ ...f, ws: f.ws + 1 }], consumed: true } : null;
    const item = (): Frame => ({ k: 'value', s: f.items, ws: 0 });
    if (f.ph === 'first') {
      if (c === ']') return f.min === 0 ? { push: [], consumed: true } : null;
      if (f.max < 1) return null;
      return { push: [item(), { ...f, ph: 'after', count: 1, ws: 0 }], consumed: false };
    }
    if (c === ']') return f.count >= f.min ? { push: [], consumed: true } : null;
    if (c === ',' && f.count < f.max) return { push: [item(), { ...f, count: f.count + 1, ws: 0 }], consumed: true };
    return null;
  }

  private stepObject(f: Extract<Frame, { k: 'obj' }>, c: string): Step | null {
    const { plan } = f;
    const same = (changes: Partial<typeof f>): Step => ({ push: [{ ...f, ...changes }], consumed: true });
    if (f.ph !== 'key' && WS.has(c)) return f.ws < MAX_WHITESPACE ? same({ ws: f.ws + 1 }) : null;
    switch (f.ph) {
      case 'first':
      case 'next':
        if (c === '}' && f.ph === 'first') return this.canClose(plan, f.next) ? { push: [], consumed: true } : null;
        if (c !== '"') return null;
        if (!plan.props) return { push: [{ k: 'str', esc: 0 }, { ...f, ph: 'colon', ws: 0 }], consumed: true };
        return this.candidates(plan, f.next).length ? same({ ph: 'key', key: '', ws: 0 }) : null;
      case 'key': {
        const fits = this.candidates(plan, f.next).filter((j) => plan.props![j].inner.startsWith(f.key));
        if (c === '"') {
          const j = fits.find((i) => plan.props![i].inner === f.key);
          return j === undefined ? null : same({ ph: 'colon', cur: j, key: '' });
        }
        const key = f.key + c;
        return fits.some((j) => plan.props![j].inner.startsWith(key)) ? same({ key }) : null;
      }
      case 'colon': {
        if (c !== ':') return null;
        const schema = plan.props ? plan.props[f.cur].schema : plan.free;
        const next = plan.props ? f.cur + 1 : 0;
        return { push: [{ k: 'value', s: schema, ws: 0 }, { ...f, ph: 'after', next, cur: -1, ws: 0 }], consumed: true };
      }
      case 'after':
        if (c === '}') return this.canClose(plan, f.next) ? { push: [], consumed: true } : null;
        if (c === ',') return plan.props && f.next >= plan.props.length ? null : same({ ph: 'next', ws: 0 });
        return null;
    }
  }
}
