// Issue 15: no two modules export the same name, so a name means one thing wherever it is read
// (the server's src/ and the dashboard's web/ included: one codebase, read by the same people).
// Re-exports (an index that is a layer's door) are not declarations and are not counted.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import ts from 'typescript';

const ROOT = path.resolve(import.meta.dirname, '../..');

function sourceFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? sourceFiles(p) : /\.tsx?$/.test(e.name) ? [p] : [];
  });
}

/** Names a module declares with `export` (classes, interfaces, types, functions, enums, variables). */
function declaredExports(file: string): string[] {
  const source = ts.createSourceFile(file, fs.readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, false);
  const names: string[] = [];
  for (const s of source.statements) {
    if (!ts.canHaveModifiers(s) || !ts.getModifiers(s)?.some((m) => m.kind === ts.SyntaxKind.ExportKeyword)) continue;
    if (ts.isVariableStatement(s)) {
      for (const d of s.declarationList.declarations) if (ts.isIdentifier(d.name)) names.push(d.name.text);
    } else if ((ts.isClassDeclaration(s) || ts.isFunctionDeclaration(s) || ts.isInterfaceDeclaration(s) || ts.isTypeAliasDeclaration(s) || ts.isEnumDeclaration(s)) && s.name) {
      names.push(s.name.text);
    }
  }
  return names;
}

test('no two modules of src/ and web/ export a declaration of the same name', () => {
  const where = new Map<string, string[]>();
  for (const file of [...sourceFiles(path.join(ROOT, 'src')), ...sourceFiles(path.join(ROOT, 'web'))]) {
    for (const name of declaredExports(file)) where.set(name, [...(where.get(name) ?? []), path.relative(ROOT, file)]);
  }
  assert.ok(where.size > 300, `only ${where.size} exported names found: the scan is broken`);
  const shared = [...where].filter(([, files]) => files.length > 1).map(([name, files]) => `${name}: ${files.join(', ')}`);
  assert.deepEqual(shared, []);
});
