import { type CloneNetwork, NotFoundError, type OperationOptions } from '@replikit/core';
import type { XRecord } from '../xen-records.js';
import type { CloneView } from './clone-records.js';
import { sig, str, type XenFailoverContext } from './failover-context.js';

/** The network ref a map entry names (uuid or name label), or undefined when the map has none. */
function mappedNetwork(view: CloneView, map: Record<string, string>, network: XRecord): string | undefined {
  const target = map[str(network.uuid)] ?? map[str(network.name_label)];
  if (target === undefined) return undefined;
  const found =
    Object.entries(view.networks).find(([, n]) => str(n.uuid) === target) ??
    Object.entries(view.networks).find(([, n]) => str(n.name_label) === target);
  if (!found) {
    throw new NotFoundError(`the network map names network '${target}', which this pool does not have`, {
      details: { network: target },
    });
  }
  return found[0];
}

/**
 * The network each VIF device of the clone must be on: none when isolated; when mapped, the
 * network the map gives for the restore point's VIF at that device (unmapped ones are left
 * unconnected). Without the point's snapshot (pruned meanwhile), the clone's own VIFs already
 * on a mapped network are kept.
 */
function wantedNetworks(
  view: CloneView,
  network: CloneNetwork,
  snapshot: XRecord | undefined,
  clone: XRecord,
): Map<string, string> {
  const wanted = new Map<string, string>();
  if (network.mode === 'isolated') return wanted;
  if (snapshot) {
    for (const ref of (snapshot.VIFs as string[] | undefined) ?? []) {
      const vif = view.vifs[ref];
      const from = vif ? view.networks[str(vif.network)] : undefined;
      const to = from ? mappedNetwork(view, network.map, from) : undefined;
      if (vif && to) wanted.set(str(vif.device), to);
    }
    return wanted;
  }
  const targets = new Set(Object.values(network.map));
  for (const ref of (clone.VIFs as string[] | undefined) ?? []) {
    const vif = view.vifs[ref];
    const on = vif ? view.networks[str(vif.network)] : undefined;
    if (vif && on && (targets.has(str(on.uuid)) || targets.has(str(on.name_label)))) {
      wanted.set(str(vif.device), str(vif.network));
    }
  }
  return wanted;
}

/**
 * Puts the clone's VIFs where `network` says: a VIF on another network than wanted at its device
 * is destroyed, a wanted one missing is created (`VIF.create`, MAC left to the pool). Asked again,
 * it changes nothing.
 */
export async function setCloneNetworks(
  ctx: XenFailoverContext,
  view: CloneView,
  cloneRef: string,
  network: CloneNetwork,
  snapshot: XRecord | undefined,
  options?: OperationOptions,
): Promise<void> {
  const s = sig(options);
  const clone = view.vms[cloneRef]!;
  const wanted = wantedNetworks(view, network, snapshot, clone);
  const have = new Set<string>();
  for (const ref of (clone.VIFs as string[] | undefined) ?? []) {
    const vif = view.vifs[ref];
    if (!vif) continue;
    const device = str(vif.device);
    if (wanted.get(device) === str(vif.network) && !have.has(device)) {
      have.add(device);
      continue;
    }
    await ctx.connection.call('VIF.destroy', [ref], s);
  }
  for (const [device, netRef] of wanted) {
    if (have.has(device)) continue;
    await ctx.connection.callAsync(
      'VIF.create',
      [{ VM: cloneRef, network: netRef, device, MAC: '', MTU: '1500', other_config: {} }],
      s,
    );
  }
}
