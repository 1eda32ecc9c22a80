/** A promise-shaped client of the Snapshots service, as containerd calls it, for the snapshotter tests. */
import * as grpc from '@grpc/grpc-js';
import { snapshotsClient } from '../../src/snapshotter/index.js';

export interface WireInfo {
  name: string;
  parent: string;
  kind: 'UNKNOWN' | 'VIEW' | 'ACTIVE' | 'COMMITTED';
  created_at: { seconds: string; nanos: number } | null;
  updated_at: { seconds: string; nanos: number } | null;
  labels: Record<string, string>;
}

export interface WireMount {
  type: string;
  source: string;
  target: string;
  options: string[];
}

/** A gRPC error's status code name ('NOT_FOUND'), or 'OK' when `p` resolves. */
export async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'OK';
  } catch (err) {
    const code = (err as grpc.ServiceError).code;
    if (typeof code !== 'number') throw err;
    return grpc.status[code];
  }
}

export class Snapshots {
  private readonly client: grpc.Client & Record<string, (...args: unknown[]) => unknown>;

  constructor(socket: string) {
    const Client = snapshotsClient();
    this.client = new Client(`unix:${socket}`, grpc.credentials.createInsecure()) as unknown as Snapshots['client'];
  }

  private unary<R>(method: string, req: object): Promise<R> {
    return new Promise((resolve, reject) => {
      (this.client[method] as (r: object, cb: (e: grpc.ServiceError | null, r: R) => void) => void).call(this.client, req, (e, r) =>
        e ? reject(e) : resolve(r),
      );
    });
  }

  async prepare(key: string, parent = '', labels: Record<string, string> = {}): Promise<WireMount[]> {
    return (await this.unary<{ mounts: WireMount[] }>('Prepare', { snapshotter: 'thinfs', key, parent, labels })).mounts;
  }

  async view(key: string, parent = '', labels: Record<string, string> = {}): Promise<WireMount[]> {
    return (await this.unary<{ mounts: WireMount[] }>('View', { snapshotter: 'thinfs', key, parent, labels })).mounts;
  }

  async mounts(key: string): Promise<WireMount[]> {
    return (await this.unary<{ mounts: WireMount[] }>('Mounts', { snapshotter: 'thinfs', key })).mounts;
  }

  async commit(name: string, key: string, labels: Record<string, string> = {}, parent = ''): Promise<void> {
    await this.unary('Commit', { snapshotter: 'thinfs', name, key, labels, parent });
  }

  async remove(key: string): Promise<void> {
    await this.unary('Remove', { snapshotter: 'thinfs', key });
  }

  async stat(key: string): Promise<WireInfo> {
    return (await this.unary<{ info: WireInfo }>('Stat', { snapshotter: 'thinfs', key })).info;
  }

  async update(name: string, labels: Record<string, string>, paths?: string[]): Promise<WireInfo> {
    const req = { snapshotter: 'thinfs', info: { name, labels }, ...(paths !== undefined ? { update_mask: { paths } } : {}) };
    return (await this.unary<{ info: WireInfo }>('Update', req)).info;
  }

  async usage(key: string): Promise<{ size: number; inodes: number }> {
    const u = await this.unary<{ size: string; inodes: string }>('Usage', { snapshotter: 'thinfs', key });
    return { size: Number(u.size), inodes: Number(u.inodes) };
  }

  async cleanup(): Promise<void> {
    await this.unary('Cleanup', { snapshotter: 'thinfs' });
  }

  /** Every info the List stream sends, and how many messages carried them. */
  list(filters: string[] = []): Promise<{ infos: WireInfo[]; messages: number }> {
    return new Promise((resolve, reject) => {
      const infos: WireInfo[] = [];
      let messages = 0;
      const s = (this.client.List as (r: object) => grpc.ClientReadableStream<{ info: WireInfo[] }>).call(this.client, { snapshotter: 'thinfs', filters });
      s.on('data', (d: { info: WireInfo[] }) => {
        messages += 1;
        infos.push(...d.info);
      });
      s.on('end', () => resolve({ infos, messages }));
      s.on('error', reject);
    });
  }

  close(): void {
    this.client.close();
  }
}
