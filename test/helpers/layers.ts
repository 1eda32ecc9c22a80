/**
 * Layer sources built at test time: the busybox rootfs (fixtures/build-busybox-rootfs.sh),
 * hand-made tars (node-tar's Header for the ustar blocks, PAX records written here so
 * binary xattrs and nanosecond times can be tested), and the whiteout layer of the image
 * chain tests.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as zlib from 'node:zlib';
import { Header } from 'tar';

const PROJECT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BUSYBOX = '/bin/busybox';

/** True when Debian's busybox-static is installed (the image tests need it). */
export function haveBusybox(): boolean {
  return fs.existsSync(BUSYBOX) && spawnSync('ldd', [BUSYBOX]).status !== 0;
}

/** Build the busybox rootfs in `dest`; returns the applet names. */
export function buildBusyboxRootfs(dest: string): string[] {
  const r = spawnSync('sh', [path.join(PROJECT, 'fixtures', 'build-busybox-rootfs.sh'), dest], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`build-busybox-rootfs.sh failed: ${r.stderr}`);
  return fs.readdirSync(path.join(dest, 'bin')).filter((n) => n !== 'busybox');
}

export interface TarEntry {
  path: string;
  type?: 'file' | 'dir' | 'symlink' | 'link' | 'char' | 'block' | 'fifo';
  data?: string | Buffer;
  mode?: number;
  uid?: number;
  gid?: number;
  /** Seconds since the epoch (ustar field); see `pax` for nanoseconds. */
  mtime?: number;
  linkpath?: string;
  devmaj?: number;
  devmin?: number;
  /** Raw PAX records written in an 'x' header before the entry. */
  pax?: Record<string, string | Buffer>;
}

const TYPES = { file: 'File', dir: 'Directory', symlink: 'SymbolicLink', link: 'Link', char: 'CharacterDevice', block: 'BlockDevice', fifo: 'FIFO' } as const;

function block(h: ConstructorParameters<typeof Header>[0]): Buffer {
  const buf = Buffer.alloc(512);
  new Header(h).encode(buf, 0);
  return buf;
}

function padded(data: Buffer): Buffer[] {
  const pad = (512 - (data.length % 512)) % 512;
  return [data, Buffer.alloc(pad)];
}

/** PAX records: `LEN KEY=VALUE\n`, LEN counting itself. */
export function paxBody(records: Record<string, string | Buffer>): Buffer {
  const parts: Buffer[] = [];
  for (const [k, v] of Object.entries(records)) {
    const rest = Buffer.concat([Buffer.from(` ${k}=`), Buffer.isBuffer(v) ? v : Buffer.from(v), Buffer.from('\n')]);
    let len = rest.length + 1;
    while (String(len).length + rest.length !== len) len = String(len).length + rest.length;
    parts.push(Buffer.concat([Buffer.from(String(len)), rest]));
  }
  return Buffer.concat(parts);
}

/** A tar of `entries`; `end: false` leaves out the end-of-archive blocks. */
export function makeTar(entries: TarEntry[], opts: { end?: boolean } = {}): Buffer {
  const out: Buffer[] = [];
  for (const e of entries) {
    const type = e.type ?? (e.path.endsWith('/') ? 'dir' : 'file');
    const data = type === 'file' ? (Buffer.isBuffer(e.data) ? e.data : Buffer.from(e.data ?? '')) : Buffer.alloc(0);
    const mtime = new Date((e.mtime ?? 1_700_000_000) * 1000);
    if (e.pax !== undefined) {
      const body = paxBody(e.pax);
      out.push(block({ path: `PaxHeader/${path.basename(e.path)}`.slice(0, 99), type: 'ExtendedHeader', size: body.length, mode: 0o644, mtime, uid: 0, gid: 0 }));
      out.push(...padded(body));
    }
    out.push(
      block({
        path: e.path,
        type: TYPES[type],
        size: data.length,
        mode: e.mode ?? (type === 'dir' ? 0o755 : 0o644),
        uid: e.uid ?? 0,
        gid: e.gid ?? 0,
        mtime,
        linkpath: e.linkpath ?? '',
        uname: '',
        gname: '',
        devmaj: e.devmaj ?? 0,
        devmin: e.devmin ?? 0,
      }),
    );
    if (data.length > 0) out.push(...padded(data));
  }
  if (opts.end ?? true) out.push(Buffer.alloc(1024));
  return Buffer.concat(out);
}

/** Write `makeTar(entries)` to `file` (gzip-compressed with `gzip`); returns `file`. */
export function writeTar(file: string, entries: TarEntry[], opts: { end?: boolean; gzip?: boolean } = {}): string {
  const tar = makeTar(entries, opts);
  fs.writeFileSync(file, opts.gzip === true ? zlib.gzipSync(tar) : tar);
  return file;
}

/**
 * The second layer of the image chain, over the busybox rootfs:
 *  - /etc/motd and the applet /bin/vi whited out, /usr/share (a directory) whited out;
 *  - /var/lib/app made opaque (its a, b, sub/x hidden) with a new file c in it;
 *  - a new /etc/hostname and a replaced /etc/passwd (a lower file replaced).
 * Written with GNU-tar-like ordering: the opaque marker right after its directory.
 */
export function writeWhiteoutLayer(file: string, opts: { gzip?: boolean } = {}): string {
  return writeTar(
    file,
    [
      { path: 'etc/', type: 'dir', mode: 0o755 },
      { path: 'etc/.wh.motd' },
      { path: 'etc/hostname', data: 'thinfs-test\n' },
      { path: 'etc/passwd', data: 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n' },
      { path: 'bin/.wh.vi' },
      { path: 'usr/.wh.share' },
      { path: 'var/lib/app/', type: 'dir', mode: 0o750, uid: 1000, gid: 1000 },
      { path: 'var/lib/app/.wh..wh..opq' },
      { path: 'var/lib/app/c', data: 'c from layer 2\n', uid: 1000, gid: 1000 },
    ],
    opts,
  );
}
