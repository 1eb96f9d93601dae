import { PowerShell } from 'node-powershell';

/** The one-line call a driver sends: an enveloped script and its parameters, both base64. */
export function callLine(body: string, params: Record<string, unknown>): string {
  const script = [
    "$ErrorActionPreference = 'Stop'",
    '$p = [Text.Encoding]::UTF8.GetString([Convert]::FromBase64String($args[0])) | ConvertFrom-Json',
    `try { $r = @(${body}); [pscustomobject]@{ ok = $true; data = $r } | ConvertTo-Json -Depth 8 -Compress }`,
    'catch { [pscustomobject]@{ ok = $false; message = $_.Exception.Message } | ConvertTo-Json -Compress }',
  ].join('\n');
  const s = Buffer.from(script, 'utf8').toString('base64');
  const p = Buffer.from(JSON.stringify(params), 'utf8').toString('base64');
  return `& ([scriptblock]::Create([Text.Encoding]::UTF8.GetString([Convert]::FromBase64String('${s}')))) '${p}'`;
}

/** A node-powershell shell on a fake pwsh, and a `call` that returns the envelope's data. */
export function simShell(pwsh: string) {
  const shell = new PowerShell({ executable: pwsh, throwOnInvocationError: false });
  const call = async (body: string, params: Record<string, unknown> = {}): Promise<Record<string, unknown>[]> => {
    const result = await shell.invoke(callLine(body, params));
    const envelope = JSON.parse(result.raw) as { ok: boolean; data?: Record<string, unknown>[]; message?: string };
    if (!envelope.ok) throw new Error(envelope.message);
    return envelope.data ?? [];
  };
  return { shell, call };
}
