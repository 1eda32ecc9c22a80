/**
 * Output helpers shared by the commands: sizes for people, docker-info style key/value
 * sections, borderless tables (cli-table3) and JSON. Commands write results to stdout;
 * errors go through cli/errors.ts to stderr.
 */
import bytes from 'bytes';
import Table from 'cli-table3';

/** Bytes for people, binary multiples as the size parser reads them: `64 KB`, `100 GB`. */
export function formatBytes(n: number): string {
  return bytes.format(n, { unitSeparator: ' ', decimalPlaces: 2 }) ?? `${n} B`;
}

/** `1 entry`, `3 entries`: a count with its noun in the right number. */
export function formatCount(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** A percentage without trailing zeros: `10%`, `12.5%`. */
export function formatPercent(p: number): string {
  return `${Number(p.toFixed(2))}%`;
}

/** A title line, then one ` Key: value` line per entry, as `docker info` prints its storage section. */
export function formatSection(title: string, entries: [string, string | number | boolean][]): string {
  const lines = [title];
  for (const [k, v] of entries) lines.push(` ${k}: ${String(v)}`);
  return `${lines.join('\n')}\n`;
}

/** A borderless table with a header row, columns separated by three spaces (docker ps style). */
export function formatTable(head: string[], rows: (string | number)[][]): string {
  const t = new Table({
    head,
    chars: {
      top: '', 'top-mid': '', 'top-left': '', 'top-right': '',
      bottom: '', 'bottom-mid': '', 'bottom-left': '', 'bottom-right': '',
      left: '', 'left-mid': '', mid: '', 'mid-mid': '',
      right: '', 'right-mid': '', middle: '   ',
    },
    style: { head: [], border: [], 'padding-left': 0, 'padding-right': 0 },
  });
  for (const r of rows) t.push(r.map(String));
  return `${t.toString().split('\n').map((l) => l.trimEnd()).join('\n')}\n`;
}

/** Machine-readable output of a read command (`--json`). */
export function formatJson(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}

/** Write command output to stdout. */
export function out(text: string): void {
  process.stdout.write(text);
}
