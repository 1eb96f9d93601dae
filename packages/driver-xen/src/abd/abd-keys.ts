/**
 * The names a delegate appliance (ABD) is found and configured by, as the XenServer driver and
 * the appliance agree on them (the xapi-sim README, "The delegate appliance", is the contract).
 */

/**
 * `other_config` key that marks a VM as a delegate appliance: `template` on the image a pool
 * provides, {@link ABD_APPLIANCE} on an appliance deployed from it. Appliances are found by this
 * mark, never by name.
 */
export const ABD_MARK = 'replikit:abd';

/** The {@link ABD_MARK} value of an appliance (not the template it was made from). */
export const ABD_APPLIANCE = 'appliance';

/** The {@link ABD_MARK} value of the appliance image a pool provides. */
export const ABD_TEMPLATE = 'template';

/** `other_config` key of a VBD the driver plugged into an appliance; its value, `<host>/<pid>`, names the process that plugged it. */
export const ABD_VBD_MARK = 'replikit:abd-vbd';

/**
 * `other_config` key of a running appliance: `<host>/<pid>` of the last process that acquired it
 * (removed when a persistent appliance is released). A driver that closes without using the
 * appliance stops it when that process is dead: a killed run left it running.
 */
export const ABD_HOLDER_MARK = 'replikit:abd-holder';

/** The appliance's `xenstore_data` keys (network identity, then replikit's own keys). */
export const ABD_XENSTORE = {
  ip: 'vm-data/ip',
  netmask: 'vm-data/netmask',
  gateway: 'vm-data/gateway',
  port: 'vm-data/replikit/port',
  pskIdentity: 'vm-data/replikit/psk-identity',
  psk: 'vm-data/replikit/psk',
  srs: 'vm-data/replikit/srs',
} as const;

/** The agent's port on an appliance (the `replikit-agent` default). */
export const ABD_PORT = 7400;

/** The TLS-PSK identity the driver gives its appliances. */
export const ABD_PSK_IDENTITY = 'replikit';

/** The driver kind the appliance's agent serves (as `replikit-agent --driver` names it). */
export const ABD_AGENT_KIND = 'xen-abd';
