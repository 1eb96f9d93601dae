import { ConflictError, InputError, type ReplikitError, TransportError } from '@replikit/core';
import type { Address } from './security.js';

/**
 * Turns the error of a server that could not listen on `address` into a {@link ReplikitError}
 * that says what to do: an address in use is `E_CONFLICT`; an address this machine does not have,
 * a name that does not resolve or a port that needs privileges is `E_INPUT`; anything else is
 * `E_TRANSPORT`.
 */
export function bindError(error: unknown, address: Address): ReplikitError {
  const errno = (error as NodeJS.ErrnoException | undefined)?.code;
  const where = `${address.host}:${address.port}`;
  const options = { cause: error, details: { errno, host: address.host, port: address.port } };
  switch (errno) {
    case 'EADDRINUSE':
      return new ConflictError(
        `${where} is already in use (another agent?); stop that process or listen on another port`,
        options,
      );
    case 'EADDRNOTAVAIL':
      return new InputError(
        `${address.host} is not an address of this machine; listen on one of its addresses`,
        options,
      );
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new InputError(`the host name ${address.host} does not resolve; listen on an address`, options);
    case 'EACCES':
    case 'EPERM':
      return new InputError(
        `listening on ${where} is not permitted (ports below 1024 need privileges); pick a port above 1023`,
        options,
      );
    default:
      return new TransportError(
        `cannot listen on ${where}: ${errno ?? (error as Error | undefined)?.message ?? String(error)}`,
        options,
      );
  }
}
