'use strict';
// npm preinstall: make sure every system package the main job and the tests use is here.
//
// thinfs has one FUSE transport, fuse-native's libfuse3 low-level mode
// (native-deps/fuse-native/fuse-lowlevel.c; fuse-native's libfuse2 half is not
// built, so libfuse2 is not needed). It is built (native-deps/build.cjs) against
// Debian's libfuse3: headers from libfuse3-dev (/usr/include/fuse3), flags from
// pkg-config (fuse3.pc), libfuse3.so.3 at run time from libfuse3-3. libfuse3
// mounts directly when run as root and otherwise execs the setuid-root helper
// fusermount3, from the fuse3 package, which also ships the compat symlink
// /bin/fusermount -> fusermount3 that thinfs's unmount (src/fuse/kernel.ts) runs.
//
// As root, anything missing is installed with apt-get; otherwise one line
// names the command to run and the install stops.
// A /dev/fuse of mode 0600 is left alone (udev normally makes it 0666; the
// mount tests fix it when they run as root).

const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const TRIPLETS = { x64: 'x86_64-linux-gnu', arm64: 'aarch64-linux-gnu', arm: 'arm-linux-gnueabihf' };

function findLib(file) {
  const triplet = TRIPLETS[process.arch];
  const dirs = [];
  if (triplet) dirs.push(`/lib/${triplet}`, `/usr/lib/${triplet}`);
  dirs.push('/lib64', '/usr/lib64', '/lib', '/usr/lib');
  return dirs.map((d) => path.join(d, file)).find((p) => fs.existsSync(p));
}

function onPath(name) {
  const dirs = ['/bin', '/usr/bin', ...(process.env.PATH || '').split(':').filter(Boolean)];
  for (const dir of dirs) {
    const p = path.join(dir, name);
    if (fs.existsSync(p)) return p;
  }
  return undefined;
}

function isSetuidRoot(file) {
  try {
    const st = fs.statSync(file); // follows the fusermount -> fusermount3 symlink
    return st.uid === 0 && (st.mode & 0o4000) !== 0;
  } catch {
    return false;
  }
}

/**
 * Debian packages the main job (`npm start`) and the tests use, each with the file that
 * shows it is present. The install step brings all of them, so `npm install && npm start`
 * and `npm install && npm test` work on a fresh machine without a hand-installed tool.
 */
const WANTED = [
  // build: fuse-native and the native addon are compiled at install
  { pkg: 'make', present: () => onPath('make') },
  { pkg: 'g++', present: () => onPath('g++') },
  { pkg: 'python3', present: () => onPath('python3') },
  { pkg: 'pkg-config', present: () => onPath('pkg-config') },
  { pkg: 'libfuse3-dev', present: () => fs.existsSync('/usr/include/fuse3/fuse_lowlevel.h') },
  // runtime: libfuse3-3 (fuse-native's low-level mode links libfuse3.so.3),
  // fuse3 (setuid fusermount3, and the fusermount symlink to it)
  { pkg: 'libfuse3-3', present: () => findLib('libfuse3.so.3') },
  { pkg: 'fuse3', present: () => { const f = onPath('fusermount'); return f && isSetuidRoot(f); } },
  // npm start: the busybox image is built from busybox-static; `run` needs unshare/setpriv
  { pkg: 'busybox-static', present: () => fs.existsSync('/bin/busybox') },
  { pkg: 'util-linux', present: () => onPath('unshare') && onPath('setpriv') },
  // `thinfs run`: the OCI runtime (in /usr/sbin, off a user's PATH); its fallback sets the hostname with hostname(1)
  { pkg: 'runc', present: () => ['/usr/sbin/runc', '/usr/bin/runc'].some((f) => fs.existsSync(f)) },
  { pkg: 'hostname', present: () => fs.existsSync('/bin/hostname') || fs.existsSync('/usr/bin/hostname') },
  // tests: fio verify jobs, setfattr/getfattr, setcap/getcap (native-ll), GNU tar; bench: fuse-overlayfs comparison
  { pkg: 'fio', present: () => onPath('fio') },
  { pkg: 'attr', present: () => onPath('setfattr') && onPath('getfattr') },
  { pkg: 'libcap2-bin', present: () => ['/sbin/setcap', '/usr/sbin/setcap'].some((f) => fs.existsSync(f)) },
  { pkg: 'tar', present: () => onPath('tar') },
  { pkg: 'fuse-overlayfs', present: () => onPath('fuse-overlayfs') },
  // tests: real OCI/docker images built at test time (umoci) and copied between formats (skopeo)
  { pkg: 'umoci', present: () => onPath('umoci') },
  { pkg: 'skopeo', present: () => onPath('skopeo') },
  // tests: progress bars on a terminal, through the pty script(1) gives a command
  { pkg: 'bsdutils', present: () => onPath('script') },
  // `thinfs snapshotter` serves containerd (proxy plugin); its tests run containerd, ctr and containerd-shim-runc-v2
  { pkg: 'containerd', present: () => onPath('containerd') && onPath('ctr') && onPath('containerd-shim-runc-v2') },
];

function missingPackages() {
  return WANTED.filter((w) => !w.present()).map((w) => w.pkg);
}

function aptInstall(pkgs) {
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const run = (args) => {
    const r = spawnSync('apt-get', args, { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    if (r.error || r.status !== 0) {
      process.stderr.write((r.stdout || '') + (r.stderr || '') + (r.error ? String(r.error) + '\n' : ''));
      return false;
    }
    return true;
  };
  console.log(`thinfs: installing ${pkgs.join(' ')} with apt-get`);
  return run(['update', '-qq']) && run(['install', '-y', '-qq', '--no-install-recommends', ...pkgs]);
}

function main() {
  if (process.platform !== 'linux') {
    console.error('thinfs: needs Linux (FUSE through libfuse3); this is ' + process.platform);
    return 1;
  }
  const pkgs = missingPackages();
  if (pkgs.length === 0) return 0;

  const cmd = `apt-get install -y --no-install-recommends ${pkgs.join(' ')}`;
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  if (!isRoot || !onPath('apt-get')) {
    console.error(`thinfs: missing ${pkgs.join(', ')}; run: sudo apt-get update && sudo ${cmd}`);
    return 1;
  }
  if (!aptInstall(pkgs) || missingPackages().length > 0) {
    console.error(`thinfs: could not install ${pkgs.join(', ')}; run: apt-get update && ${cmd}`);
    return 1;
  }
  return 0;
}

process.exitCode = main();
