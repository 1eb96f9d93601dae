/** The .NET type a simulated cmdlet's output object stands for (read by Select-Object). */
const TYPE = Symbol('replikit.hyperv-sim.type');

/** Tags a cmdlet's view with the documented type it stands for; returns the same object. */
export function typed<T extends object>(typeName: string, view: T): T {
  Object.defineProperty(view, TYPE, { value: typeName, enumerable: false });
  return view;
}

/** The documented type a view was tagged with, `undefined` for an untyped value. */
export function typeOf(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  return (value as { [TYPE]?: string })[TYPE];
}
