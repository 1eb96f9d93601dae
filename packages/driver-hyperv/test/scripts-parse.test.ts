import { checkPowerShellScript } from '@replikit/hyperv-sim';
import { describe, expect, it } from 'vitest';
import { callLine, envelopedScript, type PsScript, SESSION_SETUP_LINE } from '../src/index.js';

/** Every fixed text the link itself sends (the driver's own scripts join this list as they come). */
const SAMPLE: PsScript = { name: 'sample', body: "Get-VM -Name $p.name | Select-Object -Property 'Name'" };

describe('the link’s PowerShell text', () => {
  it('parses and names only documented cmdlets and parameters', async () => {
    for (const text of [SESSION_SETUP_LINE, envelopedScript(SAMPLE), callLine(SAMPLE, { name: "it's $(x)" })]) {
      expect(await checkPowerShellScript(text)).toMatchObject({ ok: true });
    }
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
