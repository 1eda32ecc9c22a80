/**
 * Names are bytes through import and export: a directory whose names, symlink targets
 * and xattr names are not UTF-8 (`caf\xe9`, `x\xe9` beside `x\xe8`), GNU tar archives of
 * it (pax, gnu and ustar formats, long names in PAX records and GNU long-name entries),
 * hand-built tars with raw ustar name/prefix/linkname bytes and raw PAX path records,
 * and the export of what was imported: GNU tar lists and extracts the exact bytes.
 * Byte strings as in src/fs/bytes.ts: '\xe9' is the byte 0xe9.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { finished } from 'node:stream/promises';
import { Header } from 'tar';
import { describe, expect, it } from 'vitest';
import { Filesystem, fromText } from '../../src/fs/index.js';
import { exportLayer, importImage } from '../../src/layers/index.js';
import { GiB, type DevId } from '../../src/pool/index.js';
import { paxBody } from '../helpers/layers.js';
import { freshPool } from '../helpers/scratch-pool.js';
import { namesIn, readFile, treeOf } from '../helpers/tree.js';

const have = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const LONG_DIR = 'd'.repeat(120);
const LONG_FILE = `${'f'.repeat(60)}\xe9${'g'.repeat(60)}`; // 121 bytes: a PAX path record / GNU long name

const s = freshPool('thinfs-names-layers-', { dataSizeBytes: 1 * GiB, minFreePercent: 0 });
const view = s.view;

/** Run a shell script (in-process pool, no mount: a synchronous child is fine); its stdout as raw bytes. */
function sh(script: string, cwd: string): Buffer {
  const r = spawnSync('bash', ['-euo', 'pipefail', '-c', script], { cwd });
  if (r.status !== 0) throw new Error(`${script}: ${r.stderr.toString()}`);
  return r.stdout;
}

/** The source directory, made with printf so every name is exactly the bytes written. */
function makeByteDir(): string {
  const src = path.join(s.dir, 'src');
  fs.mkdirSync(src);
  sh(
    String.raw`
    printf e9 > "$(printf 'x\xe9')"
    printf e8 > "$(printf 'x\xe8')"
    printf utf8 > "$(printf 'x\xc3\xa9')"
    mkdir "$(printf 'd\xff')"
    printf cafe > "$(printf 'd\xff/caf\xe9')"
    ln "$(printf 'x\xe8')" "$(printf 'd\xff/hard\xe8')"
    ln -s "$(printf 't\xe9/\x80')" "$(printf 'l\xe8')"
    mkdir -p ${LONG_DIR}
    printf long > "${LONG_DIR}/$(printf 'f%.0s' $(seq 1 60))$(printf '\xe9')$(printf 'g%.0s' $(seq 1 60))"
    if command -v setfattr >/dev/null; then setfattr -n "$(printf 'user.n\xe9')" -v v "$(printf 'x\xe9')"; fi
    find . -exec touch -h -d '@1600000000' {} +
    `,
    src,
  );
  return src;
}

/** What the byte directory must look like inside thinfs. */
function expectByteTree(id: DevId, opts: { xattrs: boolean; hardlink?: boolean }): void {
  view(id, (v) => {
    expect(namesIn(v, '/')).toEqual([LONG_DIR, 'd\xff', 'l\xe8', 'x\xc3\xa9', 'x\xe8', 'x\xe9']);
    expect(readFile(v, '/x\xe9').toString()).toBe('e9');
    expect(readFile(v, '/x\xe8').toString()).toBe('e8');
    expect(readFile(v, `/x${fromText('é')}`).toString()).toBe('utf8');
    expect(namesIn(v, '/d\xff')).toEqual(['caf\xe9', 'hard\xe8']);
    expect(readFile(v, '/d\xff/caf\xe9').toString()).toBe('cafe');
    if (opts.hardlink !== false) expect(v.getattr('/d\xff/hard\xe8').ino).toBe(v.getattr('/x\xe8').ino);
    expect(v.readlink('/l\xe8')).toBe('t\xe9/\x80');
    expect(namesIn(v, `/${LONG_DIR}`)).toEqual([LONG_FILE]);
    expect(readFile(v, `/${LONG_DIR}/${LONG_FILE}`).toString()).toBe('long');
    if (opts.xattrs) expect(v.listxattr('/x\xe9')).toEqual(['user.n\xe9']);
  });
}

/** Directory entries below `dir` on the host, as byte strings, sorted (raw readdir, recursive). */
function hostTree(dir: string): string[] {
  const out: string[] = [];
  const walk = (rel: Buffer) => {
    const abs = Buffer.concat([Buffer.from(dir), Buffer.from('/'), rel]);
    for (const n of fs.readdirSync(abs, { encoding: 'buffer' })) {
      const r = rel.length === 0 ? n : Buffer.concat([rel, Buffer.from('/'), n]);
      const full = Buffer.concat([Buffer.from(dir), Buffer.from('/'), r]);
      const st = fs.lstatSync(full);
      let line = r.toString('latin1');
      if (st.isSymbolicLink()) line += ` -> ${fs.readlinkSync(full, { encoding: 'buffer' }).toString('latin1')}`;
      if (st.isFile()) line += ` = ${fs.readFileSync(full).toString('latin1')}`;
      out.push(line);
      if (st.isDirectory()) walk(r);
    }
  };
  walk(Buffer.alloc(0));
  return out.sort();
}

