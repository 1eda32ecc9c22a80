/**
 * The set-up shared by the benchmarks that time a mount while its daemon is busy with
 * other work (import.ts: `thinfs import`; load.ts: `thinfs load`): their options, the
 * tree of small files and one big file they feed the daemon, the tiny container whose
 * mount they probe, the busy command run in the background, and the clean-up that ends the daemon by its pid and removes --dir
 * however the run ended. Each script keeps its own probes and report.
 *
 * These scripts never serve a mount themselves, so they may run the CLI synchronously.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { alive, sleep } from './util.js';

/** The built CLI (dist/src/cli/main.js, next to this script's dist/bench/). */
export const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'src', 'cli', 'main.js');

/** One run of a busy-daemon benchmark: its options, and what it started. */
export interface BusyDaemonBench {
  /** --dir: everything lives here, removed at the end. */
  dir: string;
  /** The thinfs root, in dir. */
  root: string;
  /** --files small files (1-8 KiB) in the tree. */
  files: number;
  /** --big-mib MiB of random data in one file of the tree. */
  bigMib: number;
  /** --idle-ms of probing with the daemon idle. */
  idleMs: number;
  /** Run `thinfs --root ROOT ARGS...` and return its stdout; throws with its stderr when it fails. */
  thinfs(...args: string[]): string;
  /** The daemon's pid once a mount started it (mountTinyContainer); ended after the run. */
  daemon: number | undefined;
}

/** The number after `--NAME` on the command line, or `def`. */
function numberArg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? def : Number(process.argv[i + 1]);
}

/**
 * Run `body` as root in a fresh --dir (default `./.bench-NAME`), then, whatever happened,
 * unmount container c (forced), end the daemon by its pid (TERM, KILL after 5 s) and
 * remove --dir. A failure is printed as one line and sets exit code 1.
 */
export function runBusyDaemonBench(name: string, body: (b: BusyDaemonBench) => Promise<void>): void {
  const dirArg = process.argv.indexOf('--dir');
  const dir = path.resolve(dirArg < 0 ? `.bench-${name}` : process.argv[dirArg + 1]!);
  const root = path.join(dir, 'root');
  const b: BusyDaemonBench = {
    dir,
    root,
    files: numberArg('files', 20_000),
    bigMib: numberArg('big-mib', 256),
    idleMs: numberArg('idle-ms', 3000),
    thinfs: (...args) => {
      const r = spawnSync(process.execPath, [CLI, '--root', root, ...args], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`thinfs ${args.join(' ')} failed: ${r.stderr}`);
      return r.stdout;
    },
    daemon: undefined,
  };
  const main = async () => {
    if (process.getuid?.() !== 0) throw new Error('run as root (it mounts)');
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir, { recursive: true });
    try {
      await body(b);
    } finally {
      spawnSync(process.execPath, [CLI, '--root', root, 'umount', '--force', path.join(root, 'mnt', 'c')], { encoding: 'utf8' });
      const daemon = b.daemon;
      if (daemon !== undefined && alive(daemon)) {
        process.kill(daemon, 'SIGTERM');
        for (let i = 0; i < 50 && alive(daemon); i++) await sleep(100);
        if (alive(daemon)) process.kill(daemon, 'SIGKILL');
      }
      fs.rmSync(dir, { recursive: true, force: true });
    }
  };
  main().catch((err: unknown) => {
    console.error(err instanceof Error ? err.message : String(err));
    process.exitCode = 1;
  });
}

/** Write the tree to feed the daemon at `src`: b.files files of 1-8 KiB in 100 directories, and b.bigMib MiB of random data in `big`. */
export function makeTree(b: BusyDaemonBench, src: string): void {
  fs.mkdirSync(src);
  for (let i = 0; i < b.files; i++) {
    const d = path.join(src, `d${i % 100}`);
    if (i < 100) fs.mkdirSync(d);
    fs.writeFileSync(path.join(d, `f${i}`), randomBytes(1024 + (i % 8) * 1024));
  }
  const big = fs.openSync(path.join(src, 'big'), 'w');
  for (let i = 0; i < b.bigMib; i++) fs.writeSync(big, randomBytes(1024 * 1024));
  fs.closeSync(big);
}

/** Import a one-file image `tiny`, make container c of it and mount c (the daemon starts: b.daemon); returns the mountpoint. */
export function mountTinyContainer(b: BusyDaemonBench): string {
  const tiny = path.join(b.dir, 'tiny');
  fs.mkdirSync(tiny);
  fs.writeFileSync(path.join(tiny, 'hello'), 'hi\n');
  b.thinfs('import', 'tiny', tiny);
  b.thinfs('create', 'c', 'tiny');
  const mnt = (JSON.parse(b.thinfs('mount', 'c', '--json')) as { mountpoint: string }).mountpoint;
  b.daemon = Number(fs.readFileSync(path.join(b.root, 'run', 'daemon.pid'), 'utf8'));
  return mnt;
}

/** A node process run in the background (the busy command): its output once it has exited. */
export interface Background {
  /** True until the process has exited (probe loops run while it is). */
  running(): boolean;
  /** Its exit code (-1 when killed by a signal) and everything it wrote. */
  exited: Promise<{ code: number; out: string; err: string }>;
}

/** Start `node ARGS...` in the background, collecting its stdout and stderr. */
export function runInBackground(args: string[]): Background {
  let running = true;
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<{ code: number; out: string; err: string }>((resolve) => child.on('close', (code) => resolve({ code: code ?? -1, out, err })));
  void exited.then(() => (running = false));
  return { running: () => running, exited };
}
