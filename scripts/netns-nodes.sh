#!/usr/bin/env bash
# A private network of "nodes" on one machine, for the multi-node tests: network namespaces joined
# by a bridge, none of it in the machine's own namespace (no address, route or interface is added
# there), so test traffic never leaves the namespaces this script made.
#   scripts/netns-nodes.sh up [N]    hub + N node namespaces (default 3); idempotent
#   scripts/netns-nodes.sh down      delete them (stop their processes first: deleting a namespace
#                                    does not kill what runs in it)
#   scripts/netns-nodes.sh status
#   scripts/netns-nodes.sh env [N]   print the addresses as shell variables
#   scripts/netns-nodes.sh partition K broker|hub on|off
#                                    cut node K off the broker's address only (a blackhole route in
#                                    the node: the gateway and Redis still reach it), or off the
#                                    whole hub (its veth down); `off` heals
# Layout (prefix $HELIOS_NETNS_PREFIX, default "hl"; subnet $HELIOS_NETNS_NET, default 10.213.77):
#   hl-hub   bridge hlbr0 with $NET.1/24 (Redis, gateway) and $NET.2/24 (the broker: its own
#            address, so that a node can lose the broker alone) and loopback; the test's client
#            runs here too
#   hl-nK    eth0 = $NET.(10+K)/24 (veth to the bridge), loopback, default route via $NET.1: one
#            appliance "node" each
set -euo pipefail
prefix=${HELIOS_NETNS_PREFIX:-hl}
net=${HELIOS_NETNS_NET:-10.213.77}
hub=$prefix-hub
br=${prefix}br0

[[ "$net" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "netns-nodes: HELIOS_NETNS_NET must be three octets" >&2; exit 2; }

exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }

up() {
  local n=$1 k ns
  if ! exists "$hub"; then
    ip netns add "$hub"
  fi
  ip -n "$hub" link set lo up
  if ! ip -n "$hub" link show "$br" >/dev/null 2>&1; then
    ip -n "$hub" link add "$br" type bridge
    ip -n "$hub" addr add "$net.1/24" dev "$br"
    ip -n "$hub" addr add "$net.2/24" dev "$br"
  fi
  ip -n "$hub" link set "$br" up
  for ((k = 1; k <= n; k++)); do
    ns=$prefix-n$k
    exists "$ns" || ip netns add "$ns"
    ip -n "$ns" link set lo up
    if ! ip -n "$ns" link show eth0 >/dev/null 2>&1; then
      # Create the pair inside the hub, then move one end into the node.
      ip -n "$hub" link add "$prefix-n$k-h" type veth peer name "$prefix-n$k-e"
      ip -n "$hub" link set "$prefix-n$k-e" netns "$ns"
      ip -n "$ns" link set "$prefix-n$k-e" name eth0
      ip -n "$ns" addr add "$net.$((10 + k))/24" dev eth0
      ip -n "$hub" link set "$prefix-n$k-h" master "$br"
    fi
    ip -n "$hub" link set "$prefix-n$k-h" up
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route replace default via "$net.1" dev eth0
  done
}

down() {
  local ns
  for ns in $(ip netns list | awk '{print $1}' | grep -E "^$prefix-(hub|n[0-9]+)$" || true); do
    ip netns del "$ns"
  done
}

case "${1:-status}" in
  up) up "${2:-3}"; echo "netns-nodes: $hub + ${2:-3} nodes on $net.0/24" ;;
  down) down; echo "netns-nodes: removed" ;;
  status) ip netns list | grep -E "^$prefix-(hub|n[0-9]+)( |$)" || echo "netns-nodes: none" ;;
  env)
    echo "NETNS_HUB=$hub NETNS_HUB_ADDR=$net.1 NETNS_BROKER_ADDR=$net.2"
    for ((k = 1; k <= ${2:-3}; k++)); do echo "NETNS_N$k=$prefix-n$k NETNS_N${k}_ADDR=$net.$((10 + k))"; done
    ;;
  partition)
    k=${2:?node number} what=${3:?broker or hub} state=${4:?on or off}
    ns=$prefix-n$k
    case "$what:$state" in
      broker:on) ip -n "$ns" route replace blackhole "$net.2/32" ;;
      broker:off) ip -n "$ns" route del blackhole "$net.2/32" 2>/dev/null || true ;;
      hub:on) ip -n "$hub" link set "$prefix-n$k-h" down ;;
      hub:off) ip -n "$hub" link set "$prefix-n$k-h" up ;;
      *) echo "usage: $0 partition K broker|hub on|off" >&2; exit 2 ;;
    esac
    ;;
  *) echo "usage: $0 up [N]|down|status|env [N]|partition K broker|hub on|off" >&2; exit 2 ;;
esac
