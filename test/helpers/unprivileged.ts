/**
 * Tests that switch to an unprivileged uid run this checkout's code as that user, so every
 * directory above the checkout must let it in. A clone under a private directory (mktemp -d
 * makes 0700 ones) does not: those tests then skip and say why, instead of failing with
 * "Cannot find module" or exit 1 from the first command.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

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
