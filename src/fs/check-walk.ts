/**
 * The analysis of one view (e2fsck's passes 2 to 4 over one layer's chain): a walk from /
 * that reaches every directory once, then the link counts, the unlinked inodes and the
 * rows of the top layer that nothing shows. What it finds becomes a Plan: the findings
 * (check-report.ts words them) and, the same object, what the repair writes
 * (check-repair.ts). Placing what no path reaches into /lost+found is check-lostfound.ts.
 *
 * The analysis only reads; it answers for what the view's top layer holds.
 */
import type { LayerId } from '../pool/index.js';
import { planLostFound } from './check-lostfound.js';
import { display, LOST_FOUND, ROOT, type DirentRow, type InodeRow, type Name, type Namespace, type View } from './check-rows.js';
import { S_IFDIR, S_IFMT, S_IFREG, isDir } from './mode.js';

/** What the analysis of one view found, and what repairing it would do. */
export interface Plan {
  view: View;
  label: string;
  rootMissing: boolean;
  rootNotDir: boolean;
  /** The root's link count once repaired (2 + its subdirectories). */
  rootNlink: number;
  dangling: DirentRow[];
  /**
   * Entries whose inode is lost but whose contents are still there (a directory's entries,
   * a file's blocks): the repair makes the inode again. `nlink` once made.
   */
  revive: { row: DirentRow; dir: boolean; nlink: number }[];
  wrongType: { row: DirentRow; type: number }[];
  extraDirNames: DirentRow[];
  /** Link counts to set; `reported` is false where only the repair itself changes the count (a new /lost+found). */
  nlink: { ino: number; layer: LayerId; have: number; want: number; isDir: boolean; reported: boolean }[];
  orphans: InodeRow[];
  unreachable: InodeRow[];
  /** The existing /lost+found, or undefined (one is made when something must go there). */
  lostFound: number | undefined;
  stale: DirentRow[];
  emptyWhiteouts: DirentRow[];
  /** File keys of the top layer whose blocks no inode uses: made files again, in /lost+found. */
  lostKeys: number[];
  /** Paths of reached directories, for messages. */
  path: (dir: number) => string;
  inodes: number;
}

/** `firstName` parent of what is linked into a /lost+found that the repair is still to make. */
export const NEW_LOST_FOUND = -1;

/**
 * What the walk has reached so far, and the names and subdirectories counted on the way:
 * the link counts are computed from these once every inode is placed.
 */
export class Reach {
  /** Directories reached, each by its first name (a second one is a loop or a hard-linked directory). */
  readonly dirs = new Set<number>([ROOT]);
  readonly inodes = new Set<number>([ROOT]);
  /** ino -> names that show it. */
  readonly names = new Map<number, number>();
  /** directory -> subdirectories reached in it. */
  readonly subdirs = new Map<number, number>();
  readonly firstName = new Map<number, { parent: number; name: Name }>();
  /** Links the repair itself adds (a new /lost+found in /, directories linked into it). */
  readonly planned = new Map<number, number>();

  constructor(
    private readonly view: View,
    private readonly plan: Plan,
    /** True when blocks are mapped under file key `k` in the view's chain. */
    private readonly keyInView: (k: number) => boolean,
  ) {}

  /** Reach every name below directory `start` (breadth first), noting what is wrong on the way. */
  walk(start: number): void {
    const { view, plan } = this;
    const queue = [start];
    while (queue.length > 0) {
      const d = queue.shift()!;
      for (const row of view.list(d).values()) {
        if (row.child === null) continue;
        const child = view.inode(row.child);
        if (child === undefined) {
          if (row.type === S_IFDIR && !this.dirs.has(row.child) && view.list(row.child).size > 0) {
            // A directory whose inode is lost but whose entries are there: made again.
            plan.revive.push({ row, dir: true, nlink: 0 });
            this.dirs.add(row.child);
            this.firstName.set(row.child, { parent: d, name: row.name });
            bump(this.subdirs, d);
            this.inodes.add(row.child);
            queue.push(row.child);
          } else if (row.type === S_IFREG && this.keyInView(row.child)) {
            // A file whose inode is lost but whose blocks are still mapped under its number.
            plan.revive.push({ row, dir: false, nlink: 0 });
            bump(this.names, row.child);
          } else {
            plan.dangling.push(row);
          }
          continue;
        }
        const type = child.row.mode & S_IFMT;
        if (type !== row.type) plan.wrongType.push({ row, type });
        if (isDir(child.row.mode)) {
          if (this.dirs.has(row.child)) {
            plan.extraDirNames.push(row);
            continue;
          }
          this.dirs.add(row.child);
          this.firstName.set(row.child, { parent: d, name: row.name });
          bump(this.subdirs, d);
          this.names.set(row.child, 1);
          queue.push(row.child);
        } else {
          bump(this.names, row.child);
        }
        this.inodes.add(row.child);
      }
    }
  }
}