/** A ustar header block with raw name, prefix and linkname bytes (node-tar would write UTF-8). */
function rawHeader(h: { name: Buffer; prefix?: Buffer; linkname?: Buffer; type: 'File' | 'SymbolicLink' | 'Directory' | 'Link' | 'ExtendedHeader'; size: number }): Buffer {
  const buf = Buffer.alloc(512);
  new Header({ path: '', type: h.type, size: h.size, mode: h.type === 'Directory' ? 0o755 : 0o644, uid: 0, gid: 0, mtime: new Date(1_600_000_000_000), uname: '', gname: '' }).encode(buf, 0);
  h.name.copy(buf, 0);
  h.linkname?.copy(buf, 157);
  h.prefix?.copy(buf, 345);
  buf.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of buf) sum += b;
  buf.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return buf;
}

const pad = (b: Buffer) => Buffer.concat([b, Buffer.alloc((512 - (b.length % 512)) % 512)]);
const latin1 = (s: string) => Buffer.from(s, 'latin1');

async function exportTo(id: DevId, file: string, diff = false): Promise<void> {
  const v = Filesystem.open(s.pool, id, { readOnly: true });
  try {
    const out = fs.createWriteStream(file);
    await exportLayer(v, out, { diff });
    out.end();
    await finished(out);
  } finally {
    v.close();
  }
}

/** Entry names of a tar as GNU tar lists them, raw bytes (no quoting), as byte strings. */
function tarNames(file: string): string[] {
  return sh(`tar --quoting-style=literal -tf ${JSON.stringify(file)}`, s.dir)
    .toString('latin1')
    .split('\n')
    .filter((l) => l !== '')
    .sort();
}

