#!/bin/sh
# make_cert.sh DIR — a throw-away test PKI for the local mock LLM server.
#
# Writes into DIR:
#   ca.pem / ca.key          a self-signed test CA (CA:TRUE, keyCertSign)
#   server.pem / server.key  a server certificate signed by that CA, valid for
#                            127.0.0.1, ::1 and localhost (serverAuth)
# Clients trust ca.pem (SSL_CERT_FILE, httpx verify=, node `ca:`, curl --cacert).
# Needs only the openssl CLI. Safe to run again: it overwrites the files.
set -eu
if [ $# -ne 1 ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
dir=$1
mkdir -p "$dir"
cd "$dir"
umask 077

openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 2 \
    -keyout ca.key -out ca.pem \
    -subj "/CN=aitrail test CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" 2>/dev/null

openssl req -newkey rsa:2048 -nodes -sha256 \
    -keyout server.key -out server.csr \
    -subj "/CN=localhost" 2>/dev/null

cat > server.ext <<'EXT'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
EXT

openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
    -sha256 -days 2 -extfile server.ext -out server.pem 2>/dev/null

rm -f server.csr server.ext ca.srl
chmod 644 ca.pem server.pem
echo "$dir/ca.pem $dir/server.pem $dir/server.key"
