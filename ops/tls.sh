#!/usr/bin/env bash
# A certificate authority of the run folder's own, and the certificates it signs, with openssl:
#   ops/tls.sh make     .run/tls: ca.pem (trust this), server.pem + server.key (localhost,
#                       127.0.0.1 and the configured hosts), server-keystore.pem (key and chain
#                       in one file, Kafka's PEM keystore), client.pem + client.key (a client
#                       certificate, for brokers that ask for one)
#   ops/tls.sh dir      where they are
# Idempotent: what exists is kept. For development and tests: the CA's key sits beside it.
set -euo pipefail
source "$(dirname "$0")/common.sh"
T="$RUN/tls"

subject_names() {
    local names="DNS:localhost,IP:127.0.0.1" host
    for host in $KAFKA_HOST $PG_HOST; do
        case "$host" in
            localhost | 127.0.0.1) ;;
            *[!0-9.]*) names="$names,DNS:$host" ;;
            *) names="$names,IP:$host" ;;
        esac
    done
    echo "$names"
}

# sign NAME CN EXTENSIONS: a key (PKCS#8, unencrypted, as Kafka's PEM keystore reads it) and a
# certificate for it, signed by the CA.
sign() {
    local name=$1 cn=$2 extensions=$3
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/$name.key" 2>/dev/null
    openssl req -new -key "$T/$name.key" -subj "/CN=$cn" -out "$T/$name.csr" 2>/dev/null
    openssl x509 -req -in "$T/$name.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial \
        -days 825 -sha256 -extfile <(printf '%s\n' "$extensions") -out "$T/$name.pem" 2>/dev/null
    rm -f "$T/$name.csr"
    chmod 600 "$T/$name.key"
}

make_all() {
    command -v openssl >/dev/null || die "openssl is required to make certificates: install it (Debian: apt-get install openssl)."
    mkdir -p "$T"
    chmod 700 "$T"
    if [ ! -s "$T/ca.pem" ]; then
        say "making a certificate authority in $T"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
            -subj "/CN=orderview development CA $(date +%s)" -keyout "$T/ca.key" -out "$T/ca.pem" 2>/dev/null \
            || die "openssl could not make a certificate authority in $T"
        chmod 600 "$T/ca.key"
    fi
    if [ ! -s "$T/server.pem" ]; then
        sign server localhost "subjectAltName=$(subject_names)
extendedKeyUsage=serverAuth,clientAuth"
        cat "$T/server.key" "$T/server.pem" >"$T/server-keystore.pem"
        chmod 600 "$T/server-keystore.pem"
    fi
    [ -s "$T/client.pem" ] || sign client orderview "extendedKeyUsage=clientAuth"
}

case "${1:-}" in
    make) make_all ;;
    dir) echo "$T" ;;
    *) die "usage: ops/tls.sh make|dir" ;;
esac
