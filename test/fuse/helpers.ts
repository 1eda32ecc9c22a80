/**
 * Real-mount test helpers. Every mount goes through the built `thinfs` command, so the
 * FUSE handlers run in the pool's daemon (another process) and this process may use
 * ordinary synchronous fs calls on mountpoints.
 *
 * Cleanup is unconditional (afterAll/finally): `thinfs umount` of every mount, then the
 * daemons this helper saw start (pids read from ROOT/run/daemon.pid after our own
 * `thinfs mount`) get SIGTERM and, if still alive, SIGKILL, then any thinfs mount left
 * under the root is detached, then the temp directory goes. Nothing else is killed.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { lazyUnmount, mountTable } from '../../src/fuse/kernel.js';
import { Pool, type DeviceKind } from '../../src/pool/index.js';
import { thinfs, type Run } from '../cli/helpers.js';

export { thinfs, type Run };

/** Why real-mount tests are skipped here, or undefined when they can run. */
export function fuseSkipReason(): string | undefined {
  if (!fs.existsSync('/dev/fuse')) return '/dev/fuse is missing (no FUSE in this kernel or container)';
  if (process.getuid?.() === 0) {
    const mode = fs.statSync('/dev/fuse').mode & 0o777;
    if (mode !== 0o666) fs.chmodSync('/dev/fuse', 0o666); // what udev sets; non-root mounts need it
  }
  return undefined;
}

/** Runs a shell command without blocking this process (stdout/stderr collected). */
export function sh(script: string, opts: { cwd?: string; timeoutMs?: number; env?: Record<string, string> } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-euo', 'pipefail', '-c', script], {
      cwd: opts.cwd,
      env: { ...process.env, ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr, errLines: stderr.split('\n').filter((l) => l !== '') });
    });
  });
}

