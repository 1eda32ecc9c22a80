/** The command line itself: help, version, unknown commands and options, bad values. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { tmpDir } from '../helpers/tmp.js';
import { PROJECT, thinfs } from './helpers.js';

let t: { dir: string; cleanup: () => void };
let root: string;
beforeEach(() => {
  t = tmpDir('thinfs-cli-');
  root = path.join(t.dir, 'root');
});
afterEach(() => t.cleanup());

const COMMANDS = ['init', 'info', 'resize', 'check', 'trim', 'diff', 'stats', 'umount'];

describe('help and version', () => {
  it('--help lists every command and the global options', async () => {
    const r = await thinfs(['--help']);
    expect(r.code).toBe(0);
    for (const c of COMMANDS) expect(r.stdout).toMatch(new RegExp(`^  ${c}\\b`, 'm'));
    for (const o of ['--root', '--log-level', '--version', '--help']) expect(r.stdout).toContain(o);
    expect(r.stderr).toBe('');
  });

  it.each(COMMANDS)('%s --help shows its options', async (c) => {
    const r = await thinfs([c, '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`Usage: thinfs ${c}`);
  });

  it('init --help names every init option', async () => {
    const r = await thinfs(['help', 'init']);
    expect(r.code).toBe(0);
    for (const o of ['--data-size', '--block-size', '--base-size', '--min-free-space', '--autoextend-threshold', '--autoextend-percent', '--autoextend-max', '--inline-max', '--json']) {
      expect(r.stdout).toContain(o);
    }
  });

  it('--version prints the package version', async () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(PROJECT, 'package.json'), 'utf8')) as { version: string };
    const r = await thinfs(['--version']);
    expect(r).toMatchObject({ code: 0, stdout: `${pkg.version}\n`, stderr: '' });
  });

  it('no command prints the help and exits 2', async () => {
    const r = await thinfs([]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('Usage: thinfs');
  });
});

describe('bad command lines: one line on stderr, exit 2, nothing created', () => {
  it.each([
    [['frobnicate'], /^thinfs: unknown command 'frobnicate'$/],
    [['info', '--bogus'], /^thinfs: unknown option '--bogus'$/],
    [['--bogus', 'info'], /^thinfs: unknown option '--bogus'$/],
    [['info', 'extra'], /^thinfs: too many arguments/],
    [['init', '--data-size', '12Q'], /^thinfs: option '--data-size <size>' argument '12Q' is invalid\. expected a size/],
    [['init', '--block-size', 'big'], /^thinfs: option '--block-size <size>' argument 'big' is invalid/],
    [['init', '--base-size', '1.3K'], /argument '1.3K' is invalid/],
    [['init', '--min-free-space', 'lots'], /^thinfs: option '--min-free-space <percent>' argument 'lots' is invalid\. expected a percentage/],
    [['init', '--autoextend-threshold', '80%'], /^thinfs: --autoextend-threshold, --autoextend-percent and --autoextend-max go together/],
    [['init', '--autoextend-percent', '20', '--autoextend-max', '2G'], /go together/],
    [['init', '--data-size'], /^thinfs: option '--data-size <size>' argument missing$/],
    [['resize'], /^thinfs: required option '--data-size <size>' not specified$/],
    [['resize', '--data-size', '1X'], /argument '1X' is invalid/],
    [['--log-level', 'loud', 'info'], /^thinfs: option '--log-level <level>' argument 'loud' is invalid/],
  ])('%j', async (args, message) => {
    const r = await thinfs(['--root', root, ...args]);
    expect(r.code).toBe(2);
    expect(r.errLines).toHaveLength(1);
    expect(r.errLines[0]).toMatch(message);
    expect(r.stdout).toBe('');
    expect(fs.existsSync(root)).toBe(false);
  });

  it('a block size the pool refuses (3K) is one line, exit 1, nothing created', async () => {
    const r = await thinfs(['--root', root, 'init', '--block-size', '3K']);
    expect(r.code).toBe(1);
    expect(r.errLines).toEqual([expect.stringMatching(/^thinfs: EINVAL: block size must be a power of two from 4K to 1M/)]);
    expect(fs.existsSync(root)).toBe(false);
  });

  it.each([
    [['--data-size', '32K', '--block-size', '64K'], /data size must be at least one block/],
    [['--min-free-space', '100%'], /minimum free space must be a percentage/],
    [['--autoextend-threshold', '0', '--autoextend-percent', '10', '--autoextend-max', '1G'], /autoextend threshold/],
    [['--data-size', '1G', '--autoextend-threshold', '80', '--autoextend-percent', '10', '--autoextend-max', '512M'], /autoextend maximum/],
  ])('init %j: the pool refuses it, one line, exit 1, nothing created', async (args, message) => {
    const r = await thinfs(['--root', root, 'init', ...args]);
    expect(r.code).toBe(1);
    expect(r.errLines).toHaveLength(1);
    expect(r.errLines[0]).toMatch(message);
    expect(fs.existsSync(root)).toBe(false);
  });
});

describe('the pool root', () => {
  it('comes from THINFS_ROOT when --root is not given', async () => {
    const r = await thinfs(['info'], { THINFS_ROOT: root });
    expect(r.code).toBe(1);
    expect(r.errLines).toEqual([`thinfs: ENOENT: no thinfs pool here; run \`thinfs init\` first, open '${root}'`]);
  });

  it('--root wins over THINFS_ROOT', async () => {
    const other = path.join(t.dir, 'other');
    const r = await thinfs(['--root', root, 'info'], { THINFS_ROOT: other });
    expect(r.errLines[0]).toContain(`'${root}'`);
  });
});
