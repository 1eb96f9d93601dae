import { createRequire } from 'node:module';
import { Language, type Node, Parser } from 'web-tree-sitter';

let parser: Promise<Parser> | undefined;

/**
 * The PowerShell parser: tree-sitter-powershell's grammar (the `.wasm` the package ships) run by
 * web-tree-sitter, so nothing is compiled or downloaded at install time.
 */
export function powershellParser(): Promise<Parser> {
  parser ??= (async () => {
    await Parser.init();
    const wasm = createRequire(import.meta.url).resolve('tree-sitter-powershell/tree-sitter-powershell.wasm');
    const language = await Language.load(wasm);
    const p = new Parser();
    p.setLanguage(language);
    return p;
  })();
  return parser;
}

/** Where a script first fails to parse, or `undefined` when the whole script parses. */
export interface ParseFailure {
  /** 1-based line and column of the first error or missing node. */
  readonly line: number;
  readonly column: number;
  /** The text of the offending node (shortened). */
  readonly near: string;
}

/** The first error or missing node under `node`, depth first. */
export function firstParseError(node: Node): ParseFailure | undefined {
  if (node.type === 'ERROR' || node.isMissing) {
    return { line: node.startPosition.row + 1, column: node.startPosition.column + 1, near: node.text.slice(0, 40) };
  }
  for (const child of node.children) {
    if (child === null) continue;
    if (!child.hasError && !child.isMissing) continue;
    const found = firstParseError(child);
    if (found) return found;
  }
  return undefined;
}
