/**
 * The OCI runtime bundle's config.json (runtime-spec 1.0) for a container: what
 * `runc spec` generates — `runc spec --rootless` for a non-root caller — with the root
 * set to the thinfs view, the process from the image config, podman's default
 * capabilities, the run directory's /etc files bound in, and no network namespace (the
 * host's network, see rundir.ts).
 *
 * Rootless differences, each as runc's rootless template has them: a user namespace
 * mapping the caller's uid and gid to 0 (one id each: without subordinate ids nothing
 * else can be mapped), /sys bound from the host (sysfs needs a network namespace of its
 * own), devpts without gid=5 (gid 5 is not mapped), no cgroup device rules.
 */
import { CAPABILITIES, type ContainerSpec } from './container.js';

/** The runtime-spec version written into config.json (what Debian 12's runc 1.1 speaks). */
const OCI_VERSION = '1.0.2';

/** A mount entry of config.json. */
interface OciMount {
  destination: string;
  type: string;
  source: string;
  options?: string[];
}

/** The config.json object for `c`. */
export function runtimeConfig(c: ContainerSpec): Record<string, unknown> {
  const rootless = c.rootless !== undefined;
  const p = c.process;
  const caps = [...CAPABILITIES];
  return {
    ociVersion: OCI_VERSION,
    process: {
      terminal: c.tty,
      user: { uid: p.user.uid, gid: p.user.gid, ...(p.user.additionalGids.length > 0 ? { additionalGids: p.user.additionalGids } : {}) },
      args: p.args,
      env: p.env,
      cwd: p.cwd,
      capabilities: { bounding: caps, effective: caps, permitted: caps },
      noNewPrivileges: false,
    },
    root: { path: c.rootfs, readonly: c.readOnly },
    hostname: c.hostname,
    mounts: mounts(c),
    linux: {
      ...(rootless
        ? {
            uidMappings: [{ containerID: 0, hostID: c.rootless!.uid, size: 1 }],
            gidMappings: [{ containerID: 0, hostID: c.rootless!.gid, size: 1 }],
          }
        : { resources: { devices: [{ allow: false, access: 'rwm' }] } }),
      namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, ...(rootless ? [{ type: 'user' }] : [])],
      maskedPaths: [
        '/proc/acpi',
        '/proc/asound',
        '/proc/kcore',
        '/proc/keys',
        '/proc/latency_stats',
        '/proc/timer_list',
        '/proc/timer_stats',
        '/proc/sched_debug',
        '/sys/firmware',
        '/proc/scsi',
      ],
      readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
    },
  };
}

function mounts(c: ContainerSpec): OciMount[] {
  const rootless = c.rootless !== undefined;
  return [
    { destination: '/proc', type: 'proc', source: 'proc' },
    { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
    {
      destination: '/dev/pts',
      type: 'devpts',
      source: 'devpts',
      options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', ...(rootless ? [] : ['gid=5'])],
    },
    { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    rootless
      ? { destination: '/sys', type: 'none', source: '/sys', options: ['rbind', 'nosuid', 'noexec', 'nodev', 'ro'] }
      : { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
    ...(rootless ? [] : [{ destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: ['nosuid', 'noexec', 'nodev', 'relatime', 'ro'] }]),
    ...c.files.binds.map((b) => ({ destination: b.destination, type: 'bind', source: b.source, options: ['rbind', 'rprivate', 'nosuid', 'nodev', 'noexec'] })),
  ];
}
