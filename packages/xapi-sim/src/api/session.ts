import { newRef, newUuid } from '../ids.js';
import { fault } from '../xapi-fault.js';
import { type MethodTable, str } from './registry.js';

/** `session.*` and `system.*`. */
export function registerSession(table: MethodTable): void {
  table.add({
    name: 'session.login_with_password',
    arity: 4,
    minArity: 2,
    session: false,
    run: ({ sim }, a) => {
      const user = str(a, 0);
      const password = str(a, 1);
      if (user !== sim.credentials.user || password !== sim.credentials.password) {
        throw fault('SESSION_AUTHENTICATION_FAILED', user, 'Authentication failure');
      }
      const ref = newRef();
      sim.sessions.set(ref, { uuid: newUuid(), user });
      return ref;
    },
  });
  table.add({
    name: 'session.logout',
    arity: 0,
    run: ({ sim, session }) => {
      sim.sessions.delete(session);
    },
  });
  table.add({ name: 'session.get_uuid', arity: 1, run: ({ sim }, a) => sessionOf(sim.sessions, str(a, 0)).uuid });
  table.add({
    name: 'session.get_this_host',
    arity: 1,
    run: ({ sim }, a) => {
      sessionOf(sim.sessions, str(a, 0));
      return sim.refs.host;
    },
  });
  table.add({
    name: 'session.get_this_user',
    arity: 1,
    run: ({ sim }, a) => {
      sessionOf(sim.sessions, str(a, 0));
      return 'OpaqueRef:NULL';
    },
  });
  table.add({ name: 'system.listMethods', arity: 0, session: false, run: ({ sim }) => sim.methods.names() });
}

function sessionOf<T>(sessions: Map<string, T>, ref: string): T {
  const s = sessions.get(ref);
  if (s === undefined) throw fault('HANDLE_INVALID', 'session', ref);
  return s;
}
