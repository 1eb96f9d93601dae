import { FormatError } from '@replikit/core';
import {
  decodeXapi,
  encodeXapi,
  parseTarHeader,
  TAR_BLOCK,
  tarHeader,
  tarPadding,
  type XapiValue,
} from '@replikit/formats';

/** The largest `ova.xml` read into memory to be marked (XAPI's are a few KiB per object). */
const MAX_OVA_XML = 16 * 1024 * 1024;

type Struct = { [key: string]: XapiValue };
const isStruct = (v: XapiValue | undefined): v is Struct => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Passes an XVA through, with `marks` set (and the keys of `drop` removed) in the `other_config`
 * of every VM its `ova.xml` describes: the VM an import creates is then born marked, so that a
 * run killed right after the import still finds it by its marks. `ova.xml` must be the first
 * entry, as XAPI writes it; everything after it is passed on unchanged.
 *
 * @throws `E_FORMAT` when the stream does not start with `ova.xml`.
 */
export async function* markOvaXml(
  body: AsyncIterable<Uint8Array>,
  marks: Record<string, string>,
  drop: readonly string[] = [],
): AsyncGenerator<Uint8Array> {
  const iterator = body[Symbol.asyncIterator]();
  let held = new Uint8Array(0);
  const fill = async (n: number): Promise<void> => {
    while (held.length < n) {
      const next = await iterator.next();
      if (next.done) throw new FormatError(`the XVA export ended after ${held.length} bytes, inside its ova.xml`);
      const joined = new Uint8Array(held.length + next.value.length);
      joined.set(held);
      joined.set(next.value, held.length);
      held = joined;
    }
  };
  try {
    await fill(TAR_BLOCK);
    const entry = parseTarHeader(held.subarray(0, TAR_BLOCK), 0, 'XVA export');
    if (entry?.name !== 'ova.xml' || entry.size > MAX_OVA_XML) {
      throw new FormatError(`the XVA export does not start with ova.xml (found '${entry?.name ?? 'the end'}')`);
    }
    const stored = TAR_BLOCK + entry.size + tarPadding(entry.size).length;
    await fill(stored);
    const xml = new TextDecoder().decode(held.subarray(TAR_BLOCK, TAR_BLOCK + entry.size));
    const marked = new TextEncoder().encode(encodeXapi(markVms(decodeXapi(xml, 'XVA export'), marks, drop)));
    yield tarHeader('ova.xml', marked.length, 0);
    yield marked;
    yield tarPadding(marked.length);
    if (held.length > stored) yield held.subarray(stored);
    held = new Uint8Array(0);
    for (;;) {
      const next = await iterator.next();
      if (next.done) return;
      yield next.value;
    }
  } finally {
    await iterator.return?.();
  }
}

/** `ova.xml`'s value with the marks set in each `VM` object's `other_config`. */
function markVms(ova: XapiValue, marks: Record<string, string>, drop: readonly string[]): XapiValue {
  const objects = isStruct(ova) ? ova.objects : undefined;
  if (!Array.isArray(objects)) throw new FormatError('the XVA export has an ova.xml without objects');
  let vms = 0;
  for (const object of objects) {
    if (!isStruct(object) || object.class !== 'VM' || !isStruct(object.snapshot)) continue;
    const config: Struct = isStruct(object.snapshot.other_config) ? { ...object.snapshot.other_config } : {};
    for (const key of drop) delete config[key];
    object.snapshot.other_config = { ...config, ...marks };
    vms++;
  }
  if (vms === 0) throw new FormatError('the XVA export describes no VM');
  return ova;
}
