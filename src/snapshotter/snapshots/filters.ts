/**
 * containerd's filter syntax (pkg/filters), as List/Walk take it:
 *
 *   selectors := selector ("," selector)*        all must match
 *   selector  := fieldpath (operator value)?     no operator: the field is present
 *   fieldpath := field ("." field)*
 *   field     := quoted | [A-Za-z0-9_]+
 *   operator  := "==" | "!=" | "~="              ~= is a regular expression
 *   value     := quoted | [^\s,]+
 *   quoted    := a Go string quoted with ", / or |
 *
 * Several filters match when any of them does; none matches everything. The fields of a
 * snapshot are kind (active, view, committed), name, parent and labels.<key>
 * (`labels."containerd.io/snapshot.ref"==sha256:…`), as containerd's storage adaptor
 * reads them. A filter that does not parse is EINVAL (containerd's InvalidArgument).
 */
import { fail } from '../../errors.js';

/** The fields a filter can look at: the value of a field path, or undefined when absent. */
export type Adaptor = (fieldpath: string[]) => string | undefined;

type Operator = 'present' | '==' | '!=' | '~=';

interface Selector {
  fieldpath: string[];
  op: Operator;
  value: string;
  re?: RegExp;
}

/** A parsed filter list: `match` is true when any filter matches (all, for an empty list). */
export interface Filter {
  match(adaptor: Adaptor): boolean;
}

/** Parse `filters` (EINVAL naming the one that does not parse). */
export function parseFilters(filters: readonly string[]): Filter {
  const parsed = filters.map(parseOne);
  return {
    match: (adaptor) => parsed.length === 0 || parsed.some((sels) => sels.every((s) => matches(s, adaptor))),
  };
}

function matches(s: Selector, adaptor: Adaptor): boolean {
  const v = adaptor(s.fieldpath);
  switch (s.op) {
    case 'present':
      return v !== undefined;
    case '==':
      return v !== undefined && v === s.value;
    case '!=':
      return (v ?? '') !== s.value;
    case '~=':
      return s.re!.test(v ?? '');
  }
}

const QUOTES = new Set(['"', '/', '|']);
const isField = (c: string) => /^[A-Za-z0-9_]$/.test(c);
const isSpace = (c: string) => /^\s$/u.test(c);

/** One filter string: its selectors (an empty string matches everything). */
function parseOne(input: string): Selector[] {
  const bad = (why: string): never => {
    throw fail('EINVAL', 'list', input, `bad snapshot filter: ${why}`);
  };
  const chars = [...input];
  let i = 0;
  const skipSpace = () => {
    while (i < chars.length && isSpace(chars[i]!)) i++;
  };
  const quoted = (): string => {
    const q = chars[i++]!;
    let out = '';
    for (;;) {
      if (i >= chars.length || chars[i] === '\n') bad('a quoted literal is not terminated');
      const c = chars[i++]!;
      if (c === q) return out;
      if (c !== '\\') {
        out += c;
        continue;
      }
      out += unescape(q);
    }
  };
  const unescape = (q: string): string => {
    const c = chars[i++];
    const simple: Record<string, string> = { a: '\x07', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v', '\\': '\\' };
    if (c === undefined) return bad('a quoted literal is not terminated');
    if (c in simple) return simple[c]!;
    if (c === q) return c;
    const hex = (n: number) => {
      const h = chars.slice(i, i + n).join('');
      if (!new RegExp(`^[0-9A-Fa-f]{${n}}$`).test(h)) bad(`bad escape \\${c}${h}`);
      i += n;
      return String.fromCodePoint(parseInt(h, 16));
    };
    if (c === 'x') return hex(2);
    if (c === 'u') return hex(4);
    if (c === 'U') return hex(8);
    if (/[0-7]/.test(c)) {
      const o = c + chars.slice(i, i + 2).join('');
      if (!/^[0-7]{3}$/.test(o)) bad(`bad escape \\${o}`);
      i += 2;
      return String.fromCodePoint(parseInt(o, 8));
    }
    return bad(`unknown escape \\${c}`);
  };
  const field = (): string => {
    skipSpace();
    if (i < chars.length && QUOTES.has(chars[i]!)) return quoted();
    const start = i;
    while (i < chars.length && isField(chars[i]!)) i++;
    if (i === start) bad(i < chars.length ? `unexpected '${chars[i]}' where a field name belongs` : 'a field name is missing');
    return chars.slice(start, i).join('');
  };
  const value = (): string => {
    skipSpace();
    if (i < chars.length && QUOTES.has(chars[i]!)) return quoted();
    const start = i;
    while (i < chars.length && chars[i] !== ',' && !isSpace(chars[i]!)) i++;
    if (i === start) bad('a value is missing after the operator');
    return chars.slice(start, i).join('');
  };

  skipSpace();
  if (i >= chars.length) return [];
  const selectors: Selector[] = [];
  for (;;) {
    const fieldpath = [field()];
    for (;;) {
      skipSpace();
      if (chars[i] !== '.') break;
      i++;
      fieldpath.push(field());
    }
    skipSpace();
    let op: Operator = 'present';
    let v = '';
    const two = chars.slice(i, i + 2).join('');
    if (two === '==' || two === '!=' || two === '~=') {
      op = two;
      i += 2;
      v = value();
    } else if (i < chars.length && /[=!~]/.test(chars[i]!)) bad(`unknown operator near '${chars.slice(i, i + 3).join('')}'`);
    const sel: Selector = { fieldpath, op, value: v };
    if (op === '~=') {
      try {
        sel.re = new RegExp(v, 'u');
      } catch (err) {
        bad(`bad regular expression '${v}' (${(err as Error).message})`);
      }
    }
    selectors.push(sel);
    skipSpace();
    if (i >= chars.length) return selectors;
    if (chars[i] !== ',') bad(`unexpected '${chars[i]}' after a selector`);
    i++;
  }
}
