import { describe, expect, it } from 'vitest';
import type { Hypervisor, Snapshot } from '../src/contracts/hypervisor.js';
import { dropSnapshot } from '../src/engine/stages/snapshot-stage.js';
import type { RunContext } from '../src/engine/stages/stage.js';
import { REPLIKIT_ERROR_BRAND } from '../src/errors.js';

/**
 * An error as another installed copy of @replikit/core makes it: the same brand and code, another
 * class. The CLI's bundle holds its own copy of core, and a third-party driver package imports the
 * copy in node_modules, so the engine meets such errors.
 */
function foreignError(code: string, message: string): Error {
  return Object.assign(new Error(message), { [REPLIKIT_ERROR_BRAND]: true, code, details: {} });
}

describe('errors from another copy of @replikit/core', () => {
  it('a snapshot already gone (E_NOT_FOUND of another copy) is fine for the cleanup', async () => {
    const warnings: string[] = [];
    const ctx = { warn: (_code: string, message: string) => warnings.push(message) } as unknown as RunContext;
    const source = {
      deleteSnapshot: async () => {
        throw foreignError('E_NOT_FOUND', 'snapshot s1 not found');
      },
    } as unknown as Hypervisor;
    const snapshot = { id: 's1' } as Snapshot;
    await expect(dropSnapshot(ctx, source, snapshot, false)).resolves.toBeUndefined();
    await dropSnapshot(ctx, source, snapshot, true);
    expect(warnings).toEqual([]);
    // Any other code still fails (or warns).
    source.deleteSnapshot = async () => {
      throw foreignError('E_DRIVER', 'the host refused');
    };
    await expect(dropSnapshot(ctx, source, snapshot, false)).rejects.toThrow('the host refused');
  });
});
