/** The line an appliance agent prints once it listens (`<prefix><host>:<port>`); the simulator waits for it. */
export const AGENT_READY_PREFIX = 'xapi-sim-abd listening on ';
