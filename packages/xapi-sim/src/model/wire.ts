/** A value as XAPI puts it on the wire: strings, numbers, booleans, sets (arrays) and maps. */
export type Wire = string | number | boolean | Wire[] | { [key: string]: Wire };

/** A record of one XAPI object: field name to value. */
export type XRecord = Record<string, Wire>;

/** The classes the simulator serves, spelled as XAPI spells them. */
export const CLASSES = ['pool', 'host', 'SR', 'PBD', 'VDI', 'VBD', 'VM', 'VIF', 'network', 'PIF', 'task'] as const;

/** One of {@link CLASSES}. */
export type XClass = (typeof CLASSES)[number];

/** Deep copy of a wire value (records handed out never alias the database). */
export function cloneWire<T extends Wire>(value: T): T {
  return structuredClone(value);
}
