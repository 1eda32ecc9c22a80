/** Running the built `thinfs` command in tests, and fingerprints of a pool root. */
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';

export const PROJECT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CLI = path.join(PROJECT, 'dist', 'src', 'cli', 'main.js');

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
  /** stderr split into lines (without the final empty one). */
  errLines: string[];
}

/** The test's environment without THINFS_* (a command sees only what the test gives it). */
function cliEnv(): NodeJS.ProcessEnv {
  const base = { ...process.env };
  delete base.THINFS_ROOT;
  delete base.THINFS_LOG_LEVEL;
  return base;
}

/** Run `node dist/src/cli/main.js ...args` without THINFS_* from the test's environment. */
export function thinfs(args: string[], env: Record<string, string> = {}): Promise<Run> {
  const base = cliEnv();
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...base, ...env }, encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
      resolve({ code, stdout, stderr, errLines: stderr.split('\n').filter((l) => l !== '') });
    });
  });
}

/**
 * The CLI on one root, read when each command runs (it may be set in beforeAll):
 * `cli(...args)` runs `thinfs --root ROOT ...args`; `ok(...args)` also expects it to exit 0
 * with nothing on stderr (the failure shows the arguments).
 */
export function thinfsAt(root: () => string): { cli: (...args: string[]) => Promise<Run>; ok: (...args: string[]) => Promise<Run> } {
  const cli = (...args: string[]) => thinfs(['--root', root(), ...args]);
  const ok = async (...args: string[]): Promise<Run> => {
    const r = await cli(...args);
    expect({ args, stderr: r.stderr, code: r.code }).toEqual({ args, stderr: '', code: 0 });
    return r;
  };
  return { cli, ok };
}

/** `thinfs ...args` with `input` on its stdin (a command may stop reading early: a closed pipe is no error). */
export function thinfsWithInput(args: string[], input: Buffer): Promise<Run> {
  const env = cliEnv();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr, errLines: stderr.split('\n').filter((l) => l !== '') }));
    child.stdin.on('error', () => {});
    child.stdin.end(input);
  });
}

/** Every entry under `dir` with its content hash (small files), size and allocation: equal fingerprints = nothing changed. */
export function fingerprint(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  if (!fs.existsSync(dir)) return out;
  for (const rel of fs.readdirSync(dir, { recursive: true, encoding: 'utf8' }).sort()) {
    const abs = path.join(dir, rel);
    const st = fs.lstatSync(abs);
    if (st.isDirectory()) out[rel] = 'dir';
    else if (st.size <= 4 * 1024 * 1024) out[rel] = `${st.size}:${createHash('sha256').update(fs.readFileSync(abs)).digest('hex')}`;
    else out[rel] = `${st.size}:${st.blocks}:${st.mtimeMs}`;
  }
  return out;
}

/** Parse the JSON a `--json` command printed. */
export function json<T = Record<string, unknown>>(r: Run): T {
  return JSON.parse(r.stdout) as T;
}
