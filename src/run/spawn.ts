/**
 * Starting a runtime in the foreground: the container's stdio are ours, its exit status
 * becomes ours (128 + N when signal N ended it, as a shell reports it), and the signals
 * a user sends `thinfs run` (SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1/2) go to the
 * container instead of ending this process — which must live on to unmount the view.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { constants } from 'node:os';
import { fail } from '../errors.js';
import { SYSTEM_PATH } from './programs.js';

const FORWARDED = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'] as const;

/** How signals reach the container: the runtime's pid -> the pids to signal. */
export type SignalTargets = (runtimePid: number) => number[];

/**
 * Run `file argv` with our stdio and the environment `env` (default: only the system
 * PATH); resolves with its exit status. Signals go to `targets(pid)` (default: the
 * runtime itself, which proxies them, as `runc run` does).
 */
export function runForeground(file: string, argv: string[], opts: { env?: NodeJS.ProcessEnv; targets?: SignalTargets } = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, argv, { stdio: 'inherit', env: opts.env ?? { PATH: SYSTEM_PATH } });
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
    child.once('exit', (code, signal) => {
      done();
      resolve(code ?? (signal === null ? 1 : 128 + (constants.signals[signal] ?? 0)));
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
