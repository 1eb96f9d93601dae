// A process that acquires a pool's appliance, plugs a VDI into it, says so on stdout and waits
// to be killed: the tests SIGKILL it to leave a plugged VBD behind, as a killed engine would.
// Arguments: <pool url> <vdi ref> <ip>…; the password comes in REPLIKIT_TEST_XEN_PASSWORD.
import { AbdLease, XenConnection } from '../../src/index.js';

const [url, vdi, ...ips] = process.argv.slice(2);
const connection = await XenConnection.open({
  url: url!,
  user: 'root',
  passwordEnv: 'REPLIKIT_TEST_XEN_PASSWORD',
  onWarning: () => undefined,
});
const lease = await AbdLease.acquire(connection, { ips, srs: [] });
const plugged = await lease.plug(vdi!, 'RW');
process.stdout.write(`PLUGGED ${plugged.vbd}\n`);
setInterval(() => undefined, 60_000);
