import type { Node } from 'web-tree-sitter';
import { jsonObject } from './objects/json-values.js';
import { selectObject } from './objects/select-object.js';
import { whereObject } from './objects/where-object.js';
import { PsError } from './ps-error.js';

/**
 * What the rest of a cmdlet's pipeline makes of the objects the cmdlet wrote: each following
 * `Where-Object` filters them and each `Select-Object` projects them; a pipeline that ends without a
 * projection leaves them whole, converted as `ConvertTo-Json` writes them (enums as numbers), unless
 * `keep` is set (the pipeline's objects go into a variable, not to the output). Any other downstream
 * command is refused: the simulator does not carry it out.
 */
export function runDownstream(
  command: Node,
  written: unknown,
  params: Record<string, unknown> = {},
  keep = false,
): unknown[] {
  let objects: unknown[] =
    written === null || written === undefined ? [] : Array.isArray(written) ? written : [written];
  let projected = false;
  for (let next = command.nextNamedSibling; next; next = next.nextNamedSibling) {
    if (next.type !== 'command') continue;
    const name = next.childForFieldName('command_name')?.text ?? '';
    if (/^where-object$/i.test(name)) {
      objects = whereObject(next, objects, params);
    } else if (/^select-object$/i.test(name)) {
      objects = selectObject(next, objects);
      projected = true;
    } else {
      throw new PsError(
        'NotImplemented',
        `The simulator does not carry out '${name}' in a pipeline after a Hyper-V cmdlet.`,
        'SimulatorUnsupportedScript',
      );
    }
  }
  return projected || keep ? objects : objects.map(jsonObject);
}
