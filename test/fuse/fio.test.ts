/**
 * fio with verify=crc32c on a mounted container (fixtures/fio/verify-*.fio: sequential
 * and random, 4 KiB and 1 MiB blocks), then verify-only again after umount + mount;
 * and kill -9 of the daemon during an fsync-ing fio write: `thinfs umount` and
 * `thinfs mount` recover, `thinfs check` is clean, the file fsync'ed before reads back,
 * and so does one written without fsync more than the batch-commit interval before.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROJECT } from '../cli/helpers.js';
import { alive, fuseSkipReason, sh, shOk, sleep, TestPool } from './helpers.js';

const skip = fuseSkipReason();
if (skip !== undefined) console.warn(`test/fuse/fio: skipped: ${skip}`);
const FIO = path.join(PROJECT, 'fixtures', 'fio');

async function fio(job: string, dir: string, ...extra: string[]): Promise<string> {
  const r = await sh(`fio --output-format=terse --terse-version=3 ${extra.join(' ')} --directory="${dir}" "${path.join(FIO, job)}"`, { timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`fio ${job} failed (${r.code}):\n${r.stderr}\n${r.stdout}`);
  return r.stdout;
}

describe.skipIf(skip !== undefined)('fio on a mounted container', () => {
  let pool: TestPool;
  beforeAll(async () => {
    pool = await TestPool.create({ c1: 'container', c2: 'container' });
  });
  afterAll(async () => {
    await pool?.cleanup();
  });

  it('writes and verifies (crc32c), and verifies again after umount + mount', async () => {
    let mnt = await pool.mount('c1');
    const seq = await fio('verify-seq.fio', mnt);
    const rand = await fio('verify-rand.fio', mnt);
    // terse v3: field 3 is the job name, field 5 the error code of the job.
    for (const line of `${seq}${rand}`.trim().split('\n')) expect(line.split(';')[4]).toBe('0');
    await pool.umount('c1');
    mnt = await pool.mount('c1');
    await fio('verify-seq.fio', mnt, '--verify_only');
    await fio('verify-rand.fio', mnt, '--verify_only');
    expect((await pool.cli('check')).code).toBe(0);
    await pool.umount('c1');
  });

  it('recovers from kill -9 of the daemon during writes; fsync\'ed data survives', async () => {
    const mnt = await pool.mount('c2');
    const pid = pool.noteDaemon()!;
    const plainCopy = path.join(pool.dir, 'synced.plain');
    await shOk(`head -c 8388608 /dev/urandom > "${plainCopy}" && dd if="${plainCopy}" of="${mnt}/synced" bs=1M conv=fsync status=none`);
    // Written without fsync: the daemon's batch commit (every second) makes it durable.
    await shOk(`cp "${plainCopy}" "${mnt}/batched"`);
    await sleep(2500);

    const job = spawn('fio', ['--directory', mnt, path.join(FIO, 'crash-write.fio')], { stdio: 'ignore' });
    const fioExit = new Promise<void>((resolve) => job.on('close', () => resolve()));
    const big = path.join(mnt, 'crash-write.0.0');
    for (let i = 0; i < 100; i++) {
      if (fs.existsSync(big) && fs.statSync(big).size > 24 * 1024 * 1024) break;
      await sleep(50);
    }
    process.kill(pid, 'SIGKILL');
    for (let i = 0; i < 50 && alive(pid); i++) await sleep(100);
    expect(alive(pid)).toBe(false);
    await Promise.race([fioExit, sleep(10_000)]);
    if (job.exitCode === null && job.signalCode === null) job.kill('SIGKILL');
    await fioExit;

    // The mount is dead now; umount detaches it and the pool opens clean.
    expect(() => fs.statfsSync(mnt)).toThrow(/ENOTCONN|ECONNABORTED/); // (stat may be answered from the kernel's cache)
    const um = await pool.cli('umount', 'c2');
    expect(um.code, um.stderr).toBe(0);
    expect(fs.existsSync(path.join(pool.root, 'run', 'daemon.pid'))).toBe(false);
    const check = await pool.cli('check');
    expect(check.code, check.stdout + check.stderr).toBe(0);

    await pool.mount('c2');
    await shOk(`cmp "${plainCopy}" "${mnt}/synced"`);
    await shOk(`cmp "${plainCopy}" "${mnt}/batched"`);
    await shOk(`cat "${big}" > /dev/null`);
    expect((await pool.cli('check')).code).toBe(0);
    await pool.umount('c2');
  });

  it('a killed daemon\'s dead mount is cleaned by the next mount', async () => {
    const mnt = await pool.mount('c1');
    const pid = pool.noteDaemon()!;
    process.kill(pid, 'SIGKILL');
    for (let i = 0; i < 50 && alive(pid); i++) await sleep(100);
    expect(() => fs.statfsSync(mnt)).toThrow(/ENOTCONN|ECONNABORTED/); // (stat may be answered from the kernel's cache)
    expect(await pool.mount('c1')).toBe(mnt);
    await fio('verify-seq.fio', mnt, '--verify_only');
    await pool.umount('c1');
  });
});
