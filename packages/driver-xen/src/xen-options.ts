import { z } from 'zod';

const uuidLike = z.string().regex(/^[0-9a-fA-F-]{36}$/, 'expected an SR uuid (36 hex digits and dashes)');
const noNul = (what: string) =>
  z
    .string({ error: `expected ${what}` })
    .min(1, `expected ${what}`)
    .refine((v) => !v.includes('\0') && !/[\r\n]/.test(v), `${what} cannot hold NUL or line breaks`);

/**
 * The delegate appliance (ABD) section: the pool's appliance is found by its `other_config` mark
 * (`replikit:abd=appliance`) or deployed from the pool's appliance image (`replikit:abd=template`).
 */
const abdSchema = z.strictObject({
  /** Addresses the appliances take, one per appliance (the first one no running appliance holds). */
  ips: z.array(z.ipv4({ error: 'expected IPv4 addresses such as "10.0.0.50"' })).min(1),
  /** Uuids of the SRs the appliance must see (empty: every SR of the pool). */
  srs: z.array(uuidLike).default([]),
  /** The SR that receives a deployed appliance's own disks (a copy of the image); unset: a clone. */
  imageSr: uuidLike.optional(),
  /**
   * The appliance's netmask.
   * @default "255.255.255.0"
   */
  netmask: z.ipv4({ error: 'expected a netmask such as "255.255.255.0"' }).optional(),
  /** The appliance's gateway, on its subnet. */
  gateway: z.ipv4({ error: 'expected an IPv4 gateway such as "10.0.0.1"' }).optional(),
  /**
   * Keep the appliance running after the run, for the next one (no boot per run).
   * @default false
   */
  persistent: z.boolean().default(false),
});

/**
 * The Xen driver's fields in a job's `source` or `target` (besides `driver`, and `vm` or
 * `replicaName`, which core owns). Credentials are named by reference only: a clear password is
 * refused with a one-line error naming the field.
 */
export const xenDriverOptionsSchema = z
  .strictObject({
    /** The pool master's URL, such as `https://xen1.example`. */
    url: z.url({ protocol: /^https?$/, error: 'expected the pool master URL, such as "https://xen1.example"' }),
    /**
     * The XAPI user.
     * @default "root"
     */
    user: noNul('a user name').default('root'),
    /** The name of an environment variable holding the password. */
    passwordEnv: z
      .string()
      .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'expected an environment variable name such as "XEN_PASSWORD"')
      .optional(),
    /** A file holding the password (its first line), or `user:password`. */
    credentialsFile: noNul('a file path').optional(),
    /** Never accepted: present only to refuse it with a clear message. */
    password: z
      .unknown()
      .optional()
      .refine((v) => v === undefined, {
        error:
          'a clear password is never accepted in a job; name an environment variable (passwordEnv) or a file (credentialsFile)',
      }),
    /** SHA-256 fingerprint of the pool master's TLS certificate (`AB:CD:…` or hex): the connection is pinned to it. */
    fingerprint: z
      .string()
      .regex(/^([0-9A-Fa-f]{2}:?){31}[0-9A-Fa-f]{2}$/, 'expected a SHA-256 fingerprint, 64 hex digits (colons allowed)')
      .optional(),
    /**
     * Accept any TLS certificate (a warning is emitted). Prefer `fingerprint`.
     * @default false
     */
    allowUnauthorized: z.boolean().default(false),
    /**
     * A name for the pool, which the rules compare: two sides (or two jobs) naming the same pool
     * share it (`one-abd-same-pool`, `xen-target-needs-abd`, `cbt-exclusive`). Not sent to XAPI.
     */
    pool: noNul('a pool name').optional(),
    /** Target side: the uuid of the SR that receives the replica's disks. */
    sr: uuidLike.optional(),
    /** Target side: source network name or uuid → target network uuid. */
    networkMap: z.record(z.string().min(1), z.string().min(1)).default({}),
    /**
     * Target side, method `xva`: the local folder an export is spooled in before its import (XAPI's
     * `PUT /import` needs the length up front). It needs room for the VM's written data. A run killed
     * while spooling leaves its spool there; the next XVA import on the machine removes it.
     * @default the system's temporary folder
     */
    spoolDir: noNul('a folder path').optional(),
    /** The delegate appliance (ABD) section. */
    abd: abdSchema.optional(),
    /**
     * Parallel NBD connections per disk.
     * @default 2
     */
    nbdConnections: z.number().int().min(1).max(16).default(2),
    /**
     * Read disks over NBD when the pool offers it; otherwise (or `false`) over `/export_raw_vdi`.
     * @default true
     */
    preferNbd: z.boolean().default(true),
  })
  .superRefine((o, ctx) => {
    if (o.passwordEnv === undefined && o.credentialsFile === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['passwordEnv'],
        message: 'name the password: passwordEnv (an environment variable) or credentialsFile (a file)',
      });
    }
    if (o.passwordEnv !== undefined && o.credentialsFile !== undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['credentialsFile'],
        message: 'give passwordEnv or credentialsFile, not both',
      });
    }
    if (o.fingerprint !== undefined && !/^https:/i.test(o.url)) {
      ctx.addIssue({
        code: 'custom',
        path: ['fingerprint'],
        message: 'a fingerprint pins a TLS certificate: it needs an https:// url (http:// has none to check)',
      });
    }
    if (o.fingerprint !== undefined && o.allowUnauthorized) {
      ctx.addIssue({
        code: 'custom',
        path: ['allowUnauthorized'],
        message: 'give fingerprint or allowUnauthorized, not both',
      });
    }
  });

/** The Xen driver's options as a job gives them (defaults not applied). */
export type XenDriverJobOptions = z.input<typeof xenDriverOptionsSchema>;
/** The Xen driver's options once parsed (defaults applied). */
export type XenDriverOptions = z.output<typeof xenDriverOptionsSchema>;
