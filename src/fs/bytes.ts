/**
 * Names are bytes — the one place that says how thinfs holds them.
 *
 * Linux names are byte strings: any byte but '/' and NUL, no encoding. thinfs keeps every
 * file name, path, symlink target and xattr name byte-exact from the kernel (or an
 * archive, or a host directory) to the metadata and back, and never decodes one as UTF-8
 * to decide what it is.
 *
 * Representation. In JS such a value is a BYTE STRING: a string with one char per byte,
 * the latin1 decoding of the raw bytes (char codes 0-255 only). So `x\xe9` and `x\xe8`
 * (no UTF-8 at all) are the two-char strings 'x\u00e9' and 'x\u00e8', and the UTF-8 name
 * `café` (63 61 66 c3 a9) is the five-char string 'caf\u00c3\u00a9'. Comparison, hashing,
 * Map keys, `split('/')` and `length` (= bytes) all work on the raw bytes, and
 * string-keyed caches stay cheap. Every path argument and result of the fs/ API
 * (Filesystem, DirEntry.name, Change.path, readlink, listxattr) is a byte string.
 *
 * Conversion happens only at the edges, with the helpers below:
 *  - FUSE: fuse-native's low-level mode (native-deps/fuse-native/) creates its name
 *    arguments with napi_create_string_latin1 and writes the names handed back
 *    (readdir, readlink, notify) as latin1, and fuse/ builds listxattr's reply with
 *    Buffer latin1, so fuse/ passes strings through untouched;
 *  - SQLite: names, targets and xattr names are BLOB columns holding the raw bytes
 *    (schema.ts, migration 2): `bytesOf` to bind, `byteString` to read;
 *  - node:fs (directory import): Buffer paths and `{ encoding: 'buffer' }` results;
 *  - tar: header fields and PAX path/linkpath records are copied as raw bytes (layers/);
 *  - text a person typed or a JS literal (CLI arguments, tests): `fromText` (UTF-8);
 *  - messages and logs for a person: `toText` (UTF-8 where valid, `\xNN` otherwise) —
 *    for display only, never for identity.
 */

/** A name or path as thinfs handles it: one char per byte (see the top of this file). */
export type ByteString = string;

const NON_BYTE = /[^\x00-\xff]/;
const HIGH = /[\x80-\xff]/;

/** The raw bytes of byte string `s`. */
export function bytesOf(s: ByteString): Buffer {
  return Buffer.from(s, 'latin1');
}

/** The byte string of raw bytes `b` (a name from SQLite, node:fs or an archive). */
export function byteString(b: Uint8Array): ByteString {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('latin1');
}

/** The byte string of text `s` as UTF-8 (a name a person typed, a literal in code). */
export function fromText(s: string): ByteString {
  return HIGH.test(s) || NON_BYTE.test(s) ? Buffer.from(s, 'utf8').toString('latin1') : s;
}

/** True when every char of `s` is a byte (0-255): it can be a byte string. */
export function isByteString(s: string): boolean {
  return !NON_BYTE.test(s);
}

/**
 * Byte string `s` for a person to read: valid UTF-8 decoded, every other byte as `\xNN`
 * (a backslash itself stays as is). Display only: two names may print alike.
 */
export function toText(s: ByteString): string {
  if (!HIGH.test(s)) return s;
  const b = bytesOf(s);
  const decoded = b.toString('utf8');
  if (!decoded.includes('\uFFFD')) return decoded;
  let out = '';
  let i = 0;
  while (i < b.length) {
    const n = utf8SequenceLength(b, i);
    if (n > 0) {
      out += b.toString('utf8', i, i + n);
      i += n;
    } else {
      out += `\\x${b[i]!.toString(16).padStart(2, '0')}`;
      i += 1;
    }
  }
  return out;
}

/** Length of the well-formed UTF-8 sequence at `b[i]` (RFC 3629: no overlongs, no surrogates), or 0. */
function utf8SequenceLength(b: Buffer, i: number): number {
  const c = b[i]!;
  if (c < 0x80) return 1;
  const cont = (k: number, lo = 0x80, hi = 0xbf) => i + k < b.length && b[i + k]! >= lo && b[i + k]! <= hi;
  if (c >= 0xc2 && c <= 0xdf) return cont(1) ? 2 : 0;
  if (c === 0xe0) return cont(1, 0xa0) && cont(2) ? 3 : 0;
  if ((c >= 0xe1 && c <= 0xec) || c === 0xee || c === 0xef) return cont(1) && cont(2) ? 3 : 0;
  if (c === 0xed) return cont(1, 0x80, 0x9f) && cont(2) ? 3 : 0;
  if (c === 0xf0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
  if (c >= 0xf1 && c <= 0xf3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
  if (c === 0xf4) return cont(1, 0x80, 0x8f) && cont(2) && cont(3) ? 4 : 0;
  return 0;
}
