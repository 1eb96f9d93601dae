import type { Node } from 'web-tree-sitter';
import { PsError } from '../ps-error.js';
import { DOCUMENTED_TYPES, type DocumentedType, type PropertyKind } from './documented-types.js';
import { jsonValue, roundTripText, textValue } from './json-values.js';
import { typed, typeOf } from './ps-object.js';

/** One entry of `-Property`: a property name, or a calculated property `@{ Name = …; Expression = { … } }`. */
type Selector = { readonly name: string; readonly expression?: Node };

/**
 * Carries out `Select-Object -Property …` (the only parameter the simulator performs) on the
 * objects a cmdlet wrote. Each entry must name a property of the input's documented type, or be a
 * calculated property whose expression is one of the forms the driver writes:
 * `$_.P`, `$_.P.Q`, `$_.P.ToString()`, `$_.P.ToString('o')`, `@($_.P | Select-Object -Property …)`.
 * Anything else is refused as a PowerShell error rather than guessed at.
 */
export function selectObject(command: Node, input: readonly unknown[]): unknown[] {
  const selectors = propertySelectors(command);
  return input.map((item) => {
    const type = documentedTypeOf(item);
    const out: Record<string, unknown> = {};
    for (const s of selectors) {
      out[s.name] = s.expression ? evaluate(s.expression, item, type) : plainProperty(item, type, s.name);
    }
    return out;
  });
}

function propertySelectors(command: Node): Selector[] {
  const elements = (command.childForFieldName('command_elements')?.namedChildren ?? []).filter(
    (e): e is Node => e !== null && e.type !== 'command_argument_sep',
  );
  const selectors: Selector[] = [];
  for (let i = 0; i < elements.length; i++) {
    const element = elements[i] as Node;
    if (element.type !== 'command_parameter') continue;
    const parameter = element.text.replace(/^-/, '').replace(/:$/, '');
    if (!/^property$/i.test(parameter)) {
      throw unsupported(`Select-Object -${parameter} is not carried out by the simulator (only -Property is).`);
    }
    const argument = elements[i + 1];
    if (!argument) throw unsupported('Select-Object -Property without a value.');
    for (const item of argument.type === 'array_literal_expression' ? argument.namedChildren : [argument]) {
      if (item) selectors.push(selector(item));
    }
    i++;
  }
  if (selectors.length === 0) throw unsupported('Select-Object without -Property is not carried out by the simulator.');
  return selectors;
}

function selector(item: Node): Selector {
  const hash = descendant(item, 'hash_literal_expression');
  if (!hash) return { name: literalText(item) };
  let name: string | undefined;
  let expression: Node | undefined;
  for (const entry of descendants(hash, 'hash_entry')) {
    const key = entry.namedChildren.find((c) => c?.type === 'key_expression')?.text ?? '';
    const value = entry.namedChildren.find((c) => c?.type !== 'key_expression') ?? undefined;
    if (!value) continue;
    if (/^(n|na|nam|name|l|la|lab|labe|label)$/i.test(key)) name = literalText(value);
    else if (/^e(x(p(r(e(s(s(i(o(n)?)?)?)?)?)?)?)?)?$/i.test(key))
      expression = descendant(value, 'script_block') ?? undefined;
    else throw unsupported(`A calculated property key '${key}' is not Name or Expression.`);
  }
  if (name === undefined || expression === undefined) {
    throw unsupported('A calculated property needs a literal Name and a script block Expression.');
  }
  return { name, expression };
}

/** The text of a quoted or bare literal: `'Path'`, `"Path"`, `Path`. */
function literalText(node: Node): string {
  const text = node.text.trim();
  const quoted = /^'((?:[^']|'')*)'$/.exec(text) ?? /^"([^"`$]*)"$/.exec(text);
  if (quoted?.[1] !== undefined) return quoted[1].replaceAll("''", "'");
  if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(text)) return text;
  throw unsupported(`A property name written as ${text} is not a literal the simulator reads.`);
}

