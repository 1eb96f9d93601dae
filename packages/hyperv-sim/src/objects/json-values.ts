import { PsError } from '../ps-error.js';
import { DOCUMENTED_TYPES, type PropertyKind } from './documented-types.js';
import { ENUMS } from './enums.js';
import { typeOf } from './ps-object.js';

/**
 * A property value as `ConvertTo-Json` writes it in Windows PowerShell 5.1: an enum as its number,
 * a Guid as its text, a DateTime as `/Date(<ms>)/`, a documented object with each of its modelled
 * properties converted the same way.
 */
export function jsonValue(kind: PropertyKind, value: unknown): unknown {
  if (value === null || value === undefined) return null;
  if (kind.startsWith('enum:')) return enumNumber(kind.slice(5), value);
  if (kind === 'datetime') return `/Date(${Date.parse(String(value))})/`;
  if (kind === 'guid') return String(value);
  if (Array.isArray(value)) return value.map((v) => jsonObject(v));
  return jsonObject(value);
}

/** A whole documented object as `ConvertTo-Json` writes it (every property the simulator models). */
export function jsonObject(value: unknown): unknown {
  const type = DOCUMENTED_TYPES.get(typeOf(value) ?? '');
  if (!type) return value;
  const out: Record<string, unknown> = {};
  for (const [name, v] of Object.entries(value as Record<string, unknown>)) {
    out[name] = jsonValue(type.properties[name] ?? 'value', v);
  }
  return out;
}

/** `.ToString()` of a property value; a null value is the error PowerShell raises for it. */
export function textValue(kind: PropertyKind, value: unknown, property: string): string {
  if (value === null || value === undefined) {
    throw new PsError(
      'InvalidOperation',
      `You cannot call a method on a null-valued expression ($_.${property}.ToString()).`,
      'InvokeMethodOnNull',
    );
  }
  if (kind.startsWith('enum:')) {
    enumNumber(kind.slice(5), value);
    return String(value);
  }
  if (kind === 'datetime') return usDateTime(new Date(String(value)));
  if (kind.startsWith('list:') || typeof value === 'object') {
    throw new PsError(
      'NotImplemented',
      `The simulator does not model .ToString() of $_.${property} (a ${kind} value).`,
      'SimulatorUnsupportedScript',
    );
  }
  return String(value);
}

/**
 * `.ToString('o')` of a DateTime: the .NET round-trip format, seven fraction digits. The simulator
 * keeps times in UTC (`…Z`); a real host writes its local offset (`…+01:00`).
 */
export function roundTripText(value: unknown, property: string): string {
  if (value === null || value === undefined) return textValue('datetime', value, property);
  return new Date(String(value)).toISOString().replace(/\.(\d{3})Z$/, '.$10000Z');
}

function enumNumber(enumName: string, value: unknown): number {
  const number = ENUMS[enumName]?.[String(value)];
  if (number === undefined) throw new Error(`hyperv-sim: '${String(value)}' is not a value of enum ${enumName}`);
  return number;
}

/** DateTime.ToString() under en-US: `12/7/2026 5:04:52 AM`. */
function usDateTime(d: Date): string {
  const hour = d.getUTCHours() % 12 === 0 ? 12 : d.getUTCHours() % 12;
  const two = (n: number) => String(n).padStart(2, '0');
  return `${d.getUTCMonth() + 1}/${d.getUTCDate()}/${d.getUTCFullYear()} ${hour}:${two(d.getUTCMinutes())}:${two(d.getUTCSeconds())} ${d.getUTCHours() < 12 ? 'AM' : 'PM'}`;
}
