// The multi grader's `calculate_output`: a small arithmetic language parsed by recursive descent into
// an AST and evaluated by walking it. Never eval/Function.
//
//   expr    := term (('+' | '-') term)*
//   term    := unary (('*' | '/') unary)*
//   unary   := ('-' | '+') unary | power
//   power   := primary ('^' unary)?            right-associative: 2^3^2 = 2^9; -2^2 = -(2^2)
//   primary := number | name | name '(' expr (',' expr)* ')' | '(' expr ')'
//
// Numbers: 12, 0.5, .5, 1e-3. Names: the multi grader's keys (letters, digits, _; not starting with
// a digit). Functions: min, max (one or more arguments), abs, floor, ceil, exp, sqrt, log (natural
// log), one argument each. Positions in messages are 1-based character columns.
//
// Evaluation is strict: a division by zero, log of a number ≤ 0, sqrt of a negative number or any
// other non-finite intermediate result is a FormulaEvalError (the runner scores it 0 and reports it),
// never NaN or Infinity leaking into a reward.

export type FormulaNode =
  | { kind: 'number'; value: number; pos: number }
  | { kind: 'variable'; name: string; pos: number }
  | { kind: 'unary'; op: '-' | '+'; arg: FormulaNode; pos: number }
  | { kind: 'binary'; op: '+' | '-' | '*' | '/' | '^'; left: FormulaNode; right: FormulaNode; pos: number }
  | { kind: 'call'; fn: FunctionName; args: FormulaNode[]; pos: number };

export const FUNCTIONS = {
  min: { arity: 'variadic' },
  max: { arity: 'variadic' },
  abs: { arity: 1 },
  floor: { arity: 1 },
  ceil: { arity: 1 },
  exp: { arity: 1 },
  sqrt: { arity: 1 },
  log: { arity: 1 },
} as const;
export type FunctionName = keyof typeof FUNCTIONS;

export class FormulaSyntaxError extends Error {
  constructor(
    message: string,
    /** 1-based column. */
    readonly column: number,
  ) {
    super(`${message} at column ${column}`);
    this.name = 'FormulaSyntaxError';
  }
}

export class FormulaEvalError extends Error {
  constructor(message: string, readonly column: number) {
    super(`${message} at column ${column}`);
    this.name = 'FormulaEvalError';
  }
}

type Token =
  | { type: 'number'; value: number; pos: number; text: string }
  | { type: 'name'; value: string; pos: number; text: string }
  | { type: 'op'; value: string; pos: number; text: string }
  | { type: 'end'; pos: number; text: string };

const MAX_FORMULA_LENGTH = 10_000;
const MAX_DEPTH = 200;

function tokenize(src: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < src.length) {
    const c = src[i];
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    const number = /^(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?/.exec(src.slice(i));
    if (number) {
      tokens.push({ type: 'number', value: Number(number[0]), pos: i + 1, text: number[0] });
      i += number[0].length;
      continue;
    }
    const name = /^[A-Za-z_][A-Za-z0-9_]*/.exec(src.slice(i));
    if (name) {
      tokens.push({ type: 'name', value: name[0], pos: i + 1, text: name[0] });
      i += name[0].length;
      continue;
    }
    if ('+-*/^(),'.includes(c)) {
      tokens.push({ type: 'op', value: c, pos: i + 1, text: c });
      i++;
      continue;
    }
    throw new FormulaSyntaxError(`Unexpected character '${c}'`, i + 1);
  }
  tokens.push({ type: 'end', pos: src.length + 1, text: 'end of formula' });
  return tokens;
}

