/**
 * A real image built at test time with Debian's umoci and skopeo, in every form `load`
 * takes, and tree fingerprints to compare a thinfs view with `umoci unpack`.
 *
 * The image (tag `t`): three layers and a config.
 *  1. umoci repack of a tree with owners, modes (setuid, sticky, 0750 dirs), a symlink,
 *     a hard link, a device node, a fifo, xattrs (user.* and a binary security.capability),
 *     a sparse file, a name that is not UTF-8, and directories to be hidden later;
 *  2. umoci repack after deleting a file (a whiteout), a whole directory, changing a
 *     file's data and a directory's mode and owner;
 *  3. umoci raw add-layer of a hand-made tar holding an opaque directory
 *     (`opq/.wh..wh..opq`) with a new file in it.
 *  config: Cmd, Entrypoint, Env, WorkingDir, User, a label.
 * Forms: the layout (oci:DIR:t), skopeo's oci-archive and docker-archive copies, a copy
 * of the layout with zstd layers, and a gzip'ed docker archive.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { constants as fsc } from 'node:fs';
import type { Filesystem } from '../../src/fs/index.js';
import { readFile } from './tree.js';

export const isRoot = process.getuid?.() === 0;

/** True when a program is on the PATH. */
export function have(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

/** Why the umoci/skopeo tests can't run here, or undefined when they can. */
export function missingForImages(): string | undefined {
  if (!isRoot) return 'building the test image with owners, device nodes and security.* xattrs needs root';
  for (const c of ['umoci', 'skopeo', 'setfattr', 'getfattr', 'tar']) if (!have(c)) return `${c} is not installed (Debian packages umoci, skopeo, attr, tar)`;
  return undefined;
}

/** Run a command; throw with its stderr when it fails. */
export function run(cmd: string, args: string[], opts: { cwd?: string } = {}): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', cwd: opts.cwd });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr}${r.error?.message ?? ''}`);
  return r.stdout;
}

export interface TestImage {
  dir: string;
  /** oci:LAYOUT:t */
  layout: string;
  ociArchive: string;
  dockerArchive: string;
  /** A copy of the layout whose layers are zstd-compressed. */
  zstdLayout: string;
  /** docker-archive piped through gzip. */
  dockerArchiveGz: string;
  /** The rootfs umoci unpacks from the layout. */
  unpacked: string;
  /** A second image on the same first two layers (tag u), only its top layer differs. */
  sibling: string;
}

const BAD_NAME = Buffer.from([0x63, 0x61, 0x66, 0xe9]); // 'caf\xe9': not UTF-8

