import type { Wire } from '../model/wire.js';
import { fault } from '../xapi-fault.js';

const escapeXml = (text: string) => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

const unescapeXml = (text: string) =>
  text
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&apos;/g, "'")
    .replace(/&#(\d+);/g, (_, n: string) => String.fromCodePoint(Number(n)))
    .replace(/&amp;/g, '&');

/**
 * Encodes a value as XAPI's XML-RPC does: strings bare in `<value>`, integers as bare strings
 * (XAPI's int64), floats as `<double>`, booleans, sets as arrays and maps as structs. Task results
 * use the same encoding.
 */
export function encodeXmlValue(value: Wire): string {
  if (typeof value === 'string') return `<value>${escapeXml(value)}</value>`;
  if (typeof value === 'boolean') return `<value><boolean>${value ? 1 : 0}</boolean></value>`;
  if (typeof value === 'number') {
    return Number.isInteger(value) ? `<value>${value}</value>` : `<value><double>${value}</double></value>`;
  }
  if (Array.isArray(value)) return `<value><array><data>${value.map(encodeXmlValue).join('')}</data></array></value>`;
  const members = Object.entries(value)
    .map(([k, v]) => `<member><name>${escapeXml(k)}</name>${encodeXmlValue(v)}</member>`)
    .join('');
  return `<value><struct>${members}</struct></value>`;
}

const MAX_DEPTH = 32;

/** A strict, small reader of XML-RPC `<value>` trees; malformed input is a XAPI parse fault. */
export class XmlReader {
  private pos = 0;
  constructor(private readonly xml: string) {}

  /** Skips the prolog (`<?xml …?>`) and white space. */
  prolog(): void {
    this.space();
    if (this.xml.startsWith('<?', this.pos)) {
      const end = this.xml.indexOf('?>', this.pos);
      if (end < 0) this.fail('unterminated declaration');
      this.pos = end + 2;
    }
  }

  /** Consumes `<tag>`; false if the element is empty (`<tag/>`). */
  open(tag: string): boolean {
    this.space();
    const empty = this.emptyElement(tag);
    if (empty > 0) {
      this.pos += empty;
      return false;
    }
    if (!this.xml.startsWith(`<${tag}>`, this.pos)) this.fail(`expected <${tag}>`);
    this.pos += tag.length + 2;
    return true;
  }

  /** Consumes `</tag>`. */
  close(tag: string): void {
    this.space();
    if (!this.xml.startsWith(`</${tag}>`, this.pos)) this.fail(`expected </${tag}>`);
    this.pos += tag.length + 3;
  }

  /** True if the next element is `<tag>` or `<tag/>`. */
  peek(tag: string): boolean {
    this.space();
    return this.xml.startsWith(`<${tag}>`, this.pos) || this.emptyElement(tag) > 0;
  }

  /** The length of `<tag/>` or `<tag />` at the cursor, or 0. */
  private emptyElement(tag: string): number {
    if (!this.xml.startsWith(`<${tag}`, this.pos)) return 0;
    let i = this.pos + tag.length + 1;
    while (this.xml[i] === ' ') i++;
    return this.xml.startsWith('/>', i) ? i + 2 - this.pos : 0;
  }

  /** Text up to the next `<`. */
  text(): string {
    const end = this.xml.indexOf('<', this.pos);
    if (end < 0) this.fail('unterminated text');
    const text = this.xml.slice(this.pos, end);
    this.pos = end;
    return unescapeXml(text);
  }

  /** Reads one `<value>`. */
  value(depth = 0): Wire {
    if (depth > MAX_DEPTH) this.fail('nesting too deep');
    if (!this.open('value')) return '';
    const save = this.pos;
    this.space();
    if (this.xml.startsWith('</value>', this.pos)) {
      this.pos = save;
      const text = this.text();
      this.close('value');
      return text;
    }
    if (this.xml[this.pos] !== '<') {
      this.pos = save;
      const text = this.text();
      this.close('value');
      return text;
    }
    const tagEnd = this.xml.indexOf('>', this.pos);
    if (tagEnd < 0) this.fail('unterminated tag');
    const tag = this.xml.slice(this.pos + 1, tagEnd).replace(/\s*\/$/, '');
    let result: Wire;
    switch (tag) {
      case 'string':
      case 'dateTime.iso8601':
      case 'base64':
        result = this.open(tag) ? this.closeAfter(tag, this.text()) : '';
        break;
      case 'int':
      case 'i4':
      case 'i8':
      case 'double': {
        const text = this.open(tag) ? this.closeAfter(tag, this.text()) : '';
        const n = Number(text);
        if (text.trim() === '' || !Number.isFinite(n)) this.fail(`bad number '${text.slice(0, 20)}'`);
        result = n;
        break;
      }
      case 'boolean': {
        const text = this.open(tag) ? this.closeAfter(tag, this.text()).trim() : '';
        if (text !== '0' && text !== '1') this.fail('bad boolean');
        result = text === '1';
        break;
      }
      case 'nil':
        this.open('nil');
        result = '';
        break;
      case 'array': {
        const items: Wire[] = [];
        if (this.open('array')) {
          if (this.open('data')) {
            while (this.peek('value')) items.push(this.value(depth + 1));
            this.close('data');
          }
          this.close('array');
        }
        result = items;
        break;
      }
      case 'struct': {
        const map: Record<string, Wire> = {};
        if (this.open('struct')) {
          while (this.peek('member')) {
            this.open('member');
            this.open('name');
            const name = this.text();
            this.close('name');
            map[name] = this.value(depth + 1);
            this.close('member');
          }
          this.close('struct');
        }
        result = map;
        break;
      }
      default:
        this.fail(`unknown element <${tag.slice(0, 20)}>`);
    }
    this.close('value');
    return result!;
  }

  /** Fails unless only white space is left. */
  end(): void {
    this.space();
    if (this.pos !== this.xml.length) this.fail('trailing content');
  }

  private closeAfter<T>(tag: string, value: T): T {
    this.close(tag);
    return value;
  }

  private space(): void {
    while (this.pos < this.xml.length && /\s/.test(this.xml[this.pos]!)) this.pos++;
  }

  private fail(message: string): never {
    throw fault('XMLRPC_UNMARSHAL_FAILURE', message, String(this.pos));
  }
}

/** Parses an XML-RPC `methodCall` into its method name and parameters. */
export function parseMethodCall(xml: string): { method: string; params: Wire[] } {
  const reader = new XmlReader(xml);
  reader.prolog();
  reader.open('methodCall');
  reader.open('methodName');
  const method = reader.text().trim();
  reader.close('methodName');
  const params: Wire[] = [];
  if (reader.peek('params') && reader.open('params')) {
    while (reader.peek('param')) {
      reader.open('param');
      params.push(reader.value());
      reader.close('param');
    }
    reader.close('params');
  }
  reader.close('methodCall');
  reader.end();
  return { method, params };
}

/** An XML-RPC `methodResponse` carrying XAPI's `{Status, Value|ErrorDescription}` struct. */
export function methodResponse(body: Record<string, Wire>): string {
  return `<?xml version="1.0"?><methodResponse><params><param>${encodeXmlValue(body)}</param></params></methodResponse>`;
}
