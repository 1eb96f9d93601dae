import { DriverError } from '@replikit/core';

/**
 * A XAPI failure as the simulator reports it on the wire: an error code (`HANDLE_INVALID`, …)
 * and its string parameters, the `ErrorDescription` of XAPI's API.
 */
export class XapiFault extends DriverError {
  /** XAPI's error code, e.g. `VM_BAD_POWER_STATE`. */
  readonly xapiCode: string;
  /** The error's parameters, as strings. */
  readonly params: string[];

  constructor(xapiCode: string, params: readonly string[] = []) {
    super(`XAPI failure ${xapiCode}(${params.join(', ')}): the simulated host refused the call`, {
      details: { xapiCode, params: [...params] },
    });
    this.xapiCode = xapiCode;
    this.params = [...params];
  }

  /** The `ErrorDescription` array: code first, then the parameters. */
  get description(): string[] {
    return [this.xapiCode, ...this.params];
  }
}

/** Shorthand to build a {@link XapiFault}. */
export function fault(code: string, ...params: (string | number)[]): XapiFault {
  return new XapiFault(
    code,
    params.map((p) => String(p)),
  );
}

/** The ErrorDescription of any thrown value (errors that are not XAPI's become INTERNAL_ERROR). */
export function describeError(error: unknown): string[] {
  if (error instanceof XapiFault) return error.description;
  return ['INTERNAL_ERROR', error instanceof Error ? error.message : String(error)];
}
