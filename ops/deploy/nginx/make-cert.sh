#!/bin/sh
# Makes a self-signed certificate for the development TLS front, once per volume.
# The private key lives only in the `certs` volume; it is never part of the repository.
set -eu
DIR=${CERT_DIR:-/certs}
NAME=${CERT_HOSTNAME:-localhost}
if [ -s "$DIR/tls.crt" ] && [ -s "$DIR/tls.key" ]; then
    echo "certs: keeping the existing certificate in $DIR"
    exit 0
fi
umask 077
openssl req -x509 -newkey rsa:2048 -nodes -days 30 \
    -subj "/CN=$NAME" \
    -addext "subjectAltName=DNS:$NAME,DNS:localhost,IP:127.0.0.1" \
    -keyout "$DIR/tls.key" -out "$DIR/tls.crt"
chmod 0644 "$DIR/tls.crt"
# the key for its owner only: nginx's master process (root) reads it before dropping privileges
chmod 0600 "$DIR/tls.key"
echo "certs: made a self-signed certificate for $NAME in $DIR (development only)"
