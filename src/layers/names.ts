/**
 * Names inside a layer: where an archive entry lands in the filesystem, and OCI's
 * whiteout names. This is the only module of thinfs that knows `.wh.` names; the
 * filesystem itself represents whiteouts and opaque directories its own way (fs/).
 *
 * Escapes. An entry name is taken relative to the root of the image:
 *  - a leading `./` (what `tar -C dir .` writes) and trailing slashes are dropped;
 *  - an absolute name (`/etc/passwd`) is refused, not stripped: DESIGN.md §8 asks for
 *    refusal, and a layer produced by docker/buildah/GNU tar never holds one;
 *  - any `..` component is refused, even one that would stay inside (`a/../b`):
 *    no real layer needs it, and refusing is easier to trust than resolving;
 *  - hard link targets obey the same rules (they name an earlier entry of the archive).
 * Symlink targets are data, never resolved here (absolute symlinks are normal in a
 * rootfs), and the filesystem never follows a symlink inside a path: an entry whose
 * parent is a symlink fails with ENOTDIR, so extraction can't be led outside the image.
 *
 * Names here are byte strings (fs/bytes.ts), as the importers read them: only '/', '.',
 * NUL and the ASCII `.wh.` prefix mean anything, so no byte is ever decoded.
 */
import { fail } from '../errors.js';
import { toText } from '../fs/index.js';

/** OCI whiteout prefix: `.wh.NAME` hides NAME of the layers below. */
const WH_PREFIX = '.wh.';
/** OCI opaque marker: `DIR/.wh..wh..opq` hides everything below DIR in the layers below. */
export const OPAQUE_MARKER = '.wh..wh..opq';
/** AUFS bookkeeping names (`.wh..wh.plnk`, `.wh..wh.aufs`): carry no meaning in a layer. */
const WH_META_PREFIX = '.wh..wh.';

/** What an entry name means for the layer. */
export type NameKind =
  | { kind: 'entry'; path: string }
  | { kind: 'whiteout'; dir: string; name: string; path: string }
  | { kind: 'opaque'; dir: string }
  | { kind: 'ignored' };

/**
 * The filesystem path (`/a/b`, `/` for the root) of archive name `raw`; throws EINVAL
 * naming the entry when it is absolute, has a `..` component, or is empty.
 */
export function archivePath(raw: string, source: string, what = 'entry'): string {
  if (raw.length === 0) throw refuse(source, what, raw, 'has an empty name');
  if (raw.includes('\0')) throw refuse(source, what, raw, 'contains a NUL byte');
  if (raw.startsWith('/')) throw refuse(source, what, raw, 'is an absolute path (it would land outside the image root)');
  const parts: string[] = [];
  for (const c of raw.split('/')) {
    if (c === '' || c === '.') continue;
    if (c === '..') throw refuse(source, what, raw, "has a '..' component (it could escape the image root)");
    parts.push(c);
  }
  return parts.length === 0 ? '/' : `/${parts.join('/')}`;
}

/** Classify an already validated path: a plain entry, a whiteout, an opaque marker, or AUFS noise. */
export function classify(path: string): NameKind {
  if (path === '/') return { kind: 'entry', path };
  const slash = path.lastIndexOf('/');
  const base = path.slice(slash + 1);
  if (!base.startsWith(WH_PREFIX)) return { kind: 'entry', path };
  const dir = slash === 0 ? '/' : path.slice(0, slash);
  if (base === OPAQUE_MARKER) return { kind: 'opaque', dir };
  if (base.startsWith(WH_META_PREFIX)) return { kind: 'ignored' };
  const name = base.slice(WH_PREFIX.length);
  if (name === '' || name === '.' || name === '..') return { kind: 'ignored' };
  return { kind: 'whiteout', dir, name, path: dir === '/' ? `/${name}` : `${dir}/${name}` };
}

/** The archive name of a whiteout hiding `name` (for export). */
export function whiteoutName(name: string): string {
  return `${WH_PREFIX}${name}`;
}

/** True when a name would be read back as a whiteout or marker (an export can't carry such a file as data). */
export function isWhiteoutName(name: string): boolean {
  return name.startsWith(WH_PREFIX);
}

function refuse(source: string, what: string, raw: string, why: string) {
  return fail('EINVAL', 'import', source, `${what} '${toText(raw)}' ${why}; refused`);
}
