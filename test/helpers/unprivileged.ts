/**
 * Tests that switch to an unprivileged uid run this checkout's code as that user, so every
 * directory above the checkout must let it in. A clone under a private directory (mktemp -d
 * makes 0700 ones) does not: those tests then skip and say why, instead of failing with
 * "Cannot find module" or exit 1 from the first command. And the way they run the CLI as
 * that user (thinfsAs).
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CLI, type Run } from '../cli/helpers.js';

const PROJECT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Why uid `uid` cannot read this checkout, or undefined when it can (or when we cannot tell: not root). */
export function checkoutUnreadableBy(uid: number): string | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const setpriv = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => fs.existsSync(p));
  if (setpriv === undefined) return undefined;
  const probe = path.join(PROJECT, 'package.json');
  const r = spawnSync(setpriv, [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', '/usr/bin/test', '-r', probe]);
  if (r.status === 0) return undefined;
  return `this checkout (${PROJECT}) is not readable by uid ${uid} (a directory above it is private, e.g. mktemp -d's 0700); rootless tests need a checkout other users can read`;
}

/**
 * Run the built CLI, `thinfs --root ROOT ...argv`, as uid and gid `uid` with no groups
 * (through `setpriv`), in `home`, with only HOME and PATH in its environment.
 */
export function thinfsAs(uid: number, setpriv: string, env: { root: string; home: string; path: string }, argv: string[]): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(setpriv, [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', process.execPath, CLI, '--root', env.root, ...argv], {
      env: { HOME: env.home, PATH: env.path },
      cwd: env.home,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code) => resolve({ code: code ?? 1, stdout, stderr, errLines: stderr.split('\n').filter((l) => l !== '') }));
  });
}
