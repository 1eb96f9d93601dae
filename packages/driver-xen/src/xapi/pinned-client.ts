import { DriverError } from '@replikit/core';
import { Agent } from 'undici';
import type { Xapi } from 'xen-api';
import { pinnedConnector } from './tls-pin.js';

/** The parts of xen-api 4.7's client that decide where and how it connects (not public API). */
interface XapiInternals {
  _undiciDispatcher?: { close(): Promise<void> };
  _httpInactivityTimeout?: number;
  _url?: unknown;
  _setUrl?: (url: unknown) => void;
}

/**
 * Makes every connection of a `xen-api` client check the pinned certificate before it sends
 * anything (the login with its password, every call, the event loop). The client has no option
 * for this: it connects through an undici `Agent` of its own, with certificate checks off when
 * `allowUnauthorized` is set, which a pin needs for a self-signed certificate. So its agent is
 * replaced with one whose connector pins, and its transport rebuilt on it. If a future xen-api
 * no longer has these parts, this refuses to connect rather than connect unpinned.
 *
 * @throws {@link @replikit/core!DriverError} when the client cannot be pinned.
 */
export function pinXapiClient(xapi: Xapi, fingerprint: string): void {
  const internals = xapi as unknown as XapiInternals;
  if (
    internals._undiciDispatcher === undefined ||
    typeof internals._setUrl !== 'function' ||
    internals._url === undefined
  ) {
    throw new DriverError(
      'this version of the xen-api client cannot be made to check a pinned certificate on its own connections; replikit will not connect unpinned (pin with xen-api 4.7, or trust the pool with a CA-signed certificate)',
    );
  }
  const timeout = internals._httpInactivityTimeout ?? 5 * 60 * 1000;
  const unpinned = internals._undiciDispatcher;
  internals._undiciDispatcher = new Agent({
    bodyTimeout: timeout,
    headersTimeout: timeout,
    connect: pinnedConnector(fingerprint) as never,
  });
  internals._setUrl(internals._url);
  // It never connected: nothing to wait for.
  void unpinned.close().catch(() => undefined);
}
