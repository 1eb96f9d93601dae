import { z } from 'zod';

const text = (what: string) =>
  z
    .string({ error: `expected ${what}` })
    .min(1, `expected ${what}`)
    .refine((v) => !v.includes('\0') && !/[\r\n]/.test(v), `${what} cannot hold NUL or line breaks`);

const envName = z
  .string()
  .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'expected an environment variable name such as "HYPERV_PASSWORD"');

/**
 * The `replikit-agent --host-files` on a remoting host, which serves its VHDX files over TLS-PSK.
 */
const agentSchema = z
  .strictObject({
    /** The agent's `HOST:PORT`. */
    address: z.string().regex(/^.+:\d{1,5}$/, "expected the agent's address as HOST:PORT"),
    /** The TLS-PSK identity the agent was started with (`--psk-identity`). */
    pskIdentity: text('a PSK identity'),
    /** The name of an environment variable holding the key (hex, at least 16 bytes). */
    pskKeyEnv: envName.optional(),
    /** A file holding the key (hex, at least 16 bytes). */
    pskKeyFile: text('a file path').optional(),
  })
  .refine((o) => (o.pskKeyEnv === undefined) !== (o.pskKeyFile === undefined), {
    error: 'give the agent key as pskKeyEnv or pskKeyFile (one of them)',
  });

/**
 * A Hyper-V host reached through PowerShell remoting: its name, and the credentials by reference
 * (an environment variable or a file), never in clear.
 */
const remoteHostSchema = z
  .strictObject({
    /** The host's name or address, as `Invoke-Command -ComputerName` takes it. */
    computerName: text('a host name'),
    /** The user remoting signs in as (`DOMAIN\\user`); unset: the current Windows identity. */
    user: text('a user name').optional(),
    /** The name of an environment variable holding the password. */
    passwordEnv: envName.optional(),
    /** A file holding the password (its first line). */
    credentialsFile: text('a file path').optional(),
    /**
     * The `replikit-agent --host-files` on the host that serves its disk files (the data side).
     * Required to create the driver; optional here so that other mistakes are named first.
     */
    agent: agentSchema.optional(),
    /** Never accepted: present only to refuse it with a clear message. */
    password: z
      .unknown()
      .optional()
      .refine((v) => v === undefined, {
        error:
          'a clear password is never accepted in a job; name an environment variable (passwordEnv) or a file (credentialsFile)',
      }),
  })
  .superRefine((o, ctx) => {
    if (o.user !== undefined && o.passwordEnv === undefined && o.credentialsFile === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['user'],
        message: 'a user needs a password: name it with passwordEnv or credentialsFile',
      });
    }
    if (o.passwordEnv !== undefined && o.credentialsFile !== undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['credentialsFile'],
        message: 'give passwordEnv or credentialsFile, not both',
      });
    }
  });

const REMOTE_HOST_FIELDS = 'computerName, user, passwordEnv, credentialsFile, agent';

/**
 * The message of a `host` that is neither `local` nor a remote host zod could go into (zod alone
 * says only "Invalid input"): what a host is, and for an object, the fields it lacks or does not know.
 */
function hostIssue(issue: {
  input?: unknown;
  errors?: readonly (readonly { code: string; keys?: string[]; path?: PropertyKey[]; message?: string }[])[];
}): string {
  const { input } = issue;
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    return `expected 'local' or a remote host { ${REMOTE_HOST_FIELDS} }`;
  }
  const problems = (issue.errors ?? []).flat().filter((i) => i.code !== 'invalid_value');
  const unknown = problems.flatMap((i) => (i.code === 'unrecognized_keys' ? (i.keys ?? []) : []));
  const extra = unknown.length
    ? `; unknown field${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => `'${k}'`).join(', ')}`
    : '';
  if (!('computerName' in input)) {
    return `a remote host needs computerName (it takes ${REMOTE_HOST_FIELDS}), got an object without it${extra}`;
  }
  const others = problems
    .filter((i) => i.code !== 'unrecognized_keys')
    .map((i) => `${(i.path ?? []).map(String).join('.')}: ${(i.message ?? '').replace(/^Invalid input: /, '')}`);
  return `a remote host, but ${[...others, ...(unknown.length ? [extra.slice(2)] : [])].join('; ')} (got an object)`;
}

/**
 * The Hyper-V driver's fields in a job's `source` or `target` (besides `driver`, and `vm` or
 * `replicaName`, which core owns).
 */
export const hypervDriverOptionsSchema = z.strictObject({
  /**
   * The host: `local` (replikit runs on the Hyper-V host and reads its VHDX files directly) or a
   * remoting target: control through a PowerShell remoting session, data through a
   * `replikit-agent --host-files` on the host. A remoting host is a source only in this version.
   * @default "local"
   */
  host: z.union([z.literal('local'), remoteHostSchema], { error: hostIssue }).default('local'),
  /**
   * The PowerShell executable node-powershell spawns: `powershell` (Windows PowerShell 5.1),
   * `pwsh`, a full path, or a simulated host's fake `pwsh`.
   * @default "powershell" on Windows, "pwsh" elsewhere
   */
  pwsh: text('an executable').optional(),
  /**
   * How long one PowerShell call may take before the shell is killed and respawned, in ms.
   * @default 120000
   */
  callTimeoutMs: z.number().int().min(1000).max(3_600_000).default(120_000),
  /**
   * Target side: the folder that receives the replica's VHDX files, absolute (`E:\Replicas`, a UNC
   * path, or `/…` on a simulated host); unset: the host's default.
   */
  replicaPath: text('a folder path')
    .regex(/^(?:[A-Za-z]:[\\/]|\\\\|\/)/, 'expected an absolute folder path (E:\\Replicas)')
    .optional(),
  /** Target side: source network (switch) name → target switch name; unmapped NICs are disconnected. */
  networkMap: z.record(z.string().min(1), z.string().min(1)).default({}),
  /**
   * Target side: the Secure Boot template of a generation 2 replica of a Secure Boot source that
   * names none (XenServer): `MicrosoftUEFICertificateAuthority` for Linux guests.
   * @default "MicrosoftWindows"
   */
  secureBootTemplate: text('a Secure Boot template name').optional(),
  /**
   * Source side: use Resilient Change Tracking where the VM supports it (recovery checkpoints);
   * `false` takes the VM's configured checkpoint type and lets the engine compare hashes.
   * @default true
   */
  rct: z.boolean().default(true),
});

/** The Hyper-V driver's options as a job gives them (defaults not applied). */
export type HyperVDriverJobOptions = z.input<typeof hypervDriverOptionsSchema>;
/** The Hyper-V driver's options once parsed (defaults applied). */
export type HyperVDriverOptions = z.output<typeof hypervDriverOptionsSchema>;
