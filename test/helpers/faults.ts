/**
 * A fault plan for the pool's fault injection (Pool.open(root, { faults })): it can fail
 * the Nth host call of one kind once, and record every call it sees.
 */
import type { IoFaults, IoOp } from '../../src/pool/index.js';

export type FaultCode = 'ENOSPC' | 'EIO';

/** What an injected failure looks like: Node errno errors for host I/O, SQLite errors for statements. */
export function injectedError(op: IoOp, code: FaultCode): Error {
  if (op === 'sql' || op === 'commit') {
    return code === 'ENOSPC'
      ? Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' })
      : Object.assign(new Error('disk I/O error'), { code: 'SQLITE_IOERR' });
  }
  const syscall = op === 'pread' ? 'read' : op === 'pwrite' ? 'write' : op;
  return code === 'ENOSPC'
    ? Object.assign(new Error(`ENOSPC: no space left on device, ${syscall}`), { code: 'ENOSPC', errno: -28, syscall })
    : Object.assign(new Error(`EIO: i/o error, ${syscall}`), { code: 'EIO', errno: -5, syscall });
}

export class FaultPlan implements IoFaults {
  /** Every call seen while `recording` is set, in order. */
  calls: IoOp[] = [];
  recording = false;
  private armed: { op: IoOp; nth: number; code: FaultCode; seen: number } | undefined;
  private firedOp: IoOp | undefined;

  /** Fail the `nth` (1-based) call of `op` from now on, once, with `code`. */
  arm(op: IoOp, nth: number, code: FaultCode): void {
    this.armed = { op, nth, code, seen: 0 };
    this.firedOp = undefined;
  }

  /** Stop failing; returns the kind of call that was failed since arm(), if one was. */
  disarm(): IoOp | undefined {
    this.armed = undefined;
    const fired = this.firedOp;
    this.firedOp = undefined;
    return fired;
  }

  before(op: IoOp): void {
    if (this.recording) this.calls.push(op);
    const a = this.armed;
    if (a === undefined || a.op !== op || ++a.seen < a.nth) return;
    this.armed = undefined;
    this.firedOp = op;
    throw injectedError(op, a.code);
  }
}
