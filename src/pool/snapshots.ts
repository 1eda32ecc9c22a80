/**
 * The snapshot tree: layers (each holding the mappings one device wrote) and the devices
 * that point at their top layer. A device reads through the chain of its layer's parents.
 *
 * Snapshotting is O(1): the snapshot gets a new empty layer over the origin's. A layer
 * that has children is frozen, so when the origin is still writable (a container being
 * committed) the origin moves onto a new empty layer of its own: both see the same frozen
 * past, and neither sees the other's later writes. No mapping is copied, ever. Each layer
 * belongs to at most one device, so a device's exclusive blocks are exactly its top
 * layer's.
 *
 * Counters (mapped and owned pool blocks, inline bytes visible and owned, per layer)
 * change on every write; they are kept in memory and
 * written to the layers table by flush() inside the open transaction, so that a rolled-
 * back operation reloads exactly the state it started from (load()).
 *
 * Failure contract: every method here only changes the database inside the caller's
 * savepoint and the in-memory tree; when the caller's operation fails it rolls back the
 * savepoint and calls load(), which rebuilds the tree as it was.
 */
import { fail } from '../errors.js';
import { logger } from '../log.js';
import type { Db } from './metadata.js';
import type { DevId, DeviceInfo, DeviceKind, LayerId, PBlock } from './types.js';

const log = logger('pool');

export interface Layer {
  id: LayerId;
  parentId: LayerId | null;
  depth: number;
  frozen: boolean;
  /** Pool blocks visible through the chain ending here. */
  mapped: number;
  /** Pool blocks this layer's own rows map. */
  owned: number;
  /** Inline bytes visible through the chain ending here (thin.ts). */
  inlineMapped: number;
  /** Inline bytes in this layer's own rows. */
  inlineOwned: number;
  children: number;
}

export interface DeviceRow {
  id: DevId;
  name: string;
  originId: DevId | null;
  kind: DeviceKind;
  readOnly: boolean;
  sizeLimitBytes: number;
  createdNs: bigint;
  state: 'active' | 'deferred';
  layerId: LayerId;
}

/** A device's chain: layers top first, and each layer's position in it. */
export interface Chain {
  top: LayerId;
  layers: LayerId[];
  pos: Map<LayerId, number>;
}

function nowNs(): bigint {
  return BigInt(Date.now()) * 1_000_000n;
}

export class SnapshotTree {
  readonly layers = new Map<LayerId, Layer>();
  readonly devices = new Map<DevId, DeviceRow>();
  private readonly chains = new Map<DevId, Chain>();
  /** Open handles per device (not transactional: handles outlive operations). */
  readonly openCount = new Map<DevId, number>();
  private readonly dirtyLayers = new Set<LayerId>();
  private readonly st;

  constructor(
    private readonly db: Db,
    private readonly blockSizeBytes: number,
  ) {
    this.st = {
      insertLayer: db.prepare('INSERT INTO layers (parent_id, depth, frozen, mapped, owned, inline_mapped, inline_owned) VALUES (?, ?, 0, ?, 0, ?, 0)'),
      updateLayerCounts: db.prepare('UPDATE layers SET mapped = ?, owned = ?, inline_mapped = ?, inline_owned = ? WHERE id = ?'),
      freezeLayer: db.prepare('UPDATE layers SET frozen = 1 WHERE id = ?'),
      deleteLayer: db.prepare('DELETE FROM layers WHERE id = ?'),
      layerBlocks: db.prepare('SELECT pblock FROM mappings WHERE layer = ? AND pblock IS NOT NULL').pluck(),
      deleteLayerMappings: db.prepare('DELETE FROM mappings WHERE layer = ?'),
      insertDevice: db.prepare(
        'INSERT INTO devices (name, origin_id, kind, read_only, size_limit, created_ns, state, layer_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
      ),
      setDeviceLayer: db.prepare('UPDATE devices SET layer_id = ? WHERE id = ?'),
      deleteDevice: db.prepare('DELETE FROM devices WHERE id = ?'),
    };
  }

