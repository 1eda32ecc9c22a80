/**
 * Damaged metadata.db, end to end through the built CLI, as a reviewer damages it: one
 * 4 KiB page of random bytes in a table, 64 bytes in every page, an index page, the schema.
 * `check` must see it (exit 1, the pool read-only: `create` refused with EROFS), `check
 * --repair` must keep a backup, repair, and leave a clean, writable pool in which what
 * was not on a damaged page still reads back.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { tmpDir } from '../helpers/tmp.js';
import { json, thinfs } from '../cli/helpers.js';
import { damagePage, makeImage, metadataOf, noise, pageCount, pagesOf, readBack, sampleTree, withSql, type Tree } from './helpers.js';

let t: { dir: string; cleanup: () => void };
let root: string;
beforeEach(() => {
  t = tmpDir('thinfs-check-');
  root = path.join(t.dir, 'root');
});
afterEach(() => t.cleanup());

const cli = (...args: string[]) => thinfs(['--root', root, ...args]);
const NEEDS_CHECK = /^thinfs: EROFS: pool needs a check; run `thinfs check --repair`/;

interface Result {
  clean: boolean;
  needsCheck: boolean;
  backup: string | null;
  actions: string[];
  report: { fatal: number; issues: { area: string; severity: string; message: string }[] };
  recheck: { clean: boolean; fatal: number } | null;
}

function dirents(): unknown[] {
  return withSql(root, (db) => db.prepare('SELECT parent, hex(name) AS n, layer, child, type FROM fs_dirents ORDER BY 1, 2, 3').all());
}

/** Every file of `tree` is either at its path or in /lost+found with its content; returns how many kept their path. */
function expectAllData(tree: Tree, shown: Map<string, string>): number {
  const lost = new Set([...shown].filter(([p]) => p.startsWith('/lost+found/')).map(([, c]) => c));
  let atPath = 0;
  for (const [p, content] of Object.entries(tree)) {
    if (shown.get(p) === content) atPath++;
    else expect(lost.has(content), `${p} is neither at its path nor in /lost+found`).toBe(true);
  }
  for (const [p, v] of shown) expect(v.startsWith('ERR:'), `${p}: ${v}`).toBe(false);
  return atPath;
}

async function expectRefused(): Promise<void> {
  const r = await cli('create', 'c2', 'img');
  expect(r.code).toBe(1);
  expect(r.errLines).toHaveLength(1);
  expect(r.errLines[0]).toMatch(NEEDS_CHECK);
}

