import { test } from 'node:test';
import assert from 'node:assert/strict';
import { evaluateFormula, FormulaEvalError, FormulaSyntaxError, formulaVariables, parseFormula } from '../../src/graders/formula.ts';

const calc = (src: string, vars: Record<string, number> = {}) => evaluateFormula(parseFormula(src), vars);

test('precedence and associativity', () => {
  assert.equal(calc('1 + 2 * 3'), 7);
  assert.equal(calc('(1 + 2) * 3'), 9);
  assert.equal(calc('10 - 4 - 3'), 3);
  assert.equal(calc('8 / 4 / 2'), 1);
  assert.equal(calc('2 ^ 3 ^ 2'), 512); // right-associative
  assert.equal(calc('-2 ^ 2'), -4); // ^ binds tighter than unary minus
  assert.equal(calc('2 ^ -1'), 0.5);
  assert.equal(calc('--3'), 3);
  assert.equal(calc('2 * -3 + +1'), -5);
  assert.equal(calc('.5 + 1e-1 + 2.'), 2.6);
});

test('variables and functions', () => {
  const v = { a: 0.25, b: 1, c: 0 };
  assert.equal(calc('0.5 * a + 0.5 * b', v), 0.625);
  assert.equal(calc('min(a, b, c)', v), 0);
  assert.equal(calc('max(a, b * 2)', v), 2);
  assert.equal(calc('max(a)', v), 0.25);
  assert.equal(calc('abs(-3) + floor(2.7) + ceil(2.1)'), 8);
  assert.equal(calc('exp(0) + sqrt(16) + log(1)'), 5);
  assert.ok(Math.abs(calc('log(exp(2))') - 2) < 1e-12);
  assert.deepEqual([...formulaVariables(parseFormula('a + max(b, a) * c'))], [['a', 1], ['b', 9], ['c', 17]]);
});

test('division by zero and domain errors are evaluation errors with a column, never NaN/Infinity', () => {
  assert.throws(() => calc('a / b', { a: 1, b: 0 }), (e: Error) => e instanceof FormulaEvalError && /Division by zero at column 3/.test(e.message));
  assert.throws(() => calc('0 / 0'), FormulaEvalError);
  assert.throws(() => calc('sqrt(-1)'), /sqrt\(\) of a negative number at column 1/);
  assert.throws(() => calc('log(0)'), /log\(\)/);
  assert.throws(() => calc('10 ^ 400'), /not a finite number/);
  assert.throws(() => calc('x + 1'), /Unknown variable 'x' at column 1/);
});

test('syntax errors name the column', () => {
  const bad: [string, RegExp][] = [
    ['', /empty/],
    ['1 +', /found end of formula at column 4/],
    ['(1 + 2', /Expected '\)' but found end of formula at column 7/],
    ['1 + * 2', /found '\*' at column 5/],
    ['a b', /Unexpected 'b' at column 3/],
    ['foo(1)', /Unknown function 'foo'.* at column 1/],
    ['abs(1, 2)', /abs\(\) takes 1 argument, got 2 at column 1/],
    ['max()', /max\(\) needs an argument at column 5/],
    ['1 % 2', /Unexpected character '%' at column 3/],
    ['__import__("os")', /Unexpected character '"'/],
    ['0.5 * a +  0.5 * b)', /Unexpected '\)' at column 19/],
  ];
  for (const [src, re] of bad) assert.throws(() => parseFormula(src), (e: Error) => e instanceof FormulaSyntaxError && re.test(e.message), src);
  assert.throws(() => parseFormula('('.repeat(500) + '1' + ')'.repeat(500)), /nests too deeply/);
});
