import { CMDLETS } from './cmdlets/all-cmdlets.js';
import type { CmdletContext } from './cmdlets/context.js';
import { withHostLock } from './host/host-lock.js';
import { loadState, saveState } from './host/host-state.js';
import { cmdletSignature } from './signatures.js';

/**
 * Performs one cmdlet on a simulated host in this process, as its administrator would at the
 * host's console: `args` are its named parameters (`true` for a switch). The cmdlet and each
 * parameter must be in the signature table, as for a script; no fake `pwsh` is involved, so a
 * test or a demo can set a host up quickly. Resolves with what the cmdlet writes.
 *
 * @throws the cmdlet's PowerShell error (a `PsError` with its category), or an `Error` for a
 * cmdlet or parameter the table does not have.
 */
export async function adminCmdlet(root: string, name: string, args: Record<string, unknown> = {}): Promise<unknown> {
  const signature = cmdletSignature(name);
  const handler = signature && CMDLETS[signature.name];
  if (!signature || !handler) throw new Error(`the simulated host has no cmdlet '${name}'`);
  const bound = new Map<string, unknown>();
  for (const [key, value] of Object.entries(args)) {
    const documented = signature.parameters.get(key.toLowerCase());
    if (!documented) throw new Error(`${signature.name} has no parameter '${key}'`);
    bound.set(documented.toLowerCase(), value);
  }
  return withHostLock(root, async () => {
    const state = await loadState(root);
    let dirty = false;
    const context: CmdletContext = {
      root,
      state,
      markDirty: () => {
        dirty = true;
      },
      arg: (parameter) => bound.get(parameter.toLowerCase()),
      has: (parameter) => bound.has(parameter.toLowerCase()),
    };
    try {
      return await handler(context);
    } finally {
      if (dirty) await saveState(root, state);
    }
  });
}
