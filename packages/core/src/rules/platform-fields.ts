import type { EndpointSpec } from '../job/job-spec.js';

/**
 * The XenServer fields the seed rules read from a job's side. Core does not type a platform's
 * fields (the driver's own options schema checks them once its package is loaded), so these
 * readers take what has the expected shape and read anything else as absent: offline, a rule
 * judges what it can and never crashes on a field only the driver understands.
 */
export interface AbdFields {
  /** Addresses (or `dhcp`) of the delegate appliance; a missing list reads as empty. */
  ips: readonly string[];
  /** Storage repositories the delegate sees, when listed. */
  srs?: readonly string[];
  /** The SR holding the delegate's image, when named. */
  imageSr?: string;
}

function stringField(endpoint: EndpointSpec | Record<string, unknown>, name: string): string | undefined {
  const value = (endpoint as Record<string, unknown>)[name];
  return typeof value === 'string' && value.length > 0 ? value : undefined;
}

function stringList(value: unknown): string[] | undefined {
  return Array.isArray(value) ? value.filter((item): item is string => typeof item === 'string') : undefined;
}

/** The side's Xen pool (`pool`), when it names one. */
export function poolOf(endpoint: EndpointSpec): string | undefined {
  return stringField(endpoint, 'pool');
}

/** The side's storage repository (`sr`), when it names one. */
export function srOf(endpoint: EndpointSpec): string | undefined {
  return stringField(endpoint, 'sr');
}

/** The side's `abd` section, when it has one. */
export function abdOf(endpoint: EndpointSpec): AbdFields | undefined {
  const abd = (endpoint as Record<string, unknown>).abd;
  if (abd === null || typeof abd !== 'object' || Array.isArray(abd)) return undefined;
  const section = abd as Record<string, unknown>;
  const srs = stringList(section.srs);
  const imageSr = stringField(section, 'imageSr');
  return {
    ips: stringList(section.ips) ?? [],
    ...(srs ? { srs } : {}),
    ...(imageSr ? { imageSr } : {}),
  };
}