/** Build the test image under `dir` (see the top of this file). */
export function buildTestImage(dir: string): TestImage {
  const layout = path.join(dir, 'layout');
  run('umoci', ['init', '--layout', layout]);
  run('umoci', ['new', '--image', `${layout}:t`]);
  const bundle = path.join(dir, 'bundle');
  run('umoci', ['unpack', '--image', `${layout}:t`, bundle]);
  const r = path.join(bundle, 'rootfs');
  const w = (p: string, data: string | Buffer, mode = 0o644) => {
    fs.mkdirSync(path.dirname(path.join(r, p)), { recursive: true });
    fs.writeFileSync(path.join(r, p), data, { mode });
    fs.chmodSync(path.join(r, p), mode);
  };
  // layer 1
  fs.mkdirSync(path.join(r, 'etc'), { mode: 0o755 });
  w('etc/a', 'alpha\n');
  w('etc/b', 'to be deleted\n');
  w('etc/secret', 'shh\n', 0o600);
  w('usr/bin/tool', '#!/bin/sh\necho tool\n', 0o4755);
  w('opq/old', 'hidden by the opaque dir\n');
  w('opq/sub/deep', 'also hidden\n');
  w('gone/x/y', 'the whole tree goes\n');
  w('data/owned', 'by 1000\n', 0o640);
  fs.chownSync(path.join(r, 'data/owned'), 1000, 1000);
  fs.chownSync(path.join(r, 'data'), 1000, 1000);
  fs.chmodSync(path.join(r, 'data'), 0o750);
  fs.mkdirSync(path.join(r, 'tmp'));
  fs.chmodSync(path.join(r, 'tmp'), 0o1777);
  fs.symlinkSync('a', path.join(r, 'etc/sym'));
  fs.symlinkSync('/etc/a', path.join(r, 'etc/abs-sym'));
  fs.linkSync(path.join(r, 'etc/a'), path.join(r, 'etc/hard'));
  run('mknod', [path.join(r, 'null'), 'c', '1', '3']);
  run('mkfifo', [path.join(r, 'fifo')]);
  run('setfattr', ['-n', 'user.k', '-v', 'val', path.join(r, 'etc/a')]);
  run('setfattr', ['-n', 'security.capability', '-v', '0sAQAAAgAgAAAAAAAAAAAAAAAAAAA=', path.join(r, 'usr/bin/tool')]);
  const sparse = path.join(r, 'sparse');
  fs.writeFileSync(sparse, 'head');
  fs.truncateSync(sparse, 1024 * 1024);
  fs.writeFileSync(Buffer.concat([Buffer.from(`${r}/`), BAD_NAME]), 'not utf-8 name\n');
  run('umoci', ['repack', '--image', `${layout}:t`, bundle]);
  // layer 2
  fs.rmSync(path.join(bundle), { recursive: true, force: true });
  run('umoci', ['unpack', '--image', `${layout}:t`, bundle]);
  fs.rmSync(path.join(r, 'etc/b'));
  fs.rmSync(path.join(r, 'gone'), { recursive: true });
  fs.writeFileSync(path.join(r, 'etc/a'), 'alpha, changed\n'); // also changes etc/hard
  fs.chmodSync(path.join(r, 'data'), 0o700);
  fs.chownSync(path.join(r, 'data'), 1001, 1001);
  w('etc/new', 'layer two\n');
  run('umoci', ['repack', '--image', `${layout}:t`, bundle]);
  fs.rmSync(bundle, { recursive: true, force: true });
  // the sibling (tag u): the first two layers and another top
  run('umoci', ['tag', '--image', `${layout}:t`, 'u']);
  // layer 3: an opaque directory, by hand
  const l3 = path.join(dir, 'l3');
  fs.mkdirSync(path.join(l3, 'opq'), { recursive: true });
  fs.writeFileSync(path.join(l3, 'opq/new'), 'fresh\n');
  fs.writeFileSync(path.join(l3, 'opq/.wh..wh..opq'), '');
  run('tar', ['-C', l3, '--numeric-owner', '-cf', path.join(dir, 'l3.tar'), 'opq']);
  run('umoci', ['raw', 'add-layer', '--image', `${layout}:t`, path.join(dir, 'l3.tar')]);
  run('umoci', [
    'config',
    '--image',
    `${layout}:t`,
    '--config.entrypoint=/bin/sh',
    '--config.entrypoint=-c',
    '--config.cmd=echo hi; id',
    '--config.env=PATH=/usr/bin:/bin',
    '--config.env=GREETING=hello world',
    '--config.workingdir=/etc',
    '--config.user=1000:1000',
    '--config.label=org.example.test=yes',
  ]);
  // the sibling's own top layer
  const l4 = path.join(dir, 'l4');
  fs.mkdirSync(path.join(l4, 'sib'), { recursive: true });
  fs.writeFileSync(path.join(l4, 'sib/only'), 'sibling\n');
  run('tar', ['-C', l4, '--numeric-owner', '-cf', path.join(dir, 'l4.tar'), 'sib']);
  run('umoci', ['raw', 'add-layer', '--image', `${layout}:u`, path.join(dir, 'l4.tar')]);
  run('umoci', ['config', '--image', `${layout}:u`, '--config.cmd=/bin/true']);

  const unpacked = path.join(dir, 'unpacked');
  run('umoci', ['unpack', '--image', `${layout}:t`, unpacked]);
  const ociArchive = path.join(dir, 'image.oci.tar');
  const dockerArchive = path.join(dir, 'image.docker.tar');
  run('skopeo', ['copy', '-q', `oci:${layout}:t`, `oci-archive:${ociArchive}:t`]);
  run('skopeo', ['copy', '-q', `oci:${layout}:t`, `docker-archive:${dockerArchive}:example.org/test/img:t`]);
  const zstdDir = path.join(dir, 'zstd-layout');
  run('skopeo', ['copy', '-q', '--dest-compress-format', 'zstd', `oci:${layout}:t`, `oci:${zstdDir}:t`]);
  const dockerArchiveGz = path.join(dir, 'image.docker.tar.gz');
  fs.writeFileSync(dockerArchiveGz, zlib.gzipSync(fs.readFileSync(dockerArchive)));
  return {
    dir,
    layout: `oci:${layout}:t`,
    ociArchive,
    dockerArchive,
    zstdLayout: `oci:${zstdDir}:t`,
    dockerArchiveGz,
    unpacked: path.join(unpacked, 'rootfs'),
    sibling: `oci:${layout}:u`,
  };
}

/** One node of a tree, as both sides can tell it. */
export interface Node {
  type: string;
  mode: string;
  uid: number;
  gid: number;
  size?: number;
  sha256?: string;
  target?: string;
  rdev?: number;
  /** Other names of the same inode (hard links), sorted. */
  links?: string[];
  xattrs?: Record<string, string>;
  mtime?: number;
}

const TYPES: [number, string][] = [
  [fsc.S_IFREG, 'file'],
  [fsc.S_IFDIR, 'dir'],
  [fsc.S_IFLNK, 'symlink'],
  [fsc.S_IFCHR, 'char'],
  [fsc.S_IFBLK, 'block'],
  [fsc.S_IFIFO, 'fifo'],
];
const typeOf = (mode: number) => TYPES.find(([t]) => (mode & fsc.S_IFMT) === t)?.[1] ?? 'other';

