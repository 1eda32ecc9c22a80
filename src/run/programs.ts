/**
 * The host programs a run uses, found by absolute path in a fixed list of system
 * directories — never through the caller's $PATH. A normal Debian user's PATH lacks
 * /usr/sbin (where chroot and runc live), and a PATH is the caller's to get wrong; the
 * helpers of a container runtime must be the system's.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fail } from '../errors.js';

/** Where system programs live, searched in this order (the default PATH of a Debian root shell). */
export const SYSTEM_DIRS = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'] as const;

/** The PATH helpers run with, and the default PATH inside a container whose image sets none. */
export const SYSTEM_PATH = SYSTEM_DIRS.join(':');

/** Absolute path of the executable `name` in SYSTEM_DIRS, or undefined when none is installed. */
export function findProgram(name: string): string | undefined {
  for (const dir of SYSTEM_DIRS) {
    const file = path.join(dir, name);
    try {
      const st = fs.statSync(file);
      if (st.isFile() && (st.mode & 0o111) !== 0) return file;
    } catch {
      /* not in this directory */
    }
  }
  return undefined;
}

/** `findProgram`, or ENOENT naming the Debian package that provides it. */
export function requireProgram(name: string, debianPackage: string): string {
  const file = findProgram(name);
  if (file === undefined) {
    throw fail('ENOENT', 'run', name, `${name} is not installed in ${SYSTEM_DIRS.join(', ')} (Debian: apt-get install ${debianPackage})`);
  }
  return file;
}