function evaluate(block: Node, item: unknown, type: DocumentedType): unknown {
  const body = block.namedChildren.find((c) => c?.type === 'script_block_body');
  const text = (body?.text ?? '').replace(/\s+/g, ' ').trim();
  const member = /^\$_\.([A-Za-z_][A-Za-z0-9_]*)(.*)$/.exec(text);
  if (member?.[1] !== undefined) {
    const [, property, rest] = member;
    const kind = kindOf(type, property);
    const value = modelledValue(item, type, property);
    if (rest === '') return jsonValue(kind, value);
    if (/^\.ToString\(\)$/i.test(rest ?? '')) return textValue(kind, value, property);
    if (/^\.ToString\((['"])o\1\)$/i.test(rest ?? '') && kind === 'datetime') return roundTripText(value, property);
    const inner = /^\.([A-Za-z_][A-Za-z0-9_]*)$/.exec(rest ?? '')?.[1];
    if (inner !== undefined) {
      // A property of an object-valued property (a method's reference out parameter): $null on null.
      if (value === null || value === undefined) return null;
      return plainProperty(value, documentedTypeOf(value), inner);
    }
  }
  const nested = /^@\( ?\$_\.([A-Za-z_][A-Za-z0-9_]*) ?\| ?Select-Object .*\)$/i.exec(text);
  const inner = body ? descendants(body, 'command')[0] : undefined;
  if (nested?.[1] !== undefined && inner && descendants(body as Node, 'command').length === 1) {
    const property = nested[1];
    const kind = kindOf(type, property);
    if (!kind.startsWith('list:')) throw unsupported(`$_.${property} is not a list of objects.`);
    const value = modelledValue(item, type, property);
    const list = Array.isArray(value) ? value : value === null || value === undefined ? [] : [value];
    return selectObject(
      inner,
      list.map((v) => typed(kind.slice(5), { ...(v as object) })),
    );
  }
  throw unsupported(`The simulator does not evaluate the calculated property expression { ${text} }.`);
}

function plainProperty(item: unknown, type: DocumentedType, written: string): unknown {
  const property = documentedName(type, written);
  return jsonValue(kindOf(type, property), modelledValue(item, type, property));
}

function documentedTypeOf(item: unknown): DocumentedType {
  const type = DOCUMENTED_TYPES.get(typeOf(item) ?? '');
  if (!type) throw unsupported('Select-Object on an object the simulator has no documented type for.');
  return type;
}

/** The documented spelling of a property (PowerShell matches names case-insensitively), or the refusal. */
function documentedName(type: DocumentedType, written: string): string {
  const found = Object.keys(type.properties).find((p) => p.toLowerCase() === written.toLowerCase());
  if (found) return found;
  throw new PsError(
    'InvalidArgument',
    `The property '${written}' cannot be found on type ${type.name}. (The simulator refuses it; Select-Object on a real host would write it as null.)`,
    'SimulatorPropertyNotFound,Microsoft.PowerShell.Commands.SelectObjectCommand',
  );
}

function kindOf(type: DocumentedType, written: string): PropertyKind {
  return type.properties[documentedName(type, written)] ?? 'value';
}

function modelledValue(item: unknown, type: DocumentedType, written: string): unknown {
  const property = documentedName(type, written);
  const record = item as Record<string, unknown>;
  if (!Object.hasOwn(record, property)) {
    throw new PsError(
      'NotImplemented',
      `The simulator does not model property '${property}' of ${type.name} (it is documented; a real host has a value).`,
      'SimulatorUnmodelledProperty',
    );
  }
  return record[property];
}

function unsupported(message: string): PsError {
  return new PsError('NotImplemented', message, 'SimulatorUnsupportedScript');
}

function descendant(node: Node, type: string): Node | undefined {
  return descendants(node, type)[0];
}

function descendants(node: Node, type: string): Node[] {
  const found: Node[] = [];
  const visit = (n: Node): void => {
    if (n.type === type) {
      found.push(n);
      return;
    }
    for (const c of n.namedChildren) if (c) visit(c);
  };
  visit(node);
  return found;
}
