import type { Node } from 'web-tree-sitter';
import { PsError } from '../ps-error.js';
import { argumentValue } from '../script-commands.js';
import { DOCUMENTED_TYPES } from './documented-types.js';
import { typeOf } from './ps-object.js';

/**
 * Carries out `Where-Object { $_.<Property> -eq <value> }` (the one filter form the driver writes)
 * on the objects a cmdlet wrote: `<value>` is `$p.<field>`, a quoted literal or a number. As
 * PowerShell's `-eq`, strings compare without case. The property must be one of the input's
 * documented type. Any other filter is refused as a PowerShell error rather than guessed at.
 */
export function whereObject(command: Node, input: readonly unknown[], params: Record<string, unknown>): unknown[] {
  const elements = (command.childForFieldName('command_elements')?.namedChildren ?? []).filter(
    (e): e is Node => e !== null && e.type !== 'command_argument_sep',
  );
  const block = elements.length === 1 ? descendant(elements[0] as Node, 'script_block_body') : undefined;
  const text = (block?.text ?? '').replace(/\s+/g, ' ').trim();
  const m = /^\$_\.([A-Za-z_][A-Za-z0-9_]*) -eq (\$p\.[A-Za-z_][A-Za-z0-9_]*|'(?:[^']|'')*'|-?\d+)$/i.exec(text);
  if (!m?.[1] || !m[2]) {
    throw new PsError(
      'NotImplemented',
      `The simulator carries out only Where-Object { $_.<Property> -eq <value> }, not ${elements.map((e) => e.text).join(' ')}.`,
      'SimulatorUnsupportedScript',
    );
  }
  const property = m[1];
  const wanted = argumentValue(m[2], params);
  return input.filter((item) => equals(propertyOf(item, property), wanted));
}

function propertyOf(item: unknown, written: string): unknown {
  const type = DOCUMENTED_TYPES.get(typeOf(item) ?? '');
  const name = type && Object.keys(type.properties).find((p) => p.toLowerCase() === written.toLowerCase());
  if (!type || !name) {
    throw new PsError(
      'InvalidArgument',
      `The property '${written}' cannot be found on type ${type?.name ?? 'this object'}. (The simulator refuses it; Where-Object on a real host would compare $null.)`,
      'SimulatorPropertyNotFound,Microsoft.PowerShell.Commands.WhereObjectCommand',
    );
  }
  return (item as Record<string, unknown>)[name];
}

/** PowerShell's `-eq` with a scalar on the left: strings without case, numbers by value. */
function equals(left: unknown, right: unknown): boolean {
  if (left === null || left === undefined) return right === null || right === undefined;
  if (typeof left === 'string') return typeof right === 'string' && left.toLowerCase() === right.toLowerCase();
  if (typeof left === 'number') return Number(right) === left;
  return left === right;
}

function descendant(node: Node, type: string): Node | undefined {
  if (node.type === type) return node;
  for (const c of node.namedChildren) {
    const found = c ? descendant(c, type) : undefined;
    if (found) return found;
  }
  return undefined;
}
