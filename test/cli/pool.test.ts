/**
 * The pool commands end to end through the built CLI: init, info, resize, check, trim,
 * and what they do with a missing, damaged or foreign pool (one line, nothing changed).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Pool, type FileKey } from '../../src/pool/index.js';
import { tmpDir } from '../helpers/tmp.js';
import { fingerprint, json, thinfs } from './helpers.js';

const KiB = 1024;
const MiB = 1024 * KiB;

let t: { dir: string; cleanup: () => void };
let root: string;
let meta: string;
let data: string;
beforeEach(() => {
  t = tmpDir('thinfs-cli-');
  root = path.join(t.dir, 'root');
  meta = path.join(root, 'pool', 'metadata.db');
  data = path.join(root, 'pool', 'data');
});
afterEach(() => t.cleanup());

const cli = (...args: string[]) => thinfs(['--root', root, ...args]);

async function init(...args: string[]): Promise<void> {
  const r = await cli('init', '--data-size', '256M', ...args);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
}

interface Info {
  blockSize: number;
  dataTotal: number;
  dataUsed: number;
  dataAvailable: number;
  metadataUsed: number;
  devices: number;
  deferredDeletions: number;
  transactionId: number;
  baseDeviceSize: number;
  minFreeSpacePercent: number;
  autoextend: unknown;
  mode: string;
}

describe('init and info', () => {
  it('init then info --json reports the chosen geometry', async () => {
    const r = await cli('init', '--data-size', '256M', '--block-size', '128K', '--base-size', '1G', '--min-free-space', '5%');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^created thin pool thinfs-\\d+:\\d+-\\d+-pool in ${root}: 256 MB data file \\(sparse\\), 128 KB blocks, 1 GB base device size, blocks up to 64 KB inline\n$`));
    expect(fs.existsSync(meta) && fs.existsSync(data)).toBe(true);

    const info = await cli('info', '--json');
    expect(info.code).toBe(0);
    expect(info.stderr).toBe('');
    const i = json<Info>(info);
    const blocks = (256 * MiB) / (128 * KiB);
    const minFree = Math.ceil((blocks * 5) / 100);
    expect(i).toMatchObject({
      blockSize: 128 * KiB,
      dataTotal: 256 * MiB,
      dataUsed: 0,
      dataAvailable: (blocks - minFree) * 128 * KiB,
      devices: 0,
      deferredDeletions: 0,
      baseDeviceSize: 1024 * MiB,
      minFreeSpacePercent: 5,
      autoextend: null,
      mode: 'write',
    });
    expect(i.metadataUsed).toBeGreaterThan(0);
    expect(Number.isInteger(i.transactionId)).toBe(true);
  });

  it('info prints the docker-info style section', async () => {
    await init();
    const r = await cli('info');
    expect(r.code).toBe(0);
    for (const line of [
      'Storage Driver: thinfs',
      ' Pool Name: thinfs-',
      ' Pool Blocksize: 64 KB',
      ' Base Device Size: 10 GB',
      ` Data file: ${data}`,
      ` Metadata file: ${meta}`,
      ' Data Space Used: 0 B',
      ' Data Space Total: 256 MB',
      ' Data Space Available: ',
      ' Metadata Space Used: ',
      ' Thin Pool Minimum Free Space: ',
      ' Thin Devices: 0',
      ' Deferred Deleted Device Count: 0',
      ' Transaction Id: ',
      ' Pool Mode: write',
      ' Autoextend: off',
    ]) {
      expect(r.stdout).toContain(line);
    }
  });

  it('info changes nothing in the pool', async () => {
    await init();
    const before = fingerprint(root);
    expect((await cli('info')).code).toBe(0);
    const after = fingerprint(root);
    // A read-only SQLite connection may leave the WAL companions; the pool files are untouched.
    for (const f of ['pool/metadata.db', 'pool/data']) expect(after[f]).toBe(before[f]);
  });

  it('init keeps the autoextend settings', async () => {
    await init('--autoextend-threshold', '80%', '--autoextend-percent', '20', '--autoextend-max', '1G');
    const i = json<Info>(await cli('info', '--json'));
    expect(i.autoextend).toEqual({ thresholdPercent: 80, percent: 20, maxBytes: 1024 * MiB });
    expect((await cli('info')).stdout).toContain('Autoextend: at 80% used, by 20%, up to 1 GB');
  });

  it('init over an existing pool is refused and the pool is unchanged', async () => {
    await init();
    const before = fingerprint(root);
    const r = await cli('init', '--data-size', '1G', '--block-size', '4K');
    expect(r.code).toBe(1);
    expect(r.errLines).toEqual([`thinfs: EEXIST: a thinfs pool already exists here, init '${root}'`]);
    expect(fingerprint(root)).toEqual(before);
  });

  it('info on a missing pool: one line, exit 1, nothing created', async () => {
    const r = await cli('info');
    expect(r.code).toBe(1);
    expect(r.errLines).toEqual([expect.stringMatching(/^thinfs: ENOENT: no thinfs pool here; run `thinfs init` first/)]);
    expect(r.stdout).toBe('');
    expect(fs.existsSync(root)).toBe(false);
  });

  it.each(['info', 'check', 'trim'])('%s on a root without a pool creates nothing', async (cmd) => {
    fs.mkdirSync(root);
    const r = await cli(cmd);
    expect(r.code).toBe(1);
    expect(r.errLines).toHaveLength(1);
    expect(fs.readdirSync(root)).toEqual([]);
  });
});

describe('metadata that is damaged or not ours', () => {
  const damage: [string, () => void][] = [
    ['truncated', () => fs.truncateSync(meta, 2048)],
    ['garbage inside', () => {
      const fd = fs.openSync(meta, 'r+');
      fs.writeSync(fd, Buffer.alloc(4096, 0x5a), 0, 4096, 4096);
      fs.closeSync(fd);
    }],
    ['not SQLite', () => fs.writeFileSync(meta, Buffer.alloc(16 * KiB, 0x42))],
    ['empty', () => fs.writeFileSync(meta, '')],
    ['a text file', () => fs.writeFileSync(meta, 'hello, I am not a pool\n')],
    ['another program\'s SQLite', () => {
      fs.rmSync(meta);
      const db = new Database(meta);
      db.exec("CREATE TABLE notes (x TEXT); INSERT INTO notes VALUES ('mine')");
      db.close();
    }],
    ['a newer thinfs schema', () => {
      const db = new Database(meta);
      db.exec('UPDATE superblock SET schema_version = 99');
      db.close();
    }],
  ];
  const commands: string[][] = [['info'], ['info', '--json'], ['check'], ['check', '--repair'], ['resize', '--data-size', '1G'], ['trim'], ['init']];

  for (const [what, spoil] of damage) {
    it(`${what}: every command answers one line, exit 1, the pool root unchanged`, async () => {
      await init();
      spoil();
      // `check` may add one file: the needs_check marker that keeps damaged metadata read-only.
      const withoutMarker = (f: Record<string, string>) => {
        const { ['pool/needs_check']: _marker, ...rest } = f;
        return rest;
      };
      const before = fingerprint(root);
      for (const cmd of commands) {
        const r = await cli(...cmd);
        expect(r.code, `${cmd.join(' ')}: ${r.stderr}`).toBe(1);
        expect(r.errLines, cmd.join(' ')).toHaveLength(1);
        // With --json the one line is the error as a JSON object (cli/errors.ts).
        if (cmd.includes('--json')) expect(JSON.parse(r.errLines[0]!)).toMatchObject({ error: { code: expect.stringMatching(/^E[A-Z]+$/), message: expect.stringMatching(/^E[A-Z]+: /) } });
        else expect(r.errLines[0]).toMatch(/^thinfs: E[A-Z]+: /);
        expect(r.stdout).toBe('');
        expect(withoutMarker(fingerprint(root)), `${cmd.join(' ')} changed the pool`).toEqual(withoutMarker(before));
      }
    });
  }

  it('names what is wrong', async () => {
    await init();
    fs.writeFileSync(meta, Buffer.alloc(16 * KiB, 0x42));
    expect((await cli('info')).errLines[0]).toMatch(/metadata is not a thinfs pool or is corrupt/);
  });
});

describe('resize', () => {
  it('grows the data file', async () => {
    await init();
    const r = await cli('resize', '--data-size', '512M');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('data file grown from 256 MB to 512 MB\n');
    expect(json<Info>(await cli('info', '--json')).dataTotal).toBe(512 * MiB);
    expect(fs.statSync(data).size).toBe(512 * MiB);
  });

  it('to the same size changes nothing', async () => {
    await init();
    const r = await cli('resize', '--data-size', '256M', '--json');
    expect(r.code).toBe(0);
    expect(json(r)).toEqual({ oldDataTotal: 256 * MiB, newDataTotal: 256 * MiB });
  });

  it('refuses to shrink, one line, pool unchanged', async () => {
    await init();
    const before = { meta: fingerprint(root)['pool/metadata.db'], size: fs.statSync(data).size, blocks: fs.statSync(data).blocks };
    const r = await cli('resize', '--data-size', '128M');
    expect(r.code).toBe(1);
    expect(r.errLines).toEqual([expect.stringMatching(/^thinfs: EINVAL: cannot shrink the data file from 256 MB \(268435456 bytes\) to 128 MB \(134217728 bytes\); a pool can only grow, resize '/)]);
    // (Opening the pool read-write punches the unused tail again, which touches the data file's mtime.)
    expect({ meta: fingerprint(root)['pool/metadata.db'], size: fs.statSync(data).size, blocks: fs.statSync(data).blocks }).toEqual(before);
    expect(json<Info>(await cli('info', '--json')).dataTotal).toBe(256 * MiB);
  });
});

describe('check', () => {
  it('a fresh pool is clean: exit 0', async () => {
    await init();
    const r = await cli('check');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/clean/);
    const j = json<{ clean: boolean; report: { issues: unknown[] } }>(await cli('check', '--json'));
    expect(j.clean).toBe(true);
    expect(j.report.issues).toEqual([]);
  });

  it('without --repair changes nothing', async () => {
    await init();
    leak(3);
    const before = fingerprint(root);
    expect((await cli('check')).code).toBe(1);
    const after = fingerprint(root);
    for (const f of ['pool/metadata.db', 'pool/data']) expect(after[f]).toBe(before[f]);
  });

  it('finds a leak (exit 1, with its fix); --repair fixes it (exit 0); the pool is clean after', async () => {
    await init();
    leak(3);
    const r = await cli('check');
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('leak: 3 data block(s) leaked (neither mapped nor free)');
    expect(r.stdout).toContain('fix: run `thinfs check --repair`');
    const j = json<{ clean: boolean; report: { leaks: number; fatal: number; issues: { severity: string }[] } }>(await cli('check', '--json'));
    expect(j.clean).toBe(false);
    expect(j.report).toMatchObject({ leaks: 1, fatal: 0 });
    expect(j.report.issues[0]!.severity).toBe('leak');

    const repair = await cli('check', '--repair');
    expect(repair.code).toBe(0);
    expect(repair.stdout).toMatch(/repaired; checking again\nexamined \d+ data blocks: clean\n$/);
    expect((await cli('check')).code).toBe(0);
  });

  it('a pool marked needs_check: read-only with one clear line until check --repair clears it', async () => {
    await init();
    const db = new Database(meta);
    db.exec('UPDATE superblock SET needs_check = 1');
    db.close();
    expect(json<Info & { needsCheck: boolean }>(await cli('info', '--json'))).toMatchObject({ mode: 'read-only', needsCheck: true });
    const resize = await cli('resize', '--data-size', '512M');
    expect(resize.code).toBe(1);
    expect(resize.errLines).toEqual([expect.stringMatching(/^thinfs: EROFS: pool needs a check; run `thinfs check --repair`/)]);
    const check = await cli('check');
    expect(check.stdout).toContain('run `thinfs check --repair` to clear the flag');
    expect((await cli('check', '--repair')).code).toBe(0);
    expect(json<Info & { needsCheck: boolean }>(await cli('info', '--json'))).toMatchObject({ mode: 'write', needsCheck: false });
    expect((await cli('resize', '--data-size', '512M')).code).toBe(0);
  });

  it('a block mapped twice is fatal: --repair cannot fix it and still exits 1', async () => {
    await init();
    mapTwice();
    const r = await cli('check');
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/fatal: 1 data block\(s\) are mapped more than once\n {2}fix: /);
    const repair = await cli('check', '--repair', '--json');
    expect(repair.code).toBe(1);
    const j = json<{ clean: boolean; recheck: { fatal: number } }>(repair);
    expect(j.clean).toBe(false);
    expect(j.recheck.fatal).toBeGreaterThan(0);
  });
});

describe('trim', () => {
  it('on a fresh pool returns nothing', async () => {
    await init();
    const r = await cli('trim');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^trimmed 0 bytes \(0 B\)/);
  });

  it('prints the bytes it returned to the host', async () => {
    await init();
    // Free blocks whose data is still on disk: a crash after the commit that freed them,
    // before they were punched. Made here by writing into free blocks behind the pool's back.
    const pool = Pool.open(root);
    const dev = pool.openDevice(pool.createThin('scratch'));
    dev.write(1 as FileKey, 0, Buffer.alloc(4 * 64 * KiB, 1));
    dev.close();
    pool.commit();
    pool.deleteDevice(pool.findDevice('scratch')!.id);
    pool.close();
    const fd = fs.openSync(data, 'r+');
    fs.writeSync(fd, Buffer.alloc(4 * 64 * KiB, 7), 0, 4 * 64 * KiB, 0);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    const onDisk = fs.statSync(data).blocks * 512;
    expect(onDisk).toBeGreaterThanOrEqual(4 * 64 * KiB);

    // A writable open punches every free block first (pool.ts: fresh blocks must read as
    // zeros), so the bytes go back to the host either there or by trim itself.
    const r = await cli('trim', '--json');
    expect(r.code).toBe(0);
    const j = json<{ trimmed: number; dataOnDisk: number }>(r);
    expect(j.trimmed).toBeGreaterThanOrEqual(0);
    expect(j.dataOnDisk).toBe(fs.statSync(data).blocks * 512);
    expect(onDisk - j.dataOnDisk).toBeGreaterThanOrEqual(4 * 64 * KiB);
    expect((await cli('check')).code).toBe(0);
  });
});

/** Make `n` blocks leak: hand them out (raise the high-water mark) without mapping or freeing them. */
function leak(n: number): void {
  const db = new Database(meta);
  db.prepare('UPDATE superblock SET hwm = hwm + ?').run(n);
  db.close();
}

/** Map one pool block in two devices' layers at once. */
function mapTwice(): void {
  const pool = Pool.open(root);
  const a = pool.openDevice(pool.createThin('a'));
  const b = pool.createThin('b');
  a.write(1 as FileKey, 0, Buffer.alloc(64 * KiB, 1));
  a.close();
  pool.close();
  const db = new Database(meta);
  const layerB = db.prepare('SELECT layer_id FROM devices WHERE id = ?').pluck().get(b) as number;
  const pblock = db.prepare('SELECT pblock FROM mappings WHERE pblock IS NOT NULL').pluck().get() as number;
  db.prepare('INSERT INTO mappings (ino, fblock, layer, pblock) VALUES (2, 0, ?, ?)').run(layerB, pblock);
  db.close();
}