describe('one 4 KiB page of random bytes', () => {
  it('in a table: check is fatal, create is refused, --repair backs up and rebuilds, the rest reads back', async () => {
    const tree = sampleTree(['a', 'b', 'c', 'd'], 100);
    makeImage(root, tree);
    const leaves = pagesOf(root, 'fs_dirents');
    expect(leaves.length).toBeGreaterThan(1);
    // The last leaf: entries of the last directories (the first leaf holds the root's own entries).
    const leaf = leaves[leaves.length - 1]!;
    damagePage(root, leaf.pageno, noise(4096, 7));

    const check = await cli('check');
    expect(check.code).toBe(1);
    expect(check.stdout).toMatch(/^fatal: SQLite integrity_check found damage in fs_dirents: /m);
    expect(check.stdout).toContain('fix: run `thinfs check --repair`');
    expect(fs.existsSync(path.join(root, 'pool', 'needs_check'))).toBe(true);
    await expectRefused();

    const repair = await cli('check', '--repair', '--json');
    expect(repair.code, repair.stderr).toBe(0);
    const r = json<Result>(repair);
    expect(r).toMatchObject({ clean: true, needsCheck: false, recheck: { clean: true, fatal: 0 } });
    expect(r.backup).toMatch(/\/pool\/metadata\.db\.bak-\d+-\d{8}T\d{6}Z$/);
    expect(fs.existsSync(r.backup!)).toBe(true);
    expect(r.actions.join('\n')).toMatch(/rebuilt pool\/metadata\.db from the rows that could still be read: .*fs_dirents \(\d+ rows recovered, 1 unreadable page/);
    expect(r.actions.join('\n')).toMatch(/linked \d+ unreachable inodes into \/lost\+found/);
    // The backup is the file as it was found: the damaged page is in it.
    expect(fs.readFileSync(r.backup!).subarray((leaf.pageno - 1) * 4096, leaf.pageno * 4096).equals(noise(4096, 7))).toBe(true);

    const again = await cli('check');
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/examined \d+ data blocks: clean\n$/);
    expect(fs.existsSync(path.join(root, 'pool', 'needs_check'))).toBe(false);
    expect((await cli('create', 'c2', 'img')).code).toBe(0);

    // Names on the damaged page are gone (their files are in /lost+found); everything else kept its path.
    const atPath = expectAllData(tree, readBack(root, 'img'));
    expect(atPath).toBeGreaterThanOrEqual(Object.keys(tree).length - leaf.ncell);
    expect(atPath).toBeLessThan(Object.keys(tree).length);
  });

  it('in the inode table: inodes are made again from their entries and blocks; every file is back at its path', async () => {
    const tree = sampleTree(['a', 'b', 'c', 'd'], 100);
    makeImage(root, tree);
    const leaf = pagesOf(root, 'fs_inodes')[0]!;
    damagePage(root, leaf.pageno, noise(4096, 9));
    expect((await cli('check')).code).toBe(1);
    await expectRefused();

    const r = json<Result>(await cli('check', '--repair', '--json'));
    expect(r.clean).toBe(true);
    expect(r.actions.join('\n')).toMatch(/made \d+ lost inodes again from the entries or blocks left of them/);
    const shown = readBack(root, 'img');
    let remade = 0;
    for (const [p, content] of Object.entries(tree)) {
      const now = shown.get(p)!;
      if (now === content) continue;
      // Made again from its blocks: the bytes are there, the size rounded up to whole 64 KiB blocks.
      remade++;
      expect(now.length % 65536, p).toBe(0);
      expect(now.slice(0, content.length), p).toBe(content);
      expect(/^\0*$/.test(now.slice(content.length)), p).toBe(true);
    }
    expect(remade).toBeGreaterThan(0);
    expect((await cli('create', 'c2', 'img')).code).toBe(0);
  });

  it('in the block mappings: the blocks that lost their mappings are copied out before they are freed', async () => {
    const tree: Tree = {};
    for (let i = 0; i < 120; i++) tree[`/d/f${i}`] = `<file ${i}>`.padEnd(65536 + 100, String.fromCharCode(97 + (i % 26)));
    // Pool blocks only: this is about blocks whose mapping rows were lost (an inline tail
    // is lost with its row; test/pool/inline.test.ts covers inline blocks).
    makeImage(root, tree, 'img', { inlineMaxBytes: 0 });
    const leaf = pagesOf(root, 'mappings')[0]!;
    damagePage(root, leaf.pageno, noise(4096, 13));
    expect((await cli('check')).code).toBe(1);

    const r = json<Result>(await cli('check', '--repair', '--json'));
    expect(r.clean).toBe(true);
    const kept = r.actions.find((a) => a.startsWith('kept a copy of '));
    expect(kept).toMatch(/^kept a copy of \d+ block\(s\) that no mapping names any more in \S+-blocks /);
    const copy = fs.readFileSync(`${r.backup}-blocks`);
    const index = fs.readFileSync(`${r.backup}-blocks.index`, 'utf8').split('\n').filter((l) => /^\d+$/.test(l));
    expect(copy.length).toBe(index.length * 65536);
    // Every file reads back whole, or its lost blocks read as zeros and their bytes are in the copy.
    const shown = readBack(root, 'img');
    const copied = new Set<string>();
    for (let i = 0; i < index.length; i++) copied.add(copy.subarray(i * 65536, (i + 1) * 65536).toString().replace(/\0+$/, ''));
    let damaged = 0;
    for (const [p, content] of Object.entries(tree)) {
      const now = shown.get(p)!;
      expect(now.length, p).toBe(content.length);
      if (now === content) continue;
      damaged++;
      for (const [from, to] of [[0, 65536], [65536, content.length]] as const) {
        if (now.slice(from, to) === content.slice(from, to)) continue;
        expect(/^\0*$/.test(now.slice(from, to)), p).toBe(true);
        expect(copied.has(content.slice(from, to)), `${p} [${from}, ${to})`).toBe(true);
      }
    }
    expect(damaged).toBeGreaterThan(0);
    expect((await cli('create', 'c2', 'img')).code).toBe(0);
  });

  it('in an index: --repair rebuilds the database and every row stays', async () => {
    const tree = sampleTree();
    makeImage(root, tree);
    const rowsBefore = dirents();
    const page = pagesOf(root, 'fs_dirents_by_child')[0]!;
    damagePage(root, page.pageno, noise(4096, 11));

    const check = await cli('check', '--json');
    expect(check.code).toBe(1);
    expect(json<Result>(check).report.issues.filter((i) => i.area === 'sqlite' && i.severity === 'fatal')).toHaveLength(1);
    await expectRefused();

    const r = json<Result>(await cli('check', '--repair', '--json'));
    expect(r.clean).toBe(true);
    expect(fs.existsSync(r.backup!)).toBe(true);
    expect(dirents()).toEqual(rowsBefore);
    expect(expectAllData(tree, readBack(root, 'img'))).toBe(Object.keys(tree).length);
    expect((await cli('create', 'c2', 'img')).code).toBe(0);
  });
});

