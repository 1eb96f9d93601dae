import { checkPowerShellScript } from '@replikit/hyperv-sim';
import { describe, expect, it } from 'vitest';
import {
  CONTROLLER_SETUP_LINE,
  callLine,
  envelopedScript,
  FAILOVER_SCRIPTS,
  type PsScript,
  REMOTE_SESSION_SCRIPTS,
  remoteCallLine,
  SESSION_SETUP_LINE,
  SOURCE_SCRIPTS,
  TARGET_SCRIPTS,
} from '../src/index.js';

/** Every fixed text the link itself sends (the driver's own scripts join this list as they come). */
const SAMPLE: PsScript = { name: 'sample', body: "Get-VM -Name $p.name | Select-Object -Property 'Name'" };

describe('the link’s PowerShell text', () => {
  it('parses and names only documented cmdlets and parameters', async () => {
    for (const text of [SESSION_SETUP_LINE, envelopedScript(SAMPLE), callLine(SAMPLE, { name: "it's $(x)" })]) {
      expect(await checkPowerShellScript(text)).toMatchObject({ ok: true });
    }
  });

  it('parses every script the driver can send, each naming only documented cmdlets and parameters', async () => {
    expect(SOURCE_SCRIPTS.length).toBeGreaterThan(10);
    expect(new Set(SOURCE_SCRIPTS.map((s) => s.name)).size).toBe(SOURCE_SCRIPTS.length);
    const all = [...SOURCE_SCRIPTS, ...TARGET_SCRIPTS, ...FAILOVER_SCRIPTS];
    expect(new Set(all.map((s) => s.name)).size).toBe(all.length);
    for (const script of all) {
      expect(await checkPowerShellScript(envelopedScript(script)), script.name).toMatchObject({ ok: true });
      // Values reach a script only as $p.<field>: no quote of a value, no string built from data.
      expect(script.body, script.name).not.toMatch(/\$\{|\+\s*\$p|"/);
    }
  });

  it('parses the remoting set-up: the controller line, the session scripts, and a call through Invoke-Command', async () => {
    expect(REMOTE_SESSION_SCRIPTS.length).toBe(3);
    const texts = [
      CONTROLLER_SETUP_LINE,
      ...REMOTE_SESSION_SCRIPTS.map(envelopedScript),
      remoteCallLine(SAMPLE, { name: "it's $(x)" }),
    ];
    for (const text of texts) expect(await checkPowerShellScript(text), text.slice(0, 60)).toMatchObject({ ok: true });
    for (const script of REMOTE_SESSION_SCRIPTS) expect(script.body, script.name).not.toMatch(/\$\{|\+\s*\$p|"/);
    // A misspelled remoting parameter is refused like any other.
    expect(
      await checkPowerShellScript(remoteCallLine(SAMPLE, {}).replace('-ArgumentList', '-ArgumentLst')),
    ).toMatchObject({ ok: false, category: 'InvalidArgument' });
  });

  it('is refused when a cmdlet or parameter is misspelled', async () => {
    expect(await checkPowerShellScript(envelopedScript({ name: 'typo', body: 'Get-VMM' }))).toMatchObject({
      ok: false,
      category: 'ObjectNotFound',
    });
    expect(await checkPowerShellScript(envelopedScript({ name: 'typo', body: 'Get-VM -Nmae $p.name' }))).toMatchObject({
      ok: false,
      category: 'InvalidArgument',
    });
  });
});
