/**
 * A script the driver can send: a fixed text, never built from user data. Values reach it as
 * `$p.<field>`, read from the call's parameters (base64 UTF-8 JSON, decoded inside the script).
 */
export interface PsScript {
  /** A short name for messages and logs (`get-vm`). */
  readonly name: string;
  /**
   * The work: one pipeline (or several statements) whose output becomes the call's `data` array.
   * It must not contain user data, only `$p.<field>` references.
   */
  readonly body: string;
}

/**
 * The whole text of a script as it runs in PowerShell: errors stop it (`Stop`) and are caught,
 * the parameters are decoded from `$args[0]`, and one compressed JSON envelope is printed,
 * `{ ok, data }` or `{ ok: false, category, message, errorId }`.
 */
export function envelopedScript(script: PsScript): string {
  return [
    "$ErrorActionPreference = 'Stop'",
    '$p = [Text.Encoding]::UTF8.GetString([Convert]::FromBase64String($args[0])) | ConvertFrom-Json',
    'try {',
    `  $r = @(${script.body})`,
    '  [pscustomobject]@{ ok = $true; data = $r } | ConvertTo-Json -Depth 8 -Compress',
    '} catch {',
    '  [pscustomobject]@{ ok = $false; category = $_.CategoryInfo.Category.ToString(); message = $_.Exception.Message; errorId = $_.FullyQualifiedErrorId } | ConvertTo-Json -Depth 8 -Compress',
    '}',
  ].join('\n');
}

/**
 * The one line sent to the shell for a call: the enveloped script and its parameters, each as
 * base64 of UTF-8, so no quote, `$`, backtick, newline or non-ASCII character of a value ever
 * reaches PowerShell's parser.
 */
export function callLine(script: PsScript, params: Record<string, unknown>): string {
  const s = Buffer.from(envelopedScript(script), 'utf8').toString('base64');
  const p = Buffer.from(JSON.stringify(params), 'utf8').toString('base64');
  return `& ([scriptblock]::Create([Text.Encoding]::UTF8.GetString([Convert]::FromBase64String('${s}')))) '${p}'`;
}

/**
 * The one line sent to the local shell for a call that runs on a remote host: the same enveloped
 * script and parameters, run by `Invoke-Command` in the PSSession the link opened
 * (`$global:ReplikitSession`); the envelope the remote script prints comes back as the output.
 */
export function remoteCallLine(script: PsScript, params: Record<string, unknown>): string {
  const s = Buffer.from(envelopedScript(script), 'utf8').toString('base64');
  const p = Buffer.from(JSON.stringify(params), 'utf8').toString('base64');
  return `Invoke-Command -Session $global:ReplikitSession -ScriptBlock ([scriptblock]::Create([Text.Encoding]::UTF8.GetString([Convert]::FromBase64String('${s}')))) -ArgumentList '${p}'`;
}

/**
 * The line that sets up a local shell that only drives a remote host: the same quiet streams and
 * UTF-8 output, without the Hyper-V module (it loads in the remote session).
 */
export const CONTROLLER_SETUP_LINE =
  "$ProgressPreference = 'SilentlyContinue'; $WarningPreference = 'SilentlyContinue'; $InformationPreference = 'SilentlyContinue'; $VerbosePreference = 'SilentlyContinue'; [Console]::OutputEncoding = [Text.UTF8Encoding]::new($false)";

/**
 * The line that sets a new shell up: progress, warning, information and verbose streams
 * silenced, UTF-8 output, and the Hyper-V module loaded.
 */
export const SESSION_SETUP_LINE =
  "$ProgressPreference = 'SilentlyContinue'; $WarningPreference = 'SilentlyContinue'; $InformationPreference = 'SilentlyContinue'; $VerbosePreference = 'SilentlyContinue'; [Console]::OutputEncoding = [Text.UTF8Encoding]::new($false); Import-Module -Name Hyper-V";