/** Add one to `m`'s count of `k`. */
export function bump(m: Map<number, number>, k: number): void {
  m.set(k, (m.get(k) ?? 0) + 1);
}

/** Walk view `view` of `ns` and say what is wrong with its top layer; `keys` is the pool's file keys by layer. */
export function analyze(view: View, ns: Namespace, keys: Map<LayerId, Set<number>>, label: string): Plan {
  const top = view.topRows;
  const plan: Plan = {
    view,
    label,
    rootMissing: false,
    rootNotDir: false,
    rootNlink: 2,
    dangling: [],
    revive: [],
    wrongType: [],
    extraDirNames: [],
    nlink: [],
    orphans: [],
    unreachable: [],
    lostFound: undefined,
    stale: [],
    emptyWhiteouts: [],
    lostKeys: [],
    path: (dir) => pathOf(dir, reach.firstName),
    inodes: top.inodes.size,
  };
  const reach = new Reach(view, plan, (k) => view.chain.some((l) => keys.get(l)?.has(k) === true));
  const root = view.inode(ROOT);
  // Without a root nothing is reachable; the lowest layer with rows answers for it, and the
  // repair makes one there (entries of directory 1 then show again).
  if (root === undefined) plan.rootMissing = !view.lowerHasRows;
  else if (!isDir(root.row.mode) && root.layer === view.top) plan.rootNotDir = true;

  reach.walk(ROOT);
  planLostFound(plan, ns, keys, reach);
  plan.rootNlink = 2 + (reach.subdirs.get(ROOT) ?? 0);
  for (const r of plan.revive) r.nlink = r.dir ? 2 + (reach.subdirs.get(r.row.child!) ?? 0) : reach.names.get(r.row.child!) ?? 1;

  // Link counts of every inode the view reaches (a row from below is copied up to fix it).
  for (const ino of reach.inodes) {
    const found = view.inode(ino);
    if (found === undefined) continue;
    if (ino === ROOT && plan.rootNotDir) continue;
    const dir = isDir(found.row.mode);
    const want = dir ? 2 + (reach.subdirs.get(ino) ?? 0) : reach.names.get(ino) ?? 0;
    const reported = found.row.nlink !== want - (reach.planned.get(ino) ?? 0);
    if (found.row.nlink !== want) plan.nlink.push({ ino, layer: found.layer, have: found.row.nlink, want, isDir: dir, reported });
  }
  for (const r of top.inodes.values()) if (!reach.inodes.has(r.ino) && r.nlink === 0) plan.orphans.push(r);
  const orphanIno = new Set(plan.orphans.map((o) => o.ino));

  for (const [parent, rows] of top.dirs) {
    if (!reach.dirs.has(parent)) {
      if (!orphanIno.has(parent)) plan.stale.push(...rows.values());
      continue;
    }
    for (const row of rows.values()) {
      if (row.child !== null) continue;
      const below = view.entry(parent, row.key, 1);
      if (below === undefined || below.child === null) plan.emptyWhiteouts.push(row);
    }
  }
  return plan;
}

/** True when the repair of `p` would write anything. */
export function needsRepair(p: Plan): boolean {
  return (
    p.rootMissing ||
    p.rootNotDir ||
    p.dangling.length + p.wrongType.length + p.extraDirNames.length + p.nlink.length + p.orphans.length + p.unreachable.length > 0 ||
    p.stale.length + p.emptyWhiteouts.length + p.lostKeys.length + p.revive.length > 0
  );
}

function pathOf(dir: number, firstName: Map<number, { parent: number; name: Name }>): string {
  const parts: string[] = [];
  for (let d = dir, n = 0; d !== ROOT; n++) {
    const f = firstName.get(d);
    if (f === undefined || n > 64) return `${parts.length > 0 ? '…/' : ''}<directory ${dir}>`;
    parts.unshift(f.parent === NEW_LOST_FOUND ? `${LOST_FOUND}/${display(f.name)}` : display(f.name));
    d = f.parent === NEW_LOST_FOUND ? ROOT : f.parent;
  }
  return `/${parts.join('/')}`;
}