  /** (Re)load layers and devices from the database (after open, or a rollback). */
  load(): void {
    this.dirtyLayers.clear();
    this.layers.clear();
    for (const r of this.db.prepare('SELECT id, parent_id, depth, frozen, mapped, owned, inline_mapped, inline_owned FROM layers').all() as Record<string, number | null>[]) {
      this.layers.set(r.id as LayerId, {
        id: r.id as LayerId,
        parentId: r.parent_id as LayerId | null,
        depth: r.depth as number,
        frozen: r.frozen === 1,
        mapped: r.mapped as number,
        owned: r.owned as number,
        inlineMapped: r.inline_mapped as number,
        inlineOwned: r.inline_owned as number,
        children: 0,
      });
    }
    for (const l of this.layers.values()) if (l.parentId !== null) this.layers.get(l.parentId)!.children++;
    this.devices.clear();
    this.db.defaultSafeIntegers(true);
    let rows: Record<string, bigint | string | null>[];
    try {
      rows = this.db.prepare('SELECT * FROM devices').all() as Record<string, bigint | string | null>[];
    } finally {
      this.db.defaultSafeIntegers(false);
    }
    for (const r of rows) {
      this.devices.set(Number(r.id) as DevId, {
        id: Number(r.id) as DevId,
        name: r.name as string,
        originId: r.origin_id === null ? null : (Number(r.origin_id) as DevId),
        kind: r.kind as DeviceKind,
        readOnly: Number(r.read_only) === 1,
        sizeLimitBytes: Number(r.size_limit),
        createdNs: r.created_ns as bigint,
        state: r.state as 'active' | 'deferred',
        layerId: Number(r.layer_id) as LayerId,
      });
    }
    this.chains.clear();
  }

  /** Write the changed layer counters into the open transaction. */
  flush(): void {
    for (const id of this.dirtyLayers) {
      const l = this.layers.get(id);
      if (l !== undefined) this.st.updateLayerCounts.run(l.mapped, l.owned, l.inlineMapped, l.inlineOwned, id);
    }
    this.dirtyLayers.clear();
  }

  /** Note that `l`'s counters changed (written by the next flush). */
  touch(l: Layer): void {
    this.dirtyLayers.add(l.id);
  }

  requireDevice(id: DevId, op: string): DeviceRow {
    const d = this.devices.get(id);
    if (d === undefined) throw fail('ENOENT', op, `device ${id}`, 'no such device');
    return d;
  }

  /** The chain of a device: its layers top first. */
  chainOf(id: DevId): Chain {
    let c = this.chains.get(id);
    if (c === undefined) {
      const dev = this.requireDevice(id, 'chain');
      const layers: LayerId[] = [];
      for (let l: LayerId | null = dev.layerId; l !== null; l = this.layers.get(l)!.parentId) layers.push(l);
      c = { top: dev.layerId, layers, pos: new Map(layers.map((l, i) => [l, i])) };
      this.chains.set(id, c);
    }
    return c;
  }

  info(d: DeviceRow): DeviceInfo {
    const l = this.layers.get(d.layerId)!;
    return {
      id: d.id,
      name: d.name,
      originId: d.originId,
      kind: d.kind,
      readOnly: d.readOnly,
      sizeLimitBytes: d.sizeLimitBytes,
      createdNs: d.createdNs,
      state: d.state,
      layerId: d.layerId,
      mappedBlocks: l.mapped,
      exclusiveBlocks: l.owned,
      inlineMappedBytes: l.inlineMapped,
      inlineExclusiveBytes: l.inlineOwned,
      mappedBytes: l.mapped * this.blockSizeBytes + l.inlineMapped,
      exclusiveBytes: l.owned * this.blockSizeBytes + l.inlineOwned,
      depth: l.depth,
    };
  }

