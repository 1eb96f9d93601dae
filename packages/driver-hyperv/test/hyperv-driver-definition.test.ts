import { BUILTIN_DRIVER_KINDS, DriverRegistry, isReplikitError } from '@replikit/core';
import { describe, expect, it } from 'vitest';
import { HYPERV_CAPABILITIES, hypervDriver } from '../src/index.js';

const parseError = (side: Record<string, unknown>): Error => {
  try {
    new DriverRegistry()
      .register(hypervDriver)
      .parseOptions({ driver: 'hyperv', vm: 'web', ...side }, { side: 'source' });
  } catch (error) {
    return error as Error;
  }
  throw new Error('the options were accepted');
};

describe('hypervDriver (the definition)', () => {
  it("declares exactly core's built-in row for kind 'hyperv'; an instance is a source and a target", () => {
    expect(hypervDriver.kind).toBe('hyperv');
    expect(hypervDriver.capabilities).toEqual(BUILTIN_DRIVER_KINDS.get('hyperv'));
    // What an instance declares is what the kind's row says (failover included).
    expect({ ...HYPERV_CAPABILITIES }).toEqual({ ...BUILTIN_DRIVER_KINDS.get('hyperv') });
    const row = BUILTIN_DRIVER_KINDS.get('hyperv')!;
    for (const m of HYPERV_CAPABILITIES.methods) expect(row.methods).toContain(m);
    expect(HYPERV_CAPABILITIES).toMatchObject({ canBeSource: true, canBeTarget: true, restorePoints: true });
    expect(row).toMatchObject({ canBeSource: true, canBeTarget: true, restorePoints: true });
  });

  it('takes a local host by default and a remoting host with credentials by reference only', () => {
    const registry = new DriverRegistry().register(hypervDriver);
    expect(registry.parseOptions({ driver: 'hyperv', vm: 'web' }, { side: 'source' })).toMatchObject({
      host: 'local',
      rct: true,
      networkMap: {},
    });
    const clear = parseError({ host: { computerName: 'hv1', user: 'CORP\\\\admin', password: 'hunter2' } });
    expect(isReplikitError(clear, 'E_JOB')).toBe(true);
    expect(clear.message).toMatch(/a clear password is never accepted/);
    expect(clear.message).not.toContain('hunter2');
    expect(parseError({ hosts: 'local' }).message).toMatch(/hosts/);
    expect(parseError({ host: { computerName: 'hv1', passwordEnv: 'A', credentialsFile: '/x' } }).message).toMatch(
      /give passwordEnv or credentialsFile, not both/,
    );
  });

  it('refuses a relative replicaPath (the run made folders in the working folder, then failed in New-VM)', () => {
    expect(parseError({ replicaPath: 'rel/dir' }).message).toBe(
      'source.replicaPath: expected an absolute folder path (E:\\Replicas), got string "rel/dir"',
    );
    const registry = new DriverRegistry().register(hypervDriver);
    for (const replicaPath of ['E:\\Replicas', '\\\\nas\\share\\r', '/srv/replicas']) {
      expect(registry.parseOptions({ driver: 'hyperv', replicaPath }, { side: 'target' })).toMatchObject({
        replicaPath,
      });
    }
  });

  it("names what is wrong with a host that is neither 'local' nor a remote host with computerName", () => {
    // Was: "source.host: Invalid input, got an object" / "…, got string "remote"".
    expect(parseError({ host: 'remote' }).message).toBe(
      `source.host: expected 'local' or a remote host { computerName, user, passwordEnv, credentialsFile, agent }, got string "remote"`,
    );
    expect(parseError({ host: { computername: 'HV1' } }).message).toBe(
      "source.host: a remote host needs computerName (it takes computerName, user, passwordEnv, credentialsFile, agent), got an object without it; unknown field 'computername'",
    );
    expect(parseError({ host: { computerName: 7 } }).message).toMatch(
      /^source\.host: a remote host, but computerName: expected a host name/,
    );
  });

  it('refuses, with E_INPUT, a remoting host whose password variable is not set (naming it, not a value)', async () => {
    const remote = await Promise.resolve(
      hypervDriver.create(
        {
          host: {
            computerName: 'hv1',
            user: 'CORP\\admin',
            passwordEnv: 'RK_TEST_UNSET_PASSWORD',
            agent: { address: '127.0.0.1:7400', pskIdentity: 'site', pskKeyEnv: 'RK_TEST_UNSET_KEY' },
          },
          callTimeoutMs: 120_000,
          networkMap: {},
          rct: true,
        },
        { kind: 'hyperv', side: 'source' },
      ),
    ).catch((e: unknown) => e);
    expect(isReplikitError(remote, 'E_INPUT')).toBe(true);
    expect((remote as Error).message).toMatch(/RK_TEST_UNSET_PASSWORD is not set/);
    const noAgent = await Promise.resolve(
      hypervDriver.create(
        { host: { computerName: 'hv1' }, callTimeoutMs: 120_000, networkMap: {}, rct: true },
        { kind: 'hyperv', side: 'source' },
      ),
    ).catch((e: unknown) => e);
    expect(isReplikitError(noAgent, 'E_INPUT')).toBe(true);
    expect((noAgent as Error).message).toMatch(/needs its replikit-agent.*host\.agent/);
  });
});
