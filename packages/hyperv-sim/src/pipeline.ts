import type { Node } from 'web-tree-sitter';
import { jsonObject } from './objects/json-values.js';
import { selectObject } from './objects/select-object.js';
import { PsError } from './ps-error.js';

/**
 * What the rest of a cmdlet's pipeline makes of the objects the cmdlet wrote: each following
 * `Select-Object` projects them; a pipeline that ends at the cmdlet leaves them whole, converted as
 * `ConvertTo-Json` writes them (enums as numbers). Any other downstream command is refused: the
 * simulator does not carry it out.
 */
export function runDownstream(command: Node, written: unknown): unknown[] {
  let objects: unknown[] =
    written === null || written === undefined ? [] : Array.isArray(written) ? written : [written];
  let projected = false;
  for (let next = command.nextNamedSibling; next; next = next.nextNamedSibling) {
    if (next.type !== 'command') continue;
    const name = next.childForFieldName('command_name')?.text ?? '';
    if (!/^select-object$/i.test(name)) {
      throw new PsError(
        'NotImplemented',
        `The simulator does not carry out '${name}' in a pipeline after a Hyper-V cmdlet.`,
        'SimulatorUnsupportedScript',
      );
    }
    objects = selectObject(next, objects);
    projected = true;
  }
  return projected ? objects : objects.map(jsonObject);
}
