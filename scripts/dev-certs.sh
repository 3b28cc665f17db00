#!/usr/bin/env bash
# Generates a development CA and a server certificate for the gateway (HAProxy), idempotently.
#   scripts/dev-certs.sh            create what is missing (or expiring within 7 days), print the dir
#   scripts/dev-certs.sh --force    regenerate everything
# Output (under $HELIOS_CERTS, default $HELIOS_CACHE/certs = /var/cache/helios/certs):
#   ca.crt / ca.key           the dev CA (clients trust ca.crt: curl --cacert ca.crt)
#   server.crt / server.key   the gateway's certificate, signed by the CA
#   server.pem                server.crt + server.key, the form HAProxy's `crt` wants
# Subject alt names: localhost, 127.0.0.1, ::1, helios-gateway and the Kubernetes service names;
# add more with HELIOS_CERT_SANS="DNS:bid.example.com,IP:192.0.2.1". Real certificates replace
# server.pem (HELIOS_GW_CERT points HAProxy at another file); nothing here is for production.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/env.sh"
dir=${HELIOS_CERTS:-$HELIOS_CACHE/certs}
mkdir -p "$dir"
chmod 700 "$dir"
cd "$dir"

valid() { # file: exists and does not expire within 7 days
  [[ -s "$1" ]] && openssl x509 -in "$1" -noout -checkend $((7 * 24 * 3600)) >/dev/null 2>&1
}

if [[ "${1:-}" == "--force" ]]; then rm -f ca.* server.*; fi

if ! valid ca.crt || [[ ! -s ca.key ]]; then
  rm -f ca.* server.*
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
    -subj "/O=Helios dev/CN=Helios dev CA" -keyout ca.key -out ca.crt \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi

sans="DNS:localhost,IP:127.0.0.1,IP:::1,DNS:helios-gateway,DNS:helios-gateway.helios.svc,DNS:helios-gateway.helios.svc.cluster.local"
[[ -n "${HELIOS_CERT_SANS:-}" ]] && sans="$sans,$HELIOS_CERT_SANS"

# Regenerate the server certificate when missing, expiring, not signed by this CA or with other SANs.
if ! valid server.crt || [[ ! -s server.key ]] ||
  ! openssl verify -CAfile ca.crt server.crt >/dev/null 2>&1 ||
  [[ "$(cat server.sans 2>/dev/null)" != "$sans" ]]; then
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/O=Helios dev/CN=helios-gateway" -keyout server.key -out server.csr 2>/dev/null
  printf 'subjectAltName=%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
    "$sans" >server.ext
  openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 397 \
    -extfile server.ext -out server.crt 2>/dev/null
  rm -f server.csr server.ext
  echo "$sans" >server.sans
fi
cat server.crt server.key >server.pem.tmp && mv server.pem.tmp server.pem
chmod 600 ca.key server.key server.pem
echo "$dir"
