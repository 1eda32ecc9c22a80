'use strict';
// npm postinstall: the native side of thinfs, reproducible from a fresh clone.
//
// thinfs has one FUSE transport: fuse-native's libfuse3 low-level mode, which thinfs
// adds to fuse-native. fuse-native's own libfuse2 high-level half is not built.
//
// 1. Applies native-deps/fuse-native.patch to node_modules/fuse-native (2.2.6),
//    once: a file that already carries the patch is left alone, and a file an
//    older patch changed but this one no longer names is put back as it came.
//    The patch makes binding.gyp build only the low-level binary, linked against
//    the system libfuse3 (pkg-config fuse3), and makes fuse-native's libfuse2
//    class (index.js) refuse to load. The reasons are written at the top of the
//    patch file.
// 2. Copies the low-level mode's sources, whole files kept in
//    native-deps/fuse-native/ (fuse-lowlevel*.{c,h}, lowlevel.js), into fuse-native.
// 3. Rebuilds fuse-native from source with node-gyp: build/Release/fuse_lowlevel.node,
//    the only binary there (the prebuilds/ fuse-native ships are never loaded:
//    lowlevel.js requires its binary by path, not through node-gyp-build).
// 4. Builds the small N-API addon in native-deps/native/ (fallocate punch hole)
//    into native-deps/build/thinfs_native.node.
// 5. Loads both binaries and checks they are the thinfs ones: the low-level mode
//    has all its replies and resolved libfuse3.so.3 from the system, fuse-native's
//    libfuse2 class refuses to load, and no libfuse.so.2 is mapped at all.
//
// Builds are skipped when a stamp (hash of patch/sources + Node version)
// matches, so repeated `npm install` stays quick. Output: one line, or the
// tail of the failing build.

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const ROOT = path.resolve(__dirname, '..');
const PATCH_FILE = path.join(__dirname, 'fuse-native.patch');
/** Whole files added to fuse-native (the low-level mode), copied next to its index.js. */
const ADDED_DIR = path.join(__dirname, 'fuse-native');
const ADDON_SRC = path.join(__dirname, 'native');
const BUILD_DIR = path.join(__dirname, 'build');
const ADDON_STAGE = path.join(BUILD_DIR, 'addon');
const ADDON_OUT = path.join(BUILD_DIR, 'thinfs_native.node');
const FUSE_NATIVE_VERSION = '2.2.6';
/** The low-level mode's binary, inside fuse-native: the one .node built there. */
const LOWLEVEL_NODE = 'build/Release/fuse_lowlevel.node';
/** What fuse-native's patched index.js (its libfuse2 class) throws when required. */
const LIBFUSE2_REFUSAL = "fuse-native's libfuse2 mode is not built in thinfs";
/** What the low-level binding must export (fuse-lowlevel.c, fuse-lowlevel-replies.c). */
const LOWLEVEL_EXPORTS = [
  'mount', 'unmount', 'notify', 'stats', 'nocap', 'reply_err', 'reply_entry', 'reply_create', 'reply_attr',
  'reply_readlink', 'reply_open', 'reply_write', 'reply_buf', 'reply_iov', 'reply_data',
  'reply_statfs', 'reply_xattr', 'reply_lseek', 'reply_readdir',
];

class BuildError extends Error {}

// ---- unified diff, applied strictly (exact context, any offset) ----

