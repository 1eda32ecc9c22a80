/**
 * /lost+found, both halves (e2fsck's pass 3 and 4 reconnect): which inodes of a view's top
 * layer no path reaches and which file keys hold blocks that no inode uses (the analysis),
 * and linking them into /lost+found, made when missing (the repair). Kept together
 * because the plan counts the links that the repair will add here — a new /lost+found
 * in /, directories linked into it — and the two must agree.
 *
 * Nothing is freed here: what can still be read gets a name, #INODE, in /lost+found.
 */
import type { LayerId } from '../pool/index.js';
import { count } from './check-report.js';
import type { RepairContext } from './check-repair.js';
import { LOST_FOUND, nameKey, ROOT, type Namespace } from './check-rows.js';
import { bump, NEW_LOST_FOUND, type Plan, type Reach } from './check-walk.js';
import { S_IFDIR, S_IFMT, S_IFREG, isDir } from './mode.js';

/**
 * After the walk from /: find the existing /lost+found, and put into `plan` what must go
 * there (`unreachable`, `lostKeys`), counting in `reach` the names and links that gives.
 */
export function planLostFound(plan: Plan, ns: Namespace, keys: Map<LayerId, Set<number>>, reach: Reach): void {
  const view = plan.view;
  const top = view.topRows;
  const lf = view.list(ROOT).get(nameKey(ns.name(LOST_FOUND)));
  if (lf?.child != null && reach.dirs.has(lf.child) && reach.firstName.get(lf.child)?.parent === ROOT) plan.lostFound = lf.child;
  const lfIno = plan.lostFound ?? NEW_LOST_FOUND;

  // Inodes of the top layer with links that no path reaches go to /lost+found: directories
  // first (a directory that another lost directory holds comes along with it), then files.
  const lostDirs = [...top.inodes.values()].filter((r) => !reach.inodes.has(r.ino) && r.nlink > 0 && isDir(r.mode)).sort((a, b) => a.ino - b.ino);
  const held = new Set<number>();
  for (const d of lostDirs) for (const row of view.list(d.ino).values()) if (row.child !== null) held.add(row.child);
  for (const pass of [0, 1]) {
    for (const d of lostDirs) {
      if (reach.inodes.has(d.ino) || (pass === 0 && held.has(d.ino))) continue;
      plan.unreachable.push(d);
      reach.inodes.add(d.ino);
      reach.dirs.add(d.ino);
      reach.firstName.set(d.ino, { parent: lfIno, name: `#${d.ino}` });
      reach.names.set(d.ino, 1);
      bump(reach.subdirs, lfIno);
      bump(reach.planned, lfIno);
      reach.walk(d.ino);
    }
  }
  for (const r of top.inodes.values()) {
    if (reach.inodes.has(r.ino) || r.nlink === 0 || isDir(r.mode)) continue;
    plan.unreachable.push(r);
    reach.inodes.add(r.ino);
    reach.names.set(r.ino, 1);
  }
  const revivedKeys = new Set(plan.revive.filter((r) => !r.dir).map((r) => r.row.child!));
  for (const k of keys.get(view.top) ?? []) if (!ns.dataKeys.has(k) && !revivedKeys.has(k)) plan.lostKeys.push(k);
  if (plan.unreachable.length + plan.lostKeys.length > 0 && plan.lostFound === undefined) {
    bump(reach.subdirs, ROOT);
    bump(reach.planned, ROOT);
  }
}

/**
 * Link the plan's unreachable inodes into /lost+found and make files of its lost keys there,
 * making /lost+found (or /lost+found.N, when that name is taken) first when it is missing.
 * Returns what it did, one line each. Precondition: inside the pool's write transaction.
 */
export function linkIntoLostFound(r: RepairContext): string[] {
  const { plan: p, ns, st, top, now } = r;
  const done: string[] = [];
  if (p.unreachable.length + p.lostKeys.length === 0) return done;
  let lf = p.lostFound;
  const dirs = p.unreachable.filter((u) => isDir(u.mode)).length;
  if (lf === undefined) {
    lf = Number(st.allocIno.get());
    let name = LOST_FOUND;
    for (let i = 1; p.view.entry(ROOT, nameKey(ns.name(name)))?.child != null; i++) name = `${LOST_FOUND}.${i}`;
    st.insertDir.run(lf, top, S_IFDIR | 0o700, 2 + dirs, now, now, now, lf);
    st.upsertEntry.run(ROOT, ns.name(name), top, lf, S_IFDIR);
    done.push(`made /${name}`);
  }
  for (const u of p.unreachable) st.upsertEntry.run(lf, ns.name(`#${u.ino}`), top, u.ino, u.mode & S_IFMT);
  if (p.unreachable.length > 0) done.push(`linked ${count(p.unreachable.length, 'unreachable inode', 'unreachable inodes')} into /${LOST_FOUND}`);
  // Blocks with no inode left: a file again (a new inode on the old key), named by its inode.
  for (const key of p.lostKeys) {
    const ino = Number(st.allocIno.get());
    st.insertFile.run(ino, top, S_IFREG | 0o644, r.fileBytes(key), 1, now, now, now, key);
    st.upsertEntry.run(lf, ns.name(`#${ino}`), top, ino, S_IFREG);
  }
  if (p.lostKeys.length > 0) done.push(`made ${count(p.lostKeys.length, 'file', 'files')} in /${LOST_FOUND} of blocks no inode used`);
  return done;
}
