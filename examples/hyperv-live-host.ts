// Shared by the Hyper-V examples: the driver options of a real host named by the environment
// (their live mode). See examples/hyperv-rct.ts for the variables.

/** The Hyper-V driver options of the live host `REPLIKIT_HYPERV_HOST` names (`local` or a host name). */
export function liveHost(env: NodeJS.ProcessEnv): Record<string, unknown> {
  const name = env.REPLIKIT_HYPERV_HOST!;
  if (name === 'local') return {};
  const agent = env.REPLIKIT_HYPERV_AGENT;
  if (!agent)
    throw new Error('REPLIKIT_HYPERV_AGENT (HOST:PORT of replikit-agent --host-files) is needed with a remote host');
  return {
    host: {
      computerName: name,
      ...(env.REPLIKIT_HYPERV_USER ? { user: env.REPLIKIT_HYPERV_USER, passwordEnv: 'REPLIKIT_HYPERV_PASSWORD' } : {}),
      agent: {
        address: agent,
        pskIdentity: env.REPLIKIT_HYPERV_AGENT_IDENTITY ?? 'replikit',
        pskKeyEnv: 'REPLIKIT_HYPERV_AGENT_KEY',
      },
    },
  };
}