  /** Inline bytes held by all layers (each row is owned by exactly one layer). */
  inlineBytes(): number {
    let n = 0;
    for (const l of this.layers.values()) n += l.inlineOwned;
    return n;
  }

  isBusy(d: DeviceRow): boolean {
    return (this.openCount.get(d.id) ?? 0) > 0 || this.layers.get(d.layerId)!.children > 0;
  }

  /** A new empty layer over `parentId`, seeing `mapped` pool blocks and `inlineMapped` inline bytes through it. */
  insertLayer(parentId: LayerId | null, mapped: number, inlineMapped: number): Layer {
    const parent = parentId === null ? undefined : this.layers.get(parentId)!;
    const depth = parent === undefined ? 1 : parent.depth + 1;
    const id = Number(this.st.insertLayer.run(parentId, depth, mapped, inlineMapped).lastInsertRowid) as LayerId;
    const layer: Layer = { id, parentId, depth, frozen: false, mapped, owned: 0, inlineMapped, inlineOwned: 0, children: 0 };
    this.layers.set(id, layer);
    if (parent !== undefined) parent.children++;
    return layer;
  }

  /**
   * Called when a layer is frozen or a device moves to another layer: blocks a device owned
   * (written in place) may now be a snapshot's. Whoever caches mappings outside the pool
   * (the FUSE C hot path) must drop them and let in-flight I/O finish (pool.ts wires it).
   */
  onLayout: (() => void) | undefined = undefined;

  freezeLayer(l: Layer): void {
    if (l.frozen) return;
    this.onLayout?.();
    l.frozen = true;
    this.st.freezeLayer.run(l.id);
  }

  insertDevice(name: string, originId: DevId | null, kind: DeviceKind, readOnly: boolean, sizeLimitBytes: number, layerId: LayerId): DevId {
    const createdNs = nowNs();
    const id = Number(
      this.st.insertDevice.run(name, originId, kind, readOnly ? 1 : 0, sizeLimitBytes, createdNs, 'active', layerId).lastInsertRowid,
    ) as DevId;
    this.devices.set(id, { id, name, originId, kind, readOnly, sizeLimitBytes, createdNs, state: 'active', layerId });
    return id;
  }

  /** Point device `dev` at layer `layerId` (the origin of a snapshot moves up). */
  moveDevice(dev: DeviceRow, layerId: LayerId): void {
    this.onLayout?.();
    dev.layerId = layerId;
    this.st.setDeviceLayer.run(layerId, dev.id);
    this.chains.delete(dev.id);
  }

  /** Drop a device that is not busy, then every layer nobody needs any more (their blocks go to `free`). */
  removeDevice(dev: DeviceRow, free: (pb: PBlock) => void): void {
    this.st.deleteDevice.run(dev.id);
    this.devices.delete(dev.id);
    this.chains.delete(dev.id);
    this.collectLayer(dev.layerId, free);
  }

  /** Delete layer `id` (freeing its blocks; its inline rows just go) when no device and no child layer uses it; walk up. */
  private collectLayer(id: LayerId | null, free: (pb: PBlock) => void): void {
    while (id !== null) {
      const l = this.layers.get(id);
      if (l === undefined || l.children > 0) return;
      const owner = [...this.devices.values()].find((d) => d.layerId === id);
      if (owner !== undefined) {
        // A deferred deletion waiting for its last child: complete it now.
        if (owner.state === 'deferred' && !this.isBusy(owner)) {
          this.st.deleteDevice.run(owner.id);
          this.devices.delete(owner.id);
          this.chains.delete(owner.id);
          log.info({ device: owner.name }, 'deferred deletion completed');
        } else {
          return;
        }
      }
      for (const pb of this.st.layerBlocks.all(id) as PBlock[]) free(pb);
      this.st.deleteLayerMappings.run(id);
      this.st.deleteLayer.run(id);
      this.layers.delete(id);
      this.dirtyLayers.delete(id);
      if (l.parentId !== null) this.layers.get(l.parentId)!.children--;
      id = l.parentId;
    }
  }
}
