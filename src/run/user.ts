/**
 * The user a container process runs as, from `-u` or the image config's `User`:
 * `USER[:GROUP]`, each a name or a number, resolved through the image's own /etc/passwd
 * and /etc/group — never the host's — as runc's libcontainer/user (GetExecUser) does:
 *  - empty means root (uid 0);
 *  - a name must be in /etc/passwd; a number need not be (then its gid is 0, HOME is /);
 *  - without GROUP the gid is the passwd entry's, and the supplementary groups are the
 *    /etc/group entries that list the user's name; with GROUP only that group counts.
 */
import { fail } from '../errors.js';
import { readInRoot } from './rootfs.js';

/** Who the container process is. */
export interface ExecUser {
  uid: number;
  gid: number;
  additionalGids: number[];
  /** HOME for the process (passwd's, else `/`). */
  home: string;
}

interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

/** Largest id a user namespace can map ((uid_t)-1 is "no id"). */
const MAX_ID = 0xfffffffe;

/** Syntax check of a `-u` value (no files read): USER[:GROUP], each non-empty. */
export function validUserSpec(spec: string): boolean {
  const parts = spec.split(':');
  return parts.length <= 2 && parts.every((p) => p !== '' && !/[\s\0]/.test(p)) && parts.every((p) => !isNumber(p) || Number(p) <= MAX_ID);
}

/** Resolve `spec` in the image under `rootfs`; EINVAL naming the user or group it can't find. */
export function resolveUser(rootfs: string, spec: string): ExecUser {
  if (spec !== '' && !validUserSpec(spec)) throw fail('EINVAL', 'run', spec, `'${spec}' is not a user: expected USER[:GROUP], names or numbers`);
  const [userPart = '', groupPart] = spec === '' ? ['0'] : spec.split(':');
  const passwd = parsePasswd(readInRoot(rootfs, '/etc/passwd'));
  const groups = parseGroup(readInRoot(rootfs, '/etc/group'));

  const entry = isNumber(userPart) ? passwd.find((p) => p.uid === Number(userPart)) : passwd.find((p) => p.name === userPart);
  if (entry === undefined && !isNumber(userPart)) {
    throw fail('EINVAL', 'run', spec, `unable to find user ${userPart}: no matching entries in the image's /etc/passwd`);
  }
  const uid = entry?.uid ?? Number(userPart);
  let gid = entry?.gid ?? 0;
  let additionalGids: number[] = [];
  if (groupPart !== undefined) {
    if (isNumber(groupPart)) gid = Number(groupPart);
    else {
      const g = groups.find((x) => x.name === groupPart);
      if (g === undefined) throw fail('EINVAL', 'run', spec, `unable to find group ${groupPart}: no matching entries in the image's /etc/group`);
      gid = g.gid;
    }
  } else if (entry !== undefined) {
    additionalGids = [...new Set(groups.filter((g) => g.members.includes(entry.name) && g.gid !== gid).map((g) => g.gid))];
  }
  return { uid, gid, additionalGids, home: entry?.home || '/' };
}

function isNumber(s: string): boolean {
  return /^[0-9]+$/.test(s);
}

/** passwd(5) lines `name:password:uid:gid:gecos:home:shell`; malformed lines are skipped, as libc does. */
function parsePasswd(text: string | undefined): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const line of (text ?? '').split('\n')) {
    const f = line.split(':');
    if (f.length < 7 || !isNumber(f[2]!) || !isNumber(f[3]!)) continue;
    out.push({ name: f[0]!, uid: Number(f[2]), gid: Number(f[3]), home: f[5]! });
  }
  return out;
}

/** group(5) lines `name:password:gid:member,member`. */
function parseGroup(text: string | undefined): GroupEntry[] {
  const out: GroupEntry[] = [];
  for (const line of (text ?? '').split('\n')) {
    const f = line.split(':');
    if (f.length < 4 || !isNumber(f[2]!)) continue;
    out.push({ name: f[0]!, gid: Number(f[2]), members: f[3]!.split(',').filter((m) => m !== '') });
  }
  return out;
}
