#!/usr/bin/env bash
# Prints the HAProxy backend section for the appliance nodes (stdout), from a list of nodes:
#   deploy/haproxy/render-appliances.sh "127.0.0.1:8080/9100 10.0.0.2:8080/9100@ns1 ..."
# Each node is host:bid_port[/admin_port][@netns]:
#   admin_port  where GET /readyz answers 200 when the node is ready (default 9100); the gateway
#               sends no bid to a node whose check fails (2 failures at 1 s → down, 250 ms re-checks
#               while failing), and closes its sessions when it goes down.
#   netns       a Linux network namespace HAProxy connects into (the three-node test puts each
#               node in its own; the admin port then stays on the node's loopback).
# No node at all → an empty backend: exchange routes answer 503 (the tests of the gateway's own
# rules use that).
#   deploy/haproxy/render-appliances.sh --dns NAME:PORT/ADMIN_PORT MAX
# renders up to MAX servers from the addresses NAME resolves to (a Kubernetes headless Service:
# one A record per ready pod), re-resolved at run time (`resolvers sys` in haproxy.cfg).
set -euo pipefail
dns=""
if [[ "${1:-}" == "--dns" ]]; then
  dns=$2
  max=${3:-32}
  [[ "$dns" =~ ^([A-Za-z0-9_.-]+):([0-9]+)/([0-9]+)$ ]] || { echo "render-appliances: bad --dns '$dns' (want name:port/admin_port)" >&2; exit 2; }
  dns_name=${BASH_REMATCH[1]} dns_port=${BASH_REMATCH[2]} dns_admin=${BASH_REMATCH[3]}
  [[ "$max" =~ ^[1-9][0-9]*$ ]] || { echo "render-appliances: bad max '$max'" >&2; exit 2; }
  nodes=""
else
  nodes=${1:-${HELIOS_GW_APPLIANCES:-}}
fi
cat <<'HEAD'
# Rendered by deploy/haproxy/render-appliances.sh — do not edit.
backend be_appliances
    balance leastconn
    # HTTP/1.1 keep-alive to the nodes: idle server connections are reused by any client request.
    option http-keep-alive
    http-reuse safe
    option httpchk
    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host helios
    http-check expect status 200
    # A bid request the node never received (connection refused, reset before any byte of the
    # answer) goes to another node once; a slow answer is never retried (the exchange's tmax).
    retries 1
    retry-on conn-failure empty-response
    option redispatch 1
    timeout server 1s
    default-server inter 1s fastinter 250ms downinter 1s fall 2 rise 2 maxconn 2000 on-marked-down shutdown-sessions
HEAD
if [[ -n "$dns" ]]; then
  printf '    server-template node 1-%d %s:%s check port %s resolvers sys init-addr none\n' \
    "$max" "$dns_name" "$dns_port" "$dns_admin"
fi
i=0
for node in $nodes; do
  i=$((i + 1))
  ns=""
  if [[ "$node" == *@* ]]; then ns=${node#*@}; node=${node%@*}; fi
  admin=9100
  if [[ "$node" == */* ]]; then admin=${node#*/}; node=${node%/*}; fi
  [[ "$node" =~ ^[A-Za-z0-9_.-]+:[0-9]+$ ]] || { echo "render-appliances: bad node '$node' (want host:port[/admin][@netns])" >&2; exit 2; }
  [[ "$admin" =~ ^[0-9]+$ ]] || { echo "render-appliances: bad admin port '$admin'" >&2; exit 2; }
  printf '    server node%d %s check port %s%s\n' "$i" "$node" "$admin" "${ns:+ namespace $ns}"
done