describe('an index entry that disagrees with its table', () => {
  it('--repair rebuilds the indexes (REINDEX) and every row stays', async () => {
    const tree = sampleTree(['a'], 20);
    makeImage(root, tree);
    const rowsBefore = dirents();
    // The last byte of the index page is the layer of its first entry: make it another layer.
    const page = pagesOf(root, 'fs_dirents_by_child')[0]!;
    const byte = fs.readFileSync(metadataOf(root)).subarray(page.pageno * 4096 - 1, page.pageno * 4096);
    damagePage(root, page.pageno, Buffer.from([byte[0]! ^ 0x40]), 4095);

    const check = await cli('check');
    expect(check.code).toBe(1);
    expect(check.stdout).toMatch(/^fatal: SQLite integrity_check found damage in fs_dirents: /m);
    await expectRefused();
    const r = json<Result>(await cli('check', '--repair', '--json'));
    expect(r.clean).toBe(true);
    expect(r.actions).toEqual(['rebuilt the indexes of pool/metadata.db (REINDEX)']);
    expect(fs.existsSync(r.backup!)).toBe(true);
    expect(dirents()).toEqual(rowsBefore);
    expect((await cli('create', 'c2', 'img')).code).toBe(0);
  });
});

describe('64 bytes damaged in every page', () => {
  it('check is fatal and create is refused until --repair; then clean and writable', async () => {
    const tree = sampleTree();
    makeImage(root, tree);
    for (let p = 1; p <= pageCount(root); p++) damagePage(root, p, noise(64, p), 1024);

    const check = await cli('check');
    expect(check.code).toBe(1);
    // A report with fatal findings, or — when the damage hits the schema's text on page 1 —
    // the one line of a file SQLite cannot read at all; both mark the pool.
    expect(`${check.stdout}${check.stderr}`).toMatch(/^fatal: |metadata is damaged: cannot be read as SQLite/m);
    await expectRefused();

    const repair = await cli('check', '--repair');
    expect(repair.code, repair.stdout + repair.stderr).toBe(0);
    // The transaction id is 'unknown' when the superblock itself does not read.
    expect(repair.stdout).toMatch(/^backup of the metadata: \S+\.bak-(\d+|unknown)-\S+$/m);
    expect((await cli('check')).code).toBe(0);
    expect((await cli('create', 'c2', 'img')).code).toBe(0);
    // Nothing the rebuilt namespace shows fails to read.
    for (const [p, v] of readBack(root, 'img')) expect(v.startsWith('ERR:'), `${p}: ${v}`).toBe(false);
  });
});