/** Group paths by inode into `links`. */
function addLinks(out: Record<string, Node>, inos: Map<string, string[]>): void {
  for (const names of inos.values()) {
    if (names.length < 2) continue;
    for (const n of names) out[n]!.links = names.filter((x) => x !== n).sort();
  }
}

/** The tree of a host directory (names as byte strings, as thinfs keeps them). */
export function hostTree(root: string, opts: { mtimes?: boolean } = {}): Record<string, Node> {
  const out: Record<string, Node> = {};
  const inos = new Map<string, string[]>();
  const xattrs = hostXattrs(root);
  const rootBuf = Buffer.from(root);
  const visit = (rel: Buffer) => {
    const abs = rel.length === 0 ? rootBuf : Buffer.concat([rootBuf, Buffer.from('/'), rel]);
    const st = fs.lstatSync(abs, { bigint: true });
    const key = rel.length === 0 ? '/' : `/${rel.toString('latin1')}`;
    const mode = Number(st.mode);
    const n: Node = { type: typeOf(mode), mode: (mode & 0o7777).toString(8), uid: Number(st.uid), gid: Number(st.gid) };
    if (n.type === 'file') {
      n.size = Number(st.size);
      n.sha256 = createHash('sha256').update(fs.readFileSync(abs)).digest('hex');
    }
    if (n.type === 'symlink') n.target = fs.readlinkSync(abs, { encoding: 'buffer' }).toString('latin1');
    if (n.type === 'char' || n.type === 'block') n.rdev = Number(st.rdev);
    if (opts.mtimes === true && n.type !== 'dir' && n.type !== 'symlink') n.mtime = Number(st.mtimeMs / 1000n) ;
    const x = xattrs.get(key);
    if (x !== undefined) n.xattrs = x;
    out[key] = n;
    if (n.type !== 'dir' && st.nlink > 1n) {
      const k = `${st.dev}:${st.ino}`;
      inos.set(k, [...(inos.get(k) ?? []), key]);
    }
    if (n.type === 'dir') {
      for (const name of fs.readdirSync(abs, { encoding: 'buffer' })) visit(rel.length === 0 ? name : Buffer.concat([rel, Buffer.from('/'), name]));
    }
  };
  visit(Buffer.alloc(0));
  addLinks(out, inos);
  return out;
}

/** The xattrs of every path under `root` (getfattr), values base64; keys as hostTree's. */
function hostXattrs(root: string): Map<string, Record<string, string>> {
  const r = spawnSync('getfattr', ['-R', '-P', '-h', '-d', '-m', '-', '-e', 'base64', '--absolute-names', root], { encoding: 'latin1' });
  const out = new Map<string, Record<string, string>>();
  let cur: Record<string, string> | undefined;
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  for (const line of r.stdout.split('\n')) {
    if (line.startsWith('# file: ')) {
      const file = unescape(line.slice(8));
      const rel = file === root ? '/' : file.slice(root.length);
      cur = {};
      out.set(rel === '' ? '/' : rel, cur);
    } else if (cur !== undefined && line.includes('=')) {
      const eq = line.indexOf('=');
      const v = line.slice(eq + 1);
      cur[unescape(line.slice(0, eq))] = v.startsWith('0s') ? v.slice(2) : Buffer.from(v.replace(/^"|"$/g, ''), 'latin1').toString('base64');
    }
  }
  return out;
}

/** The same description of a thinfs view. */
export function viewTree(v: Filesystem, opts: { mtimes?: boolean } = {}): Record<string, Node> {
  const out: Record<string, Node> = {};
  const inos = new Map<string, string[]>();
  const visit = (p: string) => {
    const a = v.getattr(p);
    const n: Node = { type: typeOf(a.mode), mode: (a.mode & 0o7777).toString(8), uid: a.uid, gid: a.gid };
    if (n.type === 'file') {
      n.size = a.size;
      n.sha256 = createHash('sha256').update(readFile(v, p)).digest('hex');
    }
    if (n.type === 'symlink') n.target = v.readlink(p);
    if (n.type === 'char' || n.type === 'block') n.rdev = a.rdev;
    if (opts.mtimes === true && n.type !== 'dir' && n.type !== 'symlink') n.mtime = Number(a.mtimeNs / 1_000_000_000n);
    const names = v.listxattr(p);
    if (names.length > 0) n.xattrs = Object.fromEntries(names.map((x) => [x, v.getxattr(p, x).toString('base64')]));
    out[p] = n;
    if (n.type !== 'dir' && a.nlink > 1) inos.set(String(a.ino), [...(inos.get(String(a.ino)) ?? []), p]);
    if (n.type === 'dir') {
      for (const e of v.readdir(p)) {
        if (e.name === '.' || e.name === '..') continue;
        visit(p === '/' ? `/${e.name}` : `${p}/${e.name}`);
      }
    }
  };
  visit('/');
  addLinks(out, inos);
  return out;
}