/** Parses a formula; throws FormulaSyntaxError naming the column. */
export function parseFormula(src: string): FormulaNode {
  if (typeof src !== 'string' || src.trim() === '') throw new FormulaSyntaxError('The formula is empty', 1);
  if (src.length > MAX_FORMULA_LENGTH) throw new FormulaSyntaxError(`The formula is longer than ${MAX_FORMULA_LENGTH} characters`, MAX_FORMULA_LENGTH + 1);
  const tokens = tokenize(src);
  let at = 0;
  let depth = 0;
  const peek = () => tokens[at];
  const isOp = (value: string) => {
    const t = tokens[at];
    return t.type === 'op' && t.value === value;
  };
  const describe = (t: Token) => (t.type === 'end' ? 'end of formula' : `'${t.text}'`);
  const expect = (value: string) => {
    const t = tokens[at];
    if (t.type !== 'op' || t.value !== value) throw new FormulaSyntaxError(`Expected '${value}' but found ${describe(t)}`, t.pos);
    at++;
  };
  const nested = <T>(fn: () => T): T => {
    if (++depth > MAX_DEPTH) throw new FormulaSyntaxError('The formula nests too deeply', peek().pos);
    try {
      return fn();
    } finally {
      depth--;
    }
  };

  const expr = (): FormulaNode =>
    nested(() => {
      let left = term();
      while (isOp('+') || isOp('-')) {
        const t = tokens[at++];
        left = { kind: 'binary', op: t.text as '+' | '-', left, right: term(), pos: t.pos };
      }
      return left;
    });
  const term = (): FormulaNode => {
    let left = unary();
    while (isOp('*') || isOp('/')) {
      const t = tokens[at++];
      left = { kind: 'binary', op: t.text as '*' | '/', left, right: unary(), pos: t.pos };
    }
    return left;
  };
  const unary = (): FormulaNode =>
    nested(() => {
      if (isOp('-') || isOp('+')) {
        const t = tokens[at++];
        return { kind: 'unary', op: t.text as '-' | '+', arg: unary(), pos: t.pos };
      }
      return power();
    });
  const power = (): FormulaNode => {
    const base = primary();
    if (isOp('^')) {
      const t = tokens[at++];
      return { kind: 'binary', op: '^', left: base, right: unary(), pos: t.pos };
    }
    return base;
  };
  const primary = (): FormulaNode => {
    const t = tokens[at];
    if (t.type === 'number') {
      at++;
      return { kind: 'number', value: t.value, pos: t.pos };
    }
    if (t.type === 'name') {
      at++;
      if (isOp('(')) {
        if (!Object.hasOwn(FUNCTIONS, t.value)) {
          throw new FormulaSyntaxError(`Unknown function '${t.value}' (expected one of ${Object.keys(FUNCTIONS).join(', ')})`, t.pos);
        }
        const fn = t.value as FunctionName;
        at++;
        const args: FormulaNode[] = [];
        if (isOp(')')) throw new FormulaSyntaxError(`${fn}() needs an argument`, peek().pos);
        args.push(expr());
        while (isOp(',')) {
          at++;
          args.push(expr());
        }
        expect(')');
        const arity = FUNCTIONS[fn].arity;
        if (arity !== 'variadic' && args.length !== arity) {
          throw new FormulaSyntaxError(`${fn}() takes ${arity} argument, got ${args.length}`, t.pos);
        }
        return { kind: 'call', fn, args, pos: t.pos };
      }
      return { kind: 'variable', name: t.value, pos: t.pos };
    }
    if (t.type === 'op' && t.value === '(') {
      at++;
      const inner = expr();
      expect(')');
      return inner;
    }
    throw new FormulaSyntaxError(`Expected a number, a grader name, a function or '(' but found ${describe(t)}`, t.pos);
  };

  const tree = expr();
  const rest = peek();
  if (rest.type !== 'end') throw new FormulaSyntaxError(`Unexpected ${describe(rest)}`, rest.pos);
  return tree;
}

/** Every variable the formula uses, with its first column. */
export function formulaVariables(node: FormulaNode, out = new Map<string, number>()): Map<string, number> {
  switch (node.kind) {
    case 'variable':
      if (!out.has(node.name)) out.set(node.name, node.pos);
      break;
    case 'unary':
      formulaVariables(node.arg, out);
      break;
    case 'binary':
      formulaVariables(node.left, out);
      formulaVariables(node.right, out);
      break;
    case 'call':
      for (const a of node.args) formulaVariables(a, out);
      break;
  }
  return out;
}

function finite(value: number, what: string, pos: number): number {
  if (!Number.isFinite(value)) throw new FormulaEvalError(`${what} is not a finite number`, pos);
  return value;
}

/** Evaluates a parsed formula; throws FormulaEvalError (unknown variable, division by zero, …). */
export function evaluateFormula(node: FormulaNode, variables: Record<string, number>): number {
  switch (node.kind) {
    case 'number':
      return node.value;
    case 'variable': {
      if (!Object.hasOwn(variables, node.name)) throw new FormulaEvalError(`Unknown variable '${node.name}'`, node.pos);
      return finite(variables[node.name], `'${node.name}'`, node.pos);
    }
    case 'unary': {
      const v = evaluateFormula(node.arg, variables);
      return node.op === '-' ? -v : v;
    }
    case 'binary': {
      const a = evaluateFormula(node.left, variables);
      const b = evaluateFormula(node.right, variables);
      switch (node.op) {
        case '+':
          return finite(a + b, 'The sum', node.pos);
        case '-':
          return finite(a - b, 'The difference', node.pos);
        case '*':
          return finite(a * b, 'The product', node.pos);
        case '/':
          if (b === 0) throw new FormulaEvalError('Division by zero', node.pos);
          return finite(a / b, 'The quotient', node.pos);
        case '^':
          return finite(a ** b, 'The power', node.pos);
      }
    }
    // falls through (unreachable)
    case 'call': {
      const n = node as Extract<FormulaNode, { kind: 'call' }>;
      const args = n.args.map((a) => evaluateFormula(a, variables));
      const x = args[0];
      switch (n.fn) {
        case 'min':
          return Math.min(...args);
        case 'max':
          return Math.max(...args);
        case 'abs':
          return Math.abs(x);
        case 'floor':
          return Math.floor(x);
        case 'ceil':
          return Math.ceil(x);
        case 'exp':
          return finite(Math.exp(x), 'exp()', n.pos);
        case 'sqrt':
          if (x < 0) throw new FormulaEvalError('sqrt() of a negative number', n.pos);
          return Math.sqrt(x);
        case 'log':
          if (x <= 0) throw new FormulaEvalError('log() of a number that is not positive', n.pos);
          return Math.log(x);
      }
    }
  }
  throw new Error('unreachable');
}
