import type { PsScript } from './ps-script.js';

/** A Hyper-V host reached through PowerShell remoting, with its credential resolved. */
export interface RemoteSessionTarget {
  /** The host's name or address, as `New-PSSession -ComputerName` takes it. */
  computerName: string;
  /** The user to sign in as (`DOMAIN\\user`); unset: the current Windows identity (Kerberos). */
  user?: string | undefined;
  /** That user's password (read by the caller from an environment variable or a file). */
  password?: string | undefined;
}

/** What the remote session runs once opened: the quiet streams and the Hyper-V module. */
const REMOTE_SETUP =
  "Invoke-Command -Session $global:ReplikitSession -ScriptBlock { $ProgressPreference = 'SilentlyContinue'; $WarningPreference = 'SilentlyContinue'; $InformationPreference = 'SilentlyContinue'; $VerbosePreference = 'SilentlyContinue'; Import-Module -Name Hyper-V }";

/**
 * Opens the PSSession with the current Windows identity (Kerberos inside a domain). The session
 * lives in `$global:ReplikitSession` of the local shell; every later call runs in it.
 */
export const OPEN_SESSION: PsScript = {
  name: 'open-remote-session',
  body: ['$global:ReplikitSession = New-PSSession -ComputerName $p.computerName', REMOTE_SETUP].join('\n'),
};

/**
 * Opens the PSSession with a user and password. The password arrives as a call parameter (base64
 * JSON, like every value) and becomes a SecureString in the shell: it is never part of a script.
 */
export const OPEN_SESSION_WITH_CREDENTIAL: PsScript = {
  name: 'open-remote-session',
  body: [
    '$secret = ConvertTo-SecureString -String $p.password -AsPlainText -Force',
    '$global:ReplikitSession = New-PSSession -ComputerName $p.computerName -Credential ([pscredential]::new($p.user, $secret))',
    REMOTE_SETUP,
  ].join('\n'),
};

/** Closes the PSSession (the shell is ending). */
export const CLOSE_SESSION: PsScript = {
  name: 'close-remote-session',
  body: 'Remove-PSSession -Session $global:ReplikitSession',
};

/** The script and parameters that open a session to `target`. */
export function openSessionCall(target: RemoteSessionTarget): { script: PsScript; params: Record<string, unknown> } {
  if (target.user !== undefined) {
    return {
      script: OPEN_SESSION_WITH_CREDENTIAL,
      params: { computerName: target.computerName, user: target.user, password: target.password ?? '' },
    };
  }
  return { script: OPEN_SESSION, params: { computerName: target.computerName } };
}

/** Every script the remote set-up can send (for the grammar test). */
export const REMOTE_SESSION_SCRIPTS: readonly PsScript[] = [OPEN_SESSION, OPEN_SESSION_WITH_CREDENTIAL, CLOSE_SESSION];
