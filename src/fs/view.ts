/**
 * The chain a Filesystem currently sees. The pool replaces a device's Chain object when
 * the device moves onto a new layer (a snapshot of a writable origin); the Filesystem
 * notices by identity and drops every cache built on the old one.
 */
import type { Chain, LayerId } from '../pool/index.js';

export interface View {
  chain: Chain;
}

/** Position of `layer` in the view's chain (0 = top), or undefined when it is not in it. */
export function posOf(view: View, layer: LayerId): number | undefined {
  return view.chain.pos.get(layer);
}