/** `sh`, failing the test with its stderr when it exits non-zero. */
export async function shOk(script: string, opts: Parameters<typeof sh>[1] = {}): Promise<string> {
  const r = await sh(script, opts);
  if (r.code !== 0) throw new Error(`command failed (${r.code}): ${script}\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** A pool in a temp directory with devices, mounted through the CLI; `cleanup` undoes everything. */
export class TestPool {
  readonly dir: string;
  readonly root: string;
  private readonly daemons = new Set<number>();

  private constructor(dir: string) {
    this.dir = dir;
    this.root = path.join(dir, 'root');
  }

  /** `thinfs init` plus devices created through the Pool API (name -> kind; images read-only). */
  static async create(devices: Record<string, DeviceKind>, prefix = 'thinfs-fuse-'): Promise<TestPool> {
    const t = new TestPool(fs.mkdtempSync(path.join(os.tmpdir(), prefix)));
    const r = await thinfs(['--root', t.root, 'init', '--data-size', '4G']);
    if (r.code !== 0) throw new Error(`thinfs init failed: ${r.stderr}`);
    t.addDevices(devices);
    return t;
  }

  /** Create devices directly in the pool (no daemon may be running). */
  addDevices(devices: Record<string, DeviceKind>): void {
    const pool = Pool.open(this.root);
    try {
      for (const [name, kind] of Object.entries(devices)) {
        const id = pool.createThin(name, { kind });
        if (kind === 'image') pool.setReadOnly(id);
      }
    } finally {
      pool.close();
    }
  }

  /** Run `thinfs --root ROOT ...args`. */
  cli(...args: string[]): Promise<Run> {
    return thinfs(['--root', this.root, ...args]);
  }

  /** `thinfs mount`; returns the mountpoint. Fails the test when the command fails. */
  async mount(name: string, ...extra: string[]): Promise<string> {
    const r = await this.cli('mount', name, '--json', ...extra);
    this.noteDaemon();
    if (r.code !== 0) throw new Error(`thinfs mount ${name} failed: ${r.stderr}`);
    return (JSON.parse(r.stdout) as { mountpoint: string }).mountpoint;
  }

  async umount(target: string): Promise<void> {
    const r = await this.cli('umount', target);
    if (r.code !== 0) throw new Error(`thinfs umount ${target} failed: ${r.stderr}`);
  }

  /** The running daemon's pid (from its pid file), if one runs. */
  daemonPid(): number | undefined {
    try {
      const pid = Number(fs.readFileSync(path.join(this.root, 'run', 'daemon.pid'), 'utf8').trim());
      return Number.isInteger(pid) && pid > 0 ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  /** Remember the daemon a `thinfs mount` of ours started, so cleanup may stop it. */
  noteDaemon(): number | undefined {
    const pid = this.daemonPid();
    if (pid !== undefined) this.daemons.add(pid);
    return pid;
  }

  /** Wait until the daemons we saw have exited by themselves (after their last umount). */
  async waitDaemonsGone(timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while ([...this.daemons].some(alive)) {
      if (Date.now() > deadline) throw new Error('a thinfs daemon did not exit after its last umount');
      await sleep(50);
    }
  }

  /** Unmount everything, stop our daemons, detach leftovers, remove the directory. */
  async cleanup(): Promise<void> {
    const mounts = () => mountTable().filter((m) => m.fstype === 'fuse.thinfs' && m.mountpoint.startsWith(`${this.dir}/`));
    for (const m of mounts()) await this.cli('umount', m.mountpoint).catch(() => undefined);
    for (const pid of this.daemons) {
      if (!alive(pid)) continue;
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        /* gone */
      }
      for (let i = 0; i < 50 && alive(pid); i++) await sleep(100);
      if (alive(pid)) process.kill(pid, 'SIGKILL');
    }
    for (const m of mounts()) await lazyUnmount(m.mountpoint).catch(() => undefined);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat[stat.lastIndexOf(')') + 2] !== 'Z';
  } catch {
    return false;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * One line per entry under `dir`: path, type, mode, size (not for directories), nlink,
 * uid, gid, mtime in ns (only when `keepMtime(ms)`: times the sequence preserved or set,
 * not "now"), symlink target, content hash, rdev, and xattrs (read with getfattr).
 */
export async function treeListing(dir: string, keepMtime: (ms: number) => boolean): Promise<string[]> {
  const xattrs = await xattrMap(dir);
  const lines: string[] = [];
  const walk = (rel: string) => {
    const abs = path.join(dir, rel);
    const st = fs.lstatSync(abs, { bigint: true });
    const mode = Number(st.mode);
    const type = fileType(mode);
    const mtimeMs = Number(st.mtimeNs / 1_000_000n);
    const parts = [
      rel === '' ? '.' : rel,
      type,
      (mode & 0o7777).toString(8),
      type === 'd' ? '-' : String(st.size),
      String(st.nlink),
      `${st.uid}:${st.gid}`,
      keepMtime(mtimeMs) ? String(st.mtimeNs) : '~',
    ];
    if (type === 'l') parts.push(`-> ${fs.readlinkSync(abs)}`);
    if (type === 'f') parts.push(createHash('sha256').update(fs.readFileSync(abs)).digest('hex').slice(0, 16));
    if (type === 'c' || type === 'b') parts.push(`rdev=${st.rdev}`);
    const x = xattrs.get(rel === '' ? '.' : rel);
    if (x !== undefined) parts.push(x.join(','));
    lines.push(parts.join(' '));
    if (type === 'd') for (const name of fs.readdirSync(abs).sort()) walk(rel === '' ? name : `${rel}/${name}`);
  };
  walk('');
  return lines;
}

function fileType(mode: number): string {
  switch (mode & 0o170000) {
    case 0o040000: return 'd';
    case 0o100000: return 'f';
    case 0o120000: return 'l';
    case 0o020000: return 'c';
    case 0o060000: return 'b';
    case 0o010000: return 'p';
    case 0o140000: return 's';
    default: return '?';
  }
}

/** Every xattr under `dir` (symlinks not followed), as path -> sorted name=value lines. */
async function xattrMap(dir: string): Promise<Map<string, string[]>> {
  const out = await shOk(`getfattr -R -P -h -d -m - -e hex . 2>/dev/null || true`, { cwd: dir });
  const map = new Map<string, string[]>();
  let current: string[] | undefined;
  for (const line of out.split('\n')) {
    const m = /^# file: (.*)$/.exec(line);
    if (m !== null) {
      const rel = m[1]!.replace(/^\.\//, '');
      current = [];
      map.set(rel === '' ? '.' : rel, current);
    } else if (line.trim() !== '' && current !== undefined) current.push(line.trim());
  }
  for (const v of map.values()) v.sort();
  return map;
}