describe('names are bytes: import and export', () => {
  it('a directory with names that are not UTF-8 imports byte-exact (names, targets, hard links, xattrs)', async () => {
    const src = makeByteDir();
    const r = await importImage(s.pool, { name: 'img', source: src });
    expectByteTree(r.id, { xattrs: have('setfattr') && have('getfattr') });
  });

  it.skipIf(!have('tar'))('GNU tar archives of it (pax, gnu, ustar) import the same bytes', async () => {
    const src = makeByteDir();
    const dirImage = await importImage(s.pool, { name: 'dir', source: src });
    const expected = view(dirImage.id, (v) => shape(treeOf(v)));
    for (const format of ['pax', 'gnu']) {
      const tar = path.join(s.dir, `${format}.tar`);
      sh(`tar --format=${format} --xattrs --xattrs-include='*' -C src -cf ${tar} .`, s.dir);
      const r = await importImage(s.pool, { name: format, source: tar });
      expectByteTree(r.id, { xattrs: format === 'pax' && have('setfattr') });
      const got = view(r.id, (v) => shape(treeOf(v)));
      if (format === 'pax') expect(got).toEqual(expected);
      else expect(Object.keys(got)).toEqual(Object.keys(expected));
    }
    // ustar has no room for the 121-byte name: only the rest, still byte-exact.
    const ustar = path.join(s.dir, 'ustar.tar');
    sh(`tar --format=ustar -cf ${ustar} ./x* ./l* ./d$'\\xff'`, src);
    const u = await importImage(s.pool, { name: 'ustar', source: ustar });
    view(u.id, (v) => {
      expect(namesIn(v, '/')).toEqual(['d\xff', 'l\xe8', 'x\xc3\xa9', 'x\xe8', 'x\xe9']);
      expect(readFile(v, '/d\xff/caf\xe9').toString()).toBe('cafe');
      expect(v.readlink('/l\xe8')).toBe('t\xe9/\x80');
    });
  });

  it('a hand-built tar: raw ustar name, prefix and linkname bytes, raw PAX path records', async () => {
    const body = paxBody({ hdrcharset: 'BINARY', path: latin1('p\xe9/long-\xe8'), linkpath: latin1('tgt\xfe') });
    const bodyUtf8 = paxBody({ path: Buffer.from('utf8-ü') });
    const tar = Buffer.concat([
      rawHeader({ name: latin1('caf\xe9'), type: 'File', size: 2 }),
      pad(Buffer.from('c1')),
      rawHeader({ name: latin1('caf\xe8'), type: 'File', size: 2 }),
      pad(Buffer.from('c2')),
      rawHeader({ name: latin1('in\xe9'), prefix: latin1('pre\xff/fix'), type: 'File', size: 1 }),
      pad(Buffer.from('p')),
      rawHeader({ name: latin1('sym\xe9'), linkname: latin1('to\xe8\x80'), type: 'SymbolicLink', size: 0 }),
      rawHeader({ name: latin1('hard\xe9'), linkname: latin1('caf\xe9'), type: 'Link', size: 0 }),
      rawHeader({ name: latin1('PaxHeader/x'), type: 'ExtendedHeader', size: body.length }),
      pad(body),
      rawHeader({ name: latin1('p\xe9/truncated-ustar-name'), linkname: latin1('tgt'), type: 'SymbolicLink', size: 0 }),
      rawHeader({ name: latin1('PaxHeader/y'), type: 'ExtendedHeader', size: bodyUtf8.length }),
      pad(bodyUtf8),
      rawHeader({ name: latin1('ignored'), type: 'File', size: 1 }),
      pad(Buffer.from('u')),
      Buffer.alloc(1024),
    ]);
    const file = path.join(s.dir, 'raw.tar');
    fs.writeFileSync(file, tar);
    const r = await importImage(s.pool, { name: 'raw', source: file });
    view(r.id, (v) => {
      expect(namesIn(v, '/')).toEqual(['caf\xe8', 'caf\xe9', 'hard\xe9', 'p\xe9', 'pre\xff', 'sym\xe9', fromText('utf8-ü')].sort());
      expect(readFile(v, '/caf\xe9').toString()).toBe('c1');
      expect(readFile(v, '/caf\xe8').toString()).toBe('c2');
      expect(readFile(v, '/pre\xff/fix/in\xe9').toString()).toBe('p');
      expect(v.readlink('/sym\xe9')).toBe('to\xe8\x80');
      expect(v.getattr('/hard\xe9').ino).toBe(v.getattr('/caf\xe9').ino);
      expect(namesIn(v, '/p\xe9')).toEqual(['long-\xe8']);
      expect(v.readlink('/p\xe9/long-\xe8')).toBe('tgt\xfe');
      expect(readFile(v, `/${fromText('utf8-ü')}`).toString()).toBe('u');
    });
  });

  it.skipIf(!have('tar'))('export writes the bytes back: GNU tar lists and extracts exactly the names imported', async () => {
    const src = makeByteDir();
    const r = await importImage(s.pool, { name: 'img', source: src });
    const file = path.join(s.dir, 'export.tar');
    await exportTo(r.id, file);
    expect(tarNames(file)).toEqual(
      [
        './',
        'd\xff/',
        'd\xff/caf\xe9',
        'd\xff/hard\xe8',
        `${LONG_DIR}/`,
        `${LONG_DIR}/${LONG_FILE}`,
        'l\xe8',
        'x\xc3\xa9',
        'x\xe8',
        'x\xe9',
      ].sort(),
    );
    const out = path.join(s.dir, 'out');
    fs.mkdirSync(out);
    const extract = spawnSync('tar', ['-C', 'out', '--xattrs', '--xattrs-include=*', '-xf', file], { cwd: s.dir });
    expect([extract.status, extract.stderr.toString()]).toEqual([0, '']); // no warning either
    expect(hostTree(out)).toEqual(hostTree(src));
    if (have('getfattr') && have('setfattr')) {
      expect(sh(String.raw`getfattr --only-values -n "$(printf 'user.n\xe9')" "$(printf 'out/x\xe9')"`, s.dir).toString()).toBe('v');
    }
    // And back in: the export imports to the same tree.
    const again = await importImage(s.pool, { name: 'again', source: file });
    expectByteTree(again.id, { xattrs: have('setfattr') && have('getfattr') });
  });

  it.skipIf(!have('tar'))('export --diff: whiteouts of byte names (long ones in PAX records) hide exactly those names', async () => {
    const src = makeByteDir();
    const base = await importImage(s.pool, { name: 'base', source: src });
    const c = s.pool.createSnapshot(base.id, 'c', { kind: 'container' });
    const w = Filesystem.open(s.pool, c);
    w.unlink('/x\xe9');
    w.unlink(`/${LONG_DIR}/${LONG_FILE}`);
    w.rename('/x\xe8', '/x\xe8\xe8');
    w.close();
    s.pool.setReadOnly(c);
    s.pool.commit();
    const file = path.join(s.dir, 'diff.tar');
    await exportTo(c, file, true);
    // The long directory lost an entry (its times changed); x\xe8's inode changed under both names (rename: ctime).
    expect(tarNames(file)).toEqual(['.wh.x\xe8', '.wh.x\xe9', `${LONG_DIR}/`, `${LONG_DIR}/.wh.${LONG_FILE}`, 'd\xff/hard\xe8', 'x\xe8\xe8'].sort());
    const again = await importImage(s.pool, { name: 'again', source: file, parent: 'base' });
    view(again.id, (v) => {
      expect(namesIn(v, '/')).toEqual([LONG_DIR, 'd\xff', 'l\xe8', 'x\xc3\xa9', 'x\xe8\xe8']);
      expect(namesIn(v, `/${LONG_DIR}`)).toEqual([]);
      expect(readFile(v, '/x\xe8\xe8').toString()).toBe('e8');
    });
  });
});

/** A tree without inode numbers and the root's attributes (they differ between imports). */
function shape(tree: ReturnType<typeof treeOf>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(tree).filter(([p]) => p !== '/').map(([p, { ino: _ino, ...rest }]) => [p, rest]));
}