describe('a metadata file SQLite cannot even open', () => {
  it('check answers one line and marks the pool; --repair rebuilds it from thinfs\'s own schema', async () => {
    const tree = sampleTree(['a'], 40);
    makeImage(root, tree);
    // The end of a schema page holds its first rows (CREATE TABLE superblock ...): SQLite then refuses the whole file.
    const schema = pagesOf(root, 'sqlite_schema')[0]!;
    damagePage(root, schema.pageno, noise(64, 3), 4096 - 64);
    const check = await cli('check');
    expect(check.code).toBe(1);
    expect(check.stdout).toBe('');
    expect(check.errLines).toHaveLength(1);
    expect(check.errLines[0]).toMatch(/^thinfs: EIO: metadata is damaged: .*; the pool stays read-only until `thinfs check --repair` repairs it/);
    expect(fs.existsSync(path.join(root, 'pool', 'needs_check'))).toBe(true);
    const create = await cli('create', 'c2', 'img');
    expect(create.code).toBe(1);
    expect(create.errLines).toHaveLength(1);

    const repair = await cli('check', '--repair', '--json');
    expect(repair.code, repair.stdout + repair.stderr).toBe(0);
    expect(json<Result>(repair).actions[0]).toMatch(/^rebuilt pool\/metadata\.db/);
    expect((await cli('check')).code).toBe(0);
    expect(expectAllData(tree, readBack(root, 'img'))).toBe(Object.keys(tree).length);
    expect((await cli('create', 'c2', 'img')).code).toBe(0);
  });
});

describe('rows whose foreign key points at nothing', () => {
  it('with ON DELETE CASCADE they are a leak that --repair deletes, as the deletion would have', async () => {
    makeImage(root, sampleTree(['a'], 3));
    withSql(root, (db) => {
      db.exec('CREATE TABLE x_notes (device_id INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE, note TEXT)');
      db.exec("INSERT INTO x_notes SELECT id, 'kept' FROM devices");
      db.pragma('foreign_keys = OFF'); // as damage would: behind SQLite's back
      db.exec("INSERT INTO x_notes VALUES (4242, 'stray')");
    });
    const r = json<Result>(await cli('check', '--json'));
    expect(r.report.issues.map((i) => [i.area, i.severity, i.message])).toEqual([['sqlite', 'leak', '1 row(s) of x_notes refer to rows of devices that no longer exist']]);
    expect(r.needsCheck).toBe(false);
    const repaired = json<Result>(await cli('check', '--repair', '--json'));
    expect(repaired.clean).toBe(true);
    expect(repaired.actions).toEqual(['deleted or cleared 1 row(s) that referred to rows that no longer exist (x_notes)']);
    expect(withSql(root, (db) => db.prepare('SELECT note FROM x_notes').pluck().all())).toEqual(['kept']);
  });
});

describe('what check does not touch', () => {
  it('a clean pool: --repair keeps no backup and changes nothing', async () => {
    makeImage(root, sampleTree(['a'], 5));
    const before = fs.readFileSync(metadataOf(root));
    const r = json<Result>(await cli('check', '--repair', '--json'));
    expect(r).toMatchObject({ clean: true, backup: null, actions: [] });
    expect(fs.readdirSync(path.join(root, 'pool')).filter((f) => f.includes('.bak-'))).toEqual([]);
    expect(fs.readFileSync(metadataOf(root)).equals(before)).toBe(true);
  });
});
