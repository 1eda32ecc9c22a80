/**
 * The repair of one view: the plan of check-walk.ts written into the view's top layer,
 * as the filesystem itself would write it (a name shown from below is hidden by a
 * whiteout in the top layer, a row from below is copied up before its link count is set).
 * /lost+found is check-lostfound.ts's.
 *
 * Contract: called inside the pool's write transaction, which the caller commits or, when
 * anything throws, aborts; nothing here commits. Afterwards the caller reloads the layer's
 * rows (Namespace.reload) before a view above it is analysed.
 */
import { logger } from '../log.js';
import { dropKeyRows, keyExtentBlocks, type LayerId, type Pool } from '../pool/index.js';
import { linkIntoLostFound } from './check-lostfound.js';
import { count } from './check-report.js';
import { ROOT, type DirentRow, type Namespace } from './check-rows.js';
import type { Plan } from './check-walk.js';
import { S_IFDIR, S_IFREG, isDir, nowNs } from './mode.js';

const log = logger('fs');

type Db = ReturnType<Pool['metadataDb']>;

/** The statements a repair writes with. */
function statements(db: Db) {
  return {
    upsertEntry: db.prepare(
      `INSERT INTO fs_dirents (parent, name, layer, child, type) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (parent, name, layer) DO UPDATE SET child = excluded.child, type = excluded.type`,
    ),
    deleteEntry: db.prepare('DELETE FROM fs_dirents WHERE parent = ? AND name = ? AND layer = ?'),
    deleteDir: db.prepare('DELETE FROM fs_dirents WHERE parent = ? AND layer = ?'),
    insertDir: db.prepare(
      `INSERT INTO fs_inodes (ino, layer, mode, uid, gid, size, nlink, rdev, atime, mtime, ctime, target, data_key)
       VALUES (?, ?, ?, 0, 0, 0, ?, 0, ?, ?, ?, NULL, ?)`,
    ),
    insertFile: db.prepare(
      `INSERT INTO fs_inodes (ino, layer, mode, uid, gid, size, nlink, rdev, atime, mtime, ctime, target, data_key)
       VALUES (?, ?, ?, 0, 0, ?, ?, 0, ?, ?, ?, NULL, ?)`,
    ),
    setMode: db.prepare('UPDATE fs_inodes SET mode = ? WHERE ino = ? AND layer = ?'),
    setNlink: db.prepare('UPDATE fs_inodes SET nlink = ? WHERE ino = ? AND layer = ?'),
    copyUp: db.prepare(
      `INSERT INTO fs_inodes (ino, layer, mode, uid, gid, size, nlink, rdev, atime, mtime, ctime, target, data_key)
       SELECT ino, ?, mode, uid, gid, size, ?, rdev, atime, mtime, ?, target, data_key FROM fs_inodes WHERE ino = ? AND layer = ?`,
    ),
    deleteInode: db.prepare('DELETE FROM fs_inodes WHERE ino = ? AND layer = ?'),
    deleteXattrs: db.prepare('DELETE FROM fs_xattrs WHERE ino = ? AND layer = ?'),
    allocIno: db.prepare('UPDATE fs_super SET next_ino = next_ino + 1 WHERE id = 1 RETURNING next_ino - 1').pluck(),
  };
}

/** What the repair of one view writes with, and into. */
export interface RepairContext {
  plan: Plan;
  ns: Namespace;
  st: ReturnType<typeof statements>;
  /** The view's top layer: every row is written there. */
  top: LayerId;
  /** The time stamped on made and copied-up inodes. */
  now: bigint;
  /** A revived file's size: its key's mapped blocks in the view's chain, in bytes. */
  fileBytes: (key: number) => number;
}

/** Write the plan's fixes into the view's top layer; returns what it did, one line each. Precondition: inside the pool's write transaction. */
export function repairView(pool: Pool, ns: Namespace, p: Plan): string[] {
  const top = p.view.top;
  const r: RepairContext = {
    plan: p,
    ns,
    st: statements(pool.metadataDb()),
    top,
    now: nowNs(),
    fileBytes: (key) => keyExtentBlocks(pool, key, p.view.chain) * pool.blockSizeBytes,
  };
  const { st, now } = r;
  const done: string[] = [];
  /** Make (parent, name) show nothing in this view: as unlink does (whiteout only when something below shows it). */
  const hide = (row: DirentRow) => {
    const below = p.view.entry(row.parent, row.key, 1);
    if (row.layer === top && (below === undefined || below.child === null)) st.deleteEntry.run(row.parent, row.name, top);
    else st.upsertEntry.run(row.parent, row.name, top, null, 0);
  };

  if (p.rootMissing) {
    st.insertDir.run(ROOT, top, S_IFDIR | 0o755, p.rootNlink, now, now, now, ROOT);
    done.push('made an empty root directory');
  } else if (p.rootNotDir) {
    st.setMode.run(S_IFDIR | 0o755, ROOT, top);
    st.setNlink.run(p.rootNlink, ROOT, top);
    done.push('made the root inode a directory again');
  }
  for (const row of p.dangling) hide(row);
  if (p.dangling.length > 0) done.push(`removed ${count(p.dangling.length, 'entry', 'entries')} that pointed at missing inodes`);
  for (const w of p.wrongType) st.upsertEntry.run(w.row.parent, w.row.name, top, w.row.child, w.type);
  if (p.wrongType.length > 0) done.push(`set the file type of ${count(p.wrongType.length, 'entry', 'entries')} from their inodes`);
  for (const row of p.extraDirNames) hide(row);
  if (p.extraDirNames.length > 0) done.push(`removed ${count(p.extraDirNames.length, 'second directory name', 'second directory names')}`);
  const revived = new Set<number>();
  for (const v of p.revive) {
    const ino = v.row.child!;
    if (revived.has(ino)) continue;
    revived.add(ino);
    if (v.dir) st.insertDir.run(ino, top, S_IFDIR | 0o755, v.nlink, now, now, now, ino);
    else st.insertFile.run(ino, top, S_IFREG | 0o644, r.fileBytes(ino), v.nlink, now, now, now, ino);
  }
  if (revived.size > 0) done.push(`made ${count(revived.size, 'lost inode', 'lost inodes')} again from the entries or blocks left of them`);

  for (const o of p.orphans) {
    if (isDir(o.mode)) st.deleteDir.run(o.ino, top);
    st.deleteXattrs.run(o.ino, top);
    st.deleteInode.run(o.ino, top);
    dropKeyRows(pool, top, o.dataKey);
  }
  if (p.orphans.length > 0) done.push(`freed ${count(p.orphans.length, 'unlinked inode', 'unlinked inodes')}`);

  done.push(...linkIntoLostFound(r));
  for (const n of p.nlink) {
    if (n.layer === top) st.setNlink.run(n.want, n.ino, top);
    else st.copyUp.run(top, n.want, now, n.ino, n.layer);
  }
  if (p.nlink.length > 0) done.push(`recounted the links of ${count(p.nlink.length, 'inode', 'inodes')}`);
  for (const row of [...p.stale, ...p.emptyWhiteouts]) st.deleteEntry.run(row.parent, row.name, top);
  if (p.stale.length > 0) done.push(`deleted ${count(p.stale.length, 'entry', 'entries')} of directories the view does not show`);
  if (p.emptyWhiteouts.length > 0) done.push(`dropped ${count(p.emptyWhiteouts.length, 'whiteout', 'whiteouts')} that hid nothing`);
  log.info({ layer: top, repairs: done }, 'namespace repaired');
  return done;
}
