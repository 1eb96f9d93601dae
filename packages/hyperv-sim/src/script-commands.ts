import type { Node } from 'web-tree-sitter';
import { commandNotFound, parameterNotFound } from './ps-error.js';
import { cmdletSignature } from './signatures.js';

/** One cmdlet call found in a script, with its parameters as written. */
export interface ScriptCommand {
  /** The documented spelling of the cmdlet. */
  readonly name: string;
  /** Documented parameter name → the argument's source text (`undefined` for a switch). */
  readonly arguments: ReadonlyMap<string, string | undefined>;
  /** The command's node in the parse tree (its pipeline is its parent's children). */
  readonly node: Node;
}

/**
 * Every command in the parse tree, in source order, checked against the signature table: a name
 * or a parameter the table lacks throws the PowerShell error for it. Arguments written after a
 * parameter are kept as source text; positional arguments are not bound (scripts name every
 * parameter).
 */
export function scriptCommands(root: Node): ScriptCommand[] {
  const found: ScriptCommand[] = [];
  const visit = (node: Node): void => {
    // `& (<expression>) …` invokes a script block, not a named command: the block's text is
    // checked on its own when it is decoded.
    if (node.type === 'command' && node.childForFieldName('command_name')?.type === 'command_name') {
      found.push(checkedCommand(node));
    }
    for (const child of node.namedChildren) if (child) visit(child);
  };
  visit(root);
  return found;
}

function checkedCommand(node: Node): ScriptCommand {
  const nameNode = node.childForFieldName('command_name');
  const written = nameNode?.text ?? '';
  const signature = cmdletSignature(written);
  if (!signature) throw commandNotFound(written);
  const args = new Map<string, string | undefined>();
  const elements = node.childForFieldName('command_elements')?.namedChildren ?? [];
  let pending: string | undefined;
  for (const element of elements) {
    if (!element || element.type === 'command_argument_sep') continue;
    if (element.type === 'command_parameter') {
      const raw = element.text.replace(/^-/, '').replace(/:$/, '');
      const parameter = signature.parameters.get(raw.toLowerCase());
      if (!parameter) throw parameterNotFound(signature.name, raw);
      args.set(parameter, undefined);
      pending = parameter;
    } else if (pending !== undefined) {
      args.set(pending, element.text);
      pending = undefined;
    }
  }
  return { name: signature.name, arguments: args, node };
}

/** The variables a script assigned (`$name = <pipeline>`), by lower-case name. */
export type ScriptVariables = ReadonlyMap<string, unknown>;

/**
 * The value of an argument's source text: `$p.<field>` reads the call's decoded parameters;
 * `$<name>` a variable the script assigned earlier (`$null` when it did not); quoted literals,
 * integers and `$true`/`$false` are themselves. Anything else is `undefined`.
 */
export function argumentValue(
  text: string | undefined,
  params: Record<string, unknown>,
  variables: ScriptVariables = new Map(),
): unknown {
  if (text === undefined) return true;
  const field = /^\$p\.([A-Za-z_][A-Za-z0-9_]*)$/.exec(text);
  if (field?.[1] !== undefined) return params[field[1]];
  if (/^-?\d+$/.test(text)) return Number(text);
  if (/^\$true$/i.test(text)) return true;
  if (/^\$false$/i.test(text)) return false;
  if (/^\$null$/i.test(text)) return null;
  const variable = /^\$([A-Za-z_][A-Za-z0-9_]*)$/.exec(text);
  if (variable?.[1] !== undefined) return variables.get(variable[1].toLowerCase()) ?? null;
  const single = /^'((?:[^']|'')*)'$/.exec(text);
  if (single?.[1] !== undefined) return single[1].replaceAll("''", "'");
  if (/^[A-Za-z][A-Za-z0-9]*$/.test(text)) return text;
  return undefined;
}
