/**
 * The findings of one view in words: a Plan (check-walk.ts) turned into NamespaceIssues,
 * each with its severity (thin_check's rule, listed at the top of check.ts) and a fix that
 * can be followed in the state the finding leaves the pool in. A row shared by several
 * views (an image's, under its containers) is reported once, by the lowest view.
 */
import type { NamespaceIssue, NamespaceReport } from './check.js';
import { display, LOST_FOUND, type DirentRow } from './check-rows.js';
import type { Plan } from './check-walk.js';
import { isDir } from './mode.js';

/** Examples named in one message, at most. */
const MAX_EXAMPLES = 3;

/**
 * Turn a plan into issues of `report` (each shared row reported once, by the lowest view
 * that sees it: `reported` holds the keys of rows already reported). A `busy` view (mounted)
 * is not repaired, and its fixes say so.
 */
export function describePlan(p: Plan, report: NamespaceReport, reported: Set<string>, busy: boolean, mountedBy: string[] | undefined): void {
  const add = (severity: NamespaceIssue['severity'], message: string, fix: string) => {
    const held = busy && severity !== 'info' ? ` (not while ${mountedBy?.join(', ') ?? 'a view'} is mounted: unmount it, then run \`thinfs check --repair\` again)` : '';
    report.issues.push({ severity, message: `${p.label}: ${message}`, fix: `${fix}${held}` });
  };
  const fresh = <T>(items: T[], key: (t: T) => string): T[] =>
    items.filter((t) => {
      const k = key(t);
      if (reported.has(k)) return false;
      reported.add(k);
      return true;
    });
  const examples = (items: string[]) => items.slice(0, MAX_EXAMPLES).join(', ') + (items.length > MAX_EXAMPLES ? ', …' : '');
  const rowKey = (kind: string) => (r: DirentRow) => `${kind}:${r.layer}:${r.parent}:${r.key}`;

  if (p.rootMissing) add('fatal', 'the root directory is missing', 'run `thinfs check --repair` to make an empty root directory (entries found below it show again)');
  if (p.rootNotDir) add('fatal', 'the root inode is not a directory', 'run `thinfs check --repair` to make it a directory again');
  const dangling = fresh(p.dangling, rowKey('dangling'));
  if (dangling.length > 0) {
    add(
      'fatal',
      `${count(dangling.length, 'entry points', 'entries point')} at inodes that do not exist (ls shows EIO): ${examples(dangling.map((r) => `${entryPath(p, r)} -> inode ${r.child}`))}`,
      'run `thinfs check --repair` to remove these entries (the files they named are lost; restore them from a backup)',
    );
  }
  const revive = fresh(p.revive, (r) => rowKey('dangling')(r.row));
  if (revive.length > 0) {
    add(
      'fatal',
      `${count(revive.length, 'entry points', 'entries point')} at inodes that are lost, though their ${revive.every((r) => r.dir) ? 'entries' : revive.every((r) => !r.dir) ? 'blocks' : 'entries or blocks'} are still there (ls shows EIO): ${examples(revive.map((r) => `${entryPath(p, r.row)} -> inode ${r.row.child}`))}`,
      'run `thinfs check --repair` to make these inodes again from what is left (owner root, mode 0755 for directories and 0644 for files, a file\'s size rounded up to whole blocks)',
    );
  }
  const wrongType = fresh(p.wrongType, (w) => rowKey('type')(w.row));
  if (wrongType.length > 0) {
    add('fatal', `${count(wrongType.length, 'entry shows', 'entries show')} another file type than their inode has: ${examples(wrongType.map((w) => entryPath(p, w.row)))}`, 'run `thinfs check --repair` to set the entries\' type from their inodes');
  }
  const extra = fresh(p.extraDirNames, rowKey('extra'));
  if (extra.length > 0) {
    add(
      'fatal',
      `${count(extra.length, 'directory has', 'directories have')} a second name (a loop or a hard-linked directory): ${examples(extra.map((r) => `${entryPath(p, r)} -> ${p.path(r.child!)}`))}`,
      'run `thinfs check --repair` to remove the second names (the first name and the contents stay)',
    );
  }
  const nlink = fresh(
    p.nlink.filter((n) => n.reported),
    (n) => `nlink:${n.layer}:${n.ino}`,
  );
  const low = nlink.filter((n) => !n.isDir && n.have < n.want);
  const other = nlink.filter((n) => n.isDir || n.have >= n.want);
  if (low.length > 0) {
    add(
      'fatal',
      `${count(low.length, 'file counts', 'files count')} fewer links than names (removing one name would free data another name still shows): ${examples(low.map((n) => `inode ${n.ino} nlink ${n.have}, ${n.want} name(s)`))}`,
      'run `thinfs check --repair` to recount the links',
    );
  }
  if (other.length > 0) {
    add('leak', `${count(other.length, 'inode has', 'inodes have')} a wrong link count: ${examples(other.map((n) => `inode ${n.ino} nlink ${n.have}, should be ${n.want}`))}`, 'run `thinfs check --repair` to recount the links');
  }
  if (p.orphans.length > 0) {
    if (busy) {
      add('info', `${count(p.orphans.length, 'unlinked inode', 'unlinked inodes')} may be held open by ${mountedBy?.join(', ') ?? 'a mounted view'}`, 'nothing to do: they are freed when their last handle closes, or at the next mount');
    } else {
      add(
        'leak',
        `${count(p.orphans.length, 'unlinked inode (nlink 0, no open handle) still holds', 'unlinked inodes (nlink 0, no open handle) still hold')} rows and blocks: ${examples(p.orphans.map((o) => `inode ${o.ino}`))}`,
        'run `thinfs check --repair` to free them',
      );
    }
  }
  if (p.unreachable.length > 0) {
    const dirs = p.unreachable.filter((u) => isDir(u.mode)).length;
    add(
      'leak',
      `${count(p.unreachable.length, 'inode', 'inodes')}${dirs > 0 ? ` (${dirs} director${dirs === 1 ? 'y' : 'ies'})` : ''} with links cannot be reached from /: ${examples(p.unreachable.map((u) => `inode ${u.ino}`))}`,
      `run \`thinfs check --repair\` to link them into /${LOST_FOUND} (named #INODE)`,
    );
  }
  if (p.stale.length > 0) add('leak', `${count(p.stale.length, 'entry lies', 'entries lie')} in directories this view does not show`, 'run `thinfs check --repair` to delete them');
  if (p.lostKeys.length > 0) {
    add('leak', `${count(p.lostKeys.length, 'file key holds', 'file keys hold')} blocks that no inode uses: ${examples(p.lostKeys.map((k) => `key ${k}`))}`, `run \`thinfs check --repair\` to make them files again in /${LOST_FOUND}`);
  }
  if (p.emptyWhiteouts.length > 0) add('info', `${count(p.emptyWhiteouts.length, 'whiteout hides', 'whiteouts hide')} nothing (harmless)`, 'nothing needed; `thinfs check --repair` drops them');
}

/** `n` and the noun that fits it: count(1, 'entry', 'entries') is '1 entry'. */
export function count(n: number, one: string, many: string): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** The path of `row` for a message. */
function entryPath(plan: Plan, row: DirentRow): string {
  const dir = plan.path(row.parent);
  return `${dir === '/' ? '' : dir}/${display(row.name)}`;
}
