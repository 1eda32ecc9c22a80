/** `npm start` (scripts/demo.sh): creates the pool on the first run, reuses it afterwards. */
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { tmpDir } from '../helpers/tmp.js';
import { PROJECT } from './helpers.js';

let t: { dir: string; cleanup: () => void };
beforeEach(() => {
  t = tmpDir('thinfs-demo-');
});
afterEach(() => t.cleanup());

function demo(root: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('sh', [path.join(PROJECT, 'scripts', 'demo.sh')], { env: { ...process.env, THINFS_ROOT: root }, encoding: 'utf8' }, (err, stdout, stderr) =>
      resolve({ code: err === null ? 0 : Number(err.code), stdout, stderr }),
    );
  });
}

it('is idempotent: init and import once, then a rootless run and info every time', async () => {
  const root = path.join(t.dir, 'root');
  const first = await demo(root);
  expect(first.stderr).toBe('');
  expect(first.code).toBe(0);
  expect(first.stdout).toMatch(/^created thin pool /);
  expect(first.stdout).toContain('Storage Driver: thinfs\n Pool Name: ');
  expect(first.stdout).toMatch(/imported image busybox/);
  expect(first.stdout).toMatch(/\n0\nhello from a thinfs container\n\s*\d+\n/);
  const second = await demo(root);
  expect(second.code).toBe(0);
  expect(second.stdout).not.toContain('created thin pool');
  expect(second.stdout).not.toContain('imported image');
  expect(second.stdout).toContain('hello from a thinfs container');
  expect(second.stdout).toMatch(/\nStorage Driver: thinfs\n/);
});
