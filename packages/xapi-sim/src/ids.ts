import { randomUUID } from 'node:crypto';

/** XAPI's null reference. */
export const NULL_REF = 'OpaqueRef:NULL';

/** A fresh opaque reference, shaped as XAPI makes them (`OpaqueRef:<uuid>`). */
export function newRef(): string {
  return `OpaqueRef:${randomUUID()}`;
}

/** A fresh object uuid. */
export function newUuid(): string {
  return randomUUID();
}

/** XAPI's datetime format, `%Y%m%dT%H:%M:%SZ`. */
export function xapiDate(date: Date = new Date()): string {
  return date
    .toISOString()
    .replace(/-/g, '')
    .replace(/\.\d{3}Z$/, 'Z');
}
