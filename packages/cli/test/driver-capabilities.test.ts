import { BUILTIN_DRIVER_KINDS, defaultDriverRegistry } from '@replikit/core';
import { createMemoryDriver } from '@replikit/core/testing';
import { describe, expect, it } from 'vitest';
import { registerBuiltinDrivers } from '../src/drivers.js';

describe("the CLI's drivers and core's kind table", () => {
  it('every driver the CLI installs declares what the table says of its kind', () => {
    registerBuiltinDrivers();
    const installed = defaultDriverRegistry.kinds();
    expect(installed).toContain('file');
    for (const kind of installed) {
      const row = BUILTIN_DRIVER_KINDS.get(kind);
      if (row)
        expect({ kind, capabilities: defaultDriverRegistry.get(kind)?.capabilities }).toEqual({
          kind,
          capabilities: row,
        });
    }
  });

  it("the memory reference driver's kind has no row, so offline judging never depends on it", () => {
    expect(BUILTIN_DRIVER_KINDS.has(createMemoryDriver().kind)).toBe(false);
  });
});
