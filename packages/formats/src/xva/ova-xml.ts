import { FormatError } from '@replikit/core';
import { printable } from '../cursor.js';

/** A value of XAPI's XML-RPC encoding, as used in `ova.xml`. */
export type XapiValue = string | number | boolean | XapiValue[] | { [key: string]: XapiValue };

const escapeXml = (text: string) =>
  text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** Encodes a value the way XAPI writes `ova.xml` (strings bare, maps as structs, sets as arrays). */
export function encodeXapi(value: XapiValue): string {
  if (typeof value === 'string') return `<value>${escapeXml(value)}</value>`;
  if (typeof value === 'boolean') return `<value><boolean>${value ? 1 : 0}</boolean></value>`;
  if (typeof value === 'number') {
    return Number.isInteger(value) ? `<value><i4>${value}</i4></value>` : `<value><double>${value}</double></value>`;
  }
  if (Array.isArray(value)) return `<value><array><data>${value.map(encodeXapi).join('')}</data></array></value>`;
  const members = Object.entries(value)
    .map(([k, v]) => `<member><name>${escapeXml(k)}</name>${encodeXapi(v)}</member>`)
    .join('');
  return `<value><struct>${members}</struct></value>`;
}

const MAX_DEPTH = 64;

/**
 * Decodes XAPI's XML-RPC values (`ova.xml`). A small strict parser: elements `value`, `struct`,
 * `member`, `name`, `array`, `data`, `string`, `i4`, `int`, `boolean`, `double`; nesting is capped.
 */
export function decodeXapi(xml: string, file: string): XapiValue {
  let pos = 0;
  const fail = (message: string): never => {
    throw new FormatError(`${file}: ova.xml at character ${pos}: ${message}`);
  };
  const skipSpace = () => {
    while (pos < xml.length && /\s/.test(xml[pos]!)) pos++;
  };
  const skipProlog = () => {
    skipSpace();
    while (xml.startsWith('<?', pos) || xml.startsWith('<!--', pos)) {
      const end = xml.indexOf(xml.startsWith('<?', pos) ? '?>' : '-->', pos);
      if (end === -1) fail('unterminated declaration');
      pos = end + (xml.startsWith('?>', end) ? 2 : 3);
      skipSpace();
    }
  };
  const open = (tag: string): boolean => {
    skipSpace();
    if (xml.startsWith(`<${tag}/>`, pos)) {
      pos += tag.length + 3;
      return false; // empty element
    }
    if (!xml.startsWith(`<${tag}>`, pos)) fail(`expected <${tag}>, found '${printable(xml.slice(pos, pos + 20))}'`);
    pos += tag.length + 2;
    return true;
  };
  const close = (tag: string) => {
    skipSpace();
    if (!xml.startsWith(`</${tag}>`, pos)) fail(`expected </${tag}>, found '${printable(xml.slice(pos, pos + 20))}'`);
    pos += tag.length + 3;
  };
  const text = (): string => {
    const end = xml.indexOf('<', pos);
    if (end === -1) fail('unterminated text');
    const raw = xml.slice(pos, end);
    pos = end;
    return raw.replace(/&(lt|gt|amp|quot|apos|#\d+|#x[0-9a-f]+);/gi, (_, e: string) => {
      const map: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };
      if (e[0] === '#') {
        const code = e[1] === 'x' || e[1] === 'X' ? Number.parseInt(e.slice(2), 16) : Number.parseInt(e.slice(1), 10);
        return code <= 0x10ffff ? String.fromCodePoint(code) : '';
      }
      return map[e.toLowerCase()] ?? '';
    });
  };
  const value = (depth: number): XapiValue => {
    if (depth > MAX_DEPTH) fail(`values nested deeper than ${MAX_DEPTH}`);
    if (!open('value')) return '';
    const before = pos;
    skipSpace();
    let result: XapiValue;
    if (xml.startsWith('<struct', pos)) {
      const obj: Record<string, XapiValue> = {};
      if (open('struct')) {
        skipSpace();
        while (xml.startsWith('<member>', pos)) {
          open('member');
          open('name');
          const key = text();
          close('name');
          obj[key] = value(depth + 1);
          close('member');
          skipSpace();
        }
        close('struct');
      }
      result = obj;
    } else if (xml.startsWith('<array', pos)) {
      const list: XapiValue[] = [];
      if (open('array')) {
        if (open('data')) {
          skipSpace();
          while (xml.startsWith('<value', pos)) {
            list.push(value(depth + 1));
            skipSpace();
          }
          close('data');
        }
        close('array');
      }
      result = list;
    } else if (xml.startsWith('<boolean>', pos)) {
      open('boolean');
      result = text().trim() === '1';
      close('boolean');
    } else if (xml.startsWith('<i4>', pos) || xml.startsWith('<int>', pos) || xml.startsWith('<double>', pos)) {
      const tag = xml.startsWith('<i4>', pos) ? 'i4' : xml.startsWith('<int>', pos) ? 'int' : 'double';
      open(tag);
      result = Number(text().trim());
      close(tag);
    } else if (xml.startsWith('<string', pos)) {
      if (open('string')) {
        result = text();
        close('string');
      } else {
        result = '';
      }
    } else {
      pos = before;
      result = text();
    }
    close('value');
    return result;
  };
  skipProlog();
  return value(0);
}
