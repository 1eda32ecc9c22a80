/**
 * Starting a runtime in the foreground: the container's stdio are ours, its exit status
 * becomes ours (128 + N when signal N ended it, as a shell reports it), and the signals
 * a user sends `thinfs run` (SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1/2) go to the
 * container instead of ending this process — which must live on to unmount the view.
 */
import { spawn, type StdioOptions } from 'node:child_process';
import * as fs from 'node:fs';
import { constants } from 'node:os';
import { fail } from '../errors.js';
import { SYSTEM_PATH } from './programs.js';

const FORWARDED = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'] as const;

/** How signals reach the container: the runtime's pid -> the pids to signal. */
export type SignalTargets = (runtimePid: number) => number[];

/** How `runForeground` starts a runtime. */
export interface ForegroundOptions {
  /** The runtime's environment (default: only the system PATH). */
  env?: NodeJS.ProcessEnv;
  /** Who gets forwarded signals (default: the runtime itself, which proxies them, as `runc run` does). */
  targets?: SignalTargets;
  /**
   * The runtime sets the container up itself before exec'ing its process (chroot.ts): its
   * stderr is a pipe until it writes this line there and moves stderr to fd 3 (ours).
   * Ending before that line is a failed setup — rejected with its last line of output —
   * not an exit status of the container.
   */
  setupDone?: string;
}

/** Run `file argv` with our stdio; resolves with its exit status (see the top of the file). */
export function runForeground(file: string, argv: string[], opts: ForegroundOptions = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const stdio: StdioOptions = opts.setupDone === undefined ? 'inherit' : ['inherit', 'inherit', 'pipe', 2];
    const child = spawn(file, argv, { stdio, env: opts.env ?? { PATH: SYSTEM_PATH } });
    let setup = opts.setupDone === undefined ? undefined : '';
    child.stderr?.on('data', (d: Buffer) => {
      if (setup === undefined) return void process.stderr.write(d);
      setup += d.toString();
      const at = setup.indexOf(`${opts.setupDone}\n`);
      if (at < 0) return;
      process.stderr.write(setup.slice(at + opts.setupDone!.length + 1));
      setup = undefined;
    });
    const forward = (signal: NodeJS.Signals) => {
      if (child.pid === undefined) return;
      for (const pid of (opts.targets ?? ((p) => [p]))(child.pid)) {
        try {
          process.kill(pid, signal);
        } catch {
          /* already gone */
        }
      }
    };
    for (const s of FORWARDED) process.on(s, forward);
    const done = () => {
      for (const s of FORWARDED) process.off(s, forward);
    };
    child.once('error', (err) => {
      done();
      reject(fail('ENOENT', 'run', file, `cannot start ${file}: ${err.message}`));
    });
    // 'close', not 'exit': the setup's output is all read by then.
    child.once('close', (code, signal) => {
      done();
      const status = code ?? (signal === null ? 1 : 128 + (constants.signals[signal] ?? 0));
      if (setup === undefined) return resolve(status);
      // mount(8) ends its message with a hint to read dmesg: the line before says what failed.
      const lines = setup.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('dmesg(1) may have more information'));
      const last = lines.pop() ?? `exit status ${status}`;
      reject(fail('EIO', 'run', file, `setting up the container failed: ${last}`));
    });
  });
}

/** The children of `pid` (from /proc; empty when they can't be read). */
export function childrenOf(pid: number): number[] {
  try {
    return fs
      .readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .filter((s) => s !== '')
      .map(Number);
  } catch {
    return [];
  }
}
