import { argumentValue, type ScriptVariables } from '../script-commands.js';

/**
 * The entries of an `-Arguments @{ Key = value; … }` hashtable literal, each value read as a
 * command argument (`$p.<field>`, a variable, a literal), a leading type cast (`[uint64]`) dropped. The
 * simulator reads only this shape; other values come out `undefined`.
 */
export function hashtableArguments(
  text: string | undefined,
  params: Record<string, unknown>,
  variables?: ScriptVariables,
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const body = /^@\{([\s\S]*)\}$/.exec(text?.trim() ?? '')?.[1];
  if (body === undefined) return out;
  for (const entry of body.split(/[;\n]/)) {
    const m = /^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?:\[[A-Za-z0-9_.]+\])?\s*(.+?)\s*$/.exec(entry);
    if (m?.[1] && m[2]) out[m[1]] = argumentValue(m[2], params, variables);
  }
  return out;
}