/** Parses a unified diff into [{ file, hunks: [{ oldStart, oldLines, newLines }] }]. */
function parsePatch(text) {
  const lines = text.split('\n');
  const files = [];
  let i = 0;
  while (i < lines.length) {
    if (!lines[i].startsWith('--- ') || !(lines[i + 1] || '').startsWith('+++ ')) {
      i++;
      continue;
    }
    const file = lines[i + 1].slice(4).split('\t')[0].replace(/^b\//, '');
    const entry = { file, hunks: [] };
    files.push(entry);
    i += 2;
    while (i < lines.length && lines[i].startsWith('@@ ')) {
      const m = /^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@/.exec(lines[i]);
      if (!m) throw new BuildError(`bad hunk header in ${PATCH_FILE}: ${lines[i]}`);
      let oldCount = m[2] === undefined ? 1 : Number(m[2]);
      let newCount = m[4] === undefined ? 1 : Number(m[4]);
      const hunk = { oldStart: Number(m[1]), oldLines: [], newLines: [] };
      i++;
      while (oldCount > 0 || newCount > 0) {
        const l = lines[i++];
        if (l === undefined) throw new BuildError(`truncated hunk in ${PATCH_FILE} (${file})`);
        if (l.startsWith('\\')) continue;
        const tag = l[0] || ' ';
        const body = l.slice(1);
        if (tag === ' ') {
          hunk.oldLines.push(body);
          hunk.newLines.push(body);
          oldCount--;
          newCount--;
        } else if (tag === '-') {
          hunk.oldLines.push(body);
          oldCount--;
        } else if (tag === '+') {
          hunk.newLines.push(body);
          newCount--;
        } else {
          throw new BuildError(`bad hunk line in ${PATCH_FILE} (${file}): ${l}`);
        }
      }
      entry.hunks.push(hunk);
    }
  }
  return files;
}

function indexOfLines(haystack, needle, from) {
  outer: for (let i = from; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

/** Applies hunks (reversed: new -> old); returns the new text, or undefined if any hunk does not match. */
function applyHunks(text, hunks, reverse) {
  const lines = text.split('\n');
  let from = 0;
  for (const h of hunks) {
    const find = reverse ? h.newLines : h.oldLines;
    const put = reverse ? h.oldLines : h.newLines;
    const at = indexOfLines(lines, find, from);
    if (at < 0) return undefined;
    lines.splice(at, find.length, ...put);
    from = at + put.length;
  }
  return lines.join('\n');
}

/**
 * Patches fuse-native in place; returns true if any file changed. The pristine
 * file is kept beside it (<file>.thinfs-orig), so a newer patch re-applies cleanly
 * over an older one, and a file an older patch changed that this one leaves alone
 * (fuse-native.c, once patched for the libfuse2 mode) is restored from it.
 */
function applyFuseNativePatch(fuseDir) {
  const files = parsePatch(fs.readFileSync(PATCH_FILE, 'utf8'));
  if (files.length === 0) throw new BuildError(`${PATCH_FILE} holds no diff`);
  const pending = [];
  const named = new Set(files.map((f) => path.join(fuseDir, f.file)));
  for (const f of fs.readdirSync(fuseDir)) {
    if (!f.endsWith('.thinfs-orig')) continue;
    const target = path.join(fuseDir, f.slice(0, -'.thinfs-orig'.length));
    if (!named.has(target)) pending.push([target, fs.readFileSync(path.join(fuseDir, f), 'utf8'), path.join(fuseDir, f)]);
  }
  for (const { file, hunks } of files) {
    const target = path.join(fuseDir, file);
    const backup = `${target}.thinfs-orig`;
    const text = fs.readFileSync(target, 'utf8');
    if (applyHunks(text, hunks, true) !== undefined) continue; // already patched
    let patched = applyHunks(text, hunks, false);
    if (patched !== undefined) {
      fs.writeFileSync(backup, text);
    } else if (fs.existsSync(backup)) {
      patched = applyHunks(fs.readFileSync(backup, 'utf8'), hunks, false); // patched by an older patch
    }
    if (patched === undefined) {
      throw new BuildError(
        `${path.relative(ROOT, target)} is neither fuse-native ${FUSE_NATIVE_VERSION} nor patched; ` +
          'reinstall it: rm -rf node_modules/fuse-native && npm install',
      );
    }
    pending.push([target, patched]);
  }
  for (const [target, text, restoredFrom] of pending) {
    fs.writeFileSync(target, text);
    if (restoredFrom) fs.rmSync(restoredFrom);
  }
  return pending.length > 0;
}

/** Copies the added files into fuse-native; returns true if any changed. */
function copyAddedFiles(fuseDir) {
  let changed = false;
  for (const f of fs.readdirSync(ADDED_DIR).sort()) {
    const src = fs.readFileSync(path.join(ADDED_DIR, f));
    const dst = path.join(fuseDir, f);
    if (fs.existsSync(dst) && fs.readFileSync(dst).equals(src)) continue;
    fs.writeFileSync(dst, src);
    changed = true;
  }
  return changed;
}

function addedFilesHash() {
  return fs.readdirSync(ADDED_DIR).sort().map((f) => f + hash(fs.readFileSync(path.join(ADDED_DIR, f)))).join(',');
}

// ---- node-gyp ----

function findNodeGyp() {
  const candidates = [];
  if (process.env.npm_config_node_gyp) candidates.push(process.env.npm_config_node_gyp);
  try {
    candidates.push(require.resolve('node-gyp/bin/node-gyp.js', { paths: [ROOT] }));
  } catch {
    // not a project dependency; fall back to the copy bundled with npm
  }
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  candidates.push(path.join(prefix, 'lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js'));
  candidates.push(path.join(prefix, 'node_modules/npm/node_modules/node-gyp/bin/node-gyp.js'));
  const found = candidates.find((p) => fs.existsSync(p));
  if (!found) throw new BuildError('node-gyp not found (it ships with npm); reinstall npm');
  return found;
}

/** Node headers already on the machine (Debian's nodejs, or a tarball install), so node-gyp downloads nothing. */
function nodedirArgs() {
  const dirs = [process.env.npm_config_nodedir, path.resolve(path.dirname(process.execPath), '..')];
  const dir = dirs.find((d) => d && fs.existsSync(path.join(d, 'include/node/node_api.h')));
  return dir ? [`--nodedir=${dir}`] : [];
}

function nodeGypRebuild(cwd, what) {
  const r = spawnSync(process.execPath, [findNodeGyp(), 'rebuild', ...nodedirArgs()], {
    cwd,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, npm_config_loglevel: 'warn' },
  });
  if (r.error || r.status !== 0) {
    const out = `${r.stdout || ''}${r.stderr || ''}`.trimEnd().split('\n').slice(-40).join('\n');
    throw new BuildError(`building ${what} failed:\n${out}${r.error ? `\n${r.error}` : ''}`);
  }
}

function hash(...parts) {
  const h = crypto.createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest('hex');
}

function stampMatches(stampFile, want, output) {
  try {
    return fs.existsSync(output) && fs.readFileSync(stampFile, 'utf8') === want;
  } catch {
    return false;
  }
}

// ---- steps ----

function buildFuseNative() {
  let pkgJson;
  try {
    pkgJson = require.resolve('fuse-native/package.json', { paths: [ROOT] });
  } catch {
    throw new BuildError('node_modules/fuse-native is missing; run npm install');
  }
  const fuseDir = path.dirname(pkgJson);
  const version = JSON.parse(fs.readFileSync(pkgJson, 'utf8')).version;
  if (version !== FUSE_NATIVE_VERSION) {
    throw new BuildError(`fuse-native ${version} installed; the patch is for ${FUSE_NATIVE_VERSION}`);
  }
  const patched = applyFuseNativePatch(fuseDir);
  const copied = copyAddedFiles(fuseDir);
  const output = path.join(fuseDir, LOWLEVEL_NODE);
  const stampFile = path.join(fuseDir, 'build/thinfs.stamp');
  const want = hash(fs.readFileSync(PATCH_FILE), addedFilesHash(), process.version);
  if (patched || copied || !stampMatches(stampFile, want, output)) {
    nodeGypRebuild(fuseDir, 'fuse-native');
    fs.writeFileSync(stampFile, want);
  }
  return fuseDir;
}

function buildAddon() {
  const sources = fs.readdirSync(ADDON_SRC).sort();
  const want = hash(...sources.map((f) => f + fs.readFileSync(path.join(ADDON_SRC, f))), process.version);
  const stampFile = path.join(BUILD_DIR, 'thinfs_native.stamp');
  if (stampMatches(stampFile, want, ADDON_OUT)) return;
  fs.rmSync(ADDON_STAGE, { recursive: true, force: true });
  fs.mkdirSync(ADDON_STAGE, { recursive: true });
  for (const f of sources) fs.copyFileSync(path.join(ADDON_SRC, f), path.join(ADDON_STAGE, f));
  nodeGypRebuild(ADDON_STAGE, 'native-deps/native');
  fs.copyFileSync(path.join(ADDON_STAGE, 'build/Release/thinfs_native.node'), ADDON_OUT);
  fs.writeFileSync(stampFile, want);
}

/** Loads what was built; returns the libfuse the low-level mode runs with. */
function verify(fuseDir) {
  const built = fs.readdirSync(path.join(fuseDir, 'build/Release')).filter((f) => f.endsWith('.node'));
  if (built.join() !== path.basename(LOWLEVEL_NODE)) {
    throw new BuildError(`fuse-native's build/Release holds ${built.join(', ') || 'nothing'}, not only ${path.basename(LOWLEVEL_NODE)}; delete node_modules/fuse-native/build and rerun`);
  }
  const addon = require(ADDON_OUT);
  if (typeof addon.punchHole !== 'function') throw new BuildError(`${ADDON_OUT} does not export punchHole`);
  const lowlevel = require(path.join(fuseDir, 'lowlevel.js'));
  const missing = LOWLEVEL_EXPORTS.filter((f) => typeof lowlevel.binding[f] !== 'function');
  if (missing.length > 0 || typeof lowlevel.FuseLowLevel !== 'function') {
    throw new BuildError(`${path.join(fuseDir, LOWLEVEL_NODE)} lacks the low-level mode (${missing.join(', ') || 'FuseLowLevel'}); delete node_modules/fuse-native/build and rerun`);
  }
  let refusal;
  try {
    require(fuseDir);
  } catch (err) {
    refusal = String(err && err.message);
  }
  if (!refusal || !refusal.includes(LIBFUSE2_REFUSAL)) {
    throw new BuildError(`${path.join(fuseDir, 'index.js')} (fuse-native's libfuse2 class) lacks the thinfs patch: ${refusal || 'it loaded'}`);
  }
  const maps = fs.readFileSync('/proc/self/maps', 'utf8').split('\n').map((l) => l.split(/\s+/)[5]);
  const lib2 = maps.find((p) => p && /\/libfuse\.so\.2/.test(p));
  if (lib2) throw new BuildError(`${lib2} is loaded; nothing thinfs builds may link libfuse2`);
  const lib3 = maps.find((p) => p && /\/libfuse3\.so\.3/.test(p));
  if (!lib3 || lib3.includes('node_modules')) {
    throw new BuildError(`fuse-native's low-level mode loaded ${lib3 || 'no libfuse3.so.3'}; expected the system libfuse3`);
  }
  return `${lib3} ${lowlevel.FuseLowLevel.FUSE_VERSION}`;
}

function main() {
  try {
    const fuseDir = buildFuseNative();
    buildAddon();
    const lib = verify(fuseDir);
    console.log(`thinfs: fuse-native ${FUSE_NATIVE_VERSION} patched: its libfuse3 low-level mode only (${path.relative(ROOT, fuseDir)}, ${lib}); native helpers built`);
    return 0;
  } catch (err) {
    console.error(`thinfs: ${err instanceof BuildError ? err.message : err.stack}`);
    return 1;
  }
}

process.exitCode = main();
