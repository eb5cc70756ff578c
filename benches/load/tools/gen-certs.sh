#!/usr/bin/env bash
# Makes the load harness's test PKI in DIR (default ./bench-pki): a CA, a server certificate for
# upstream.bench.local (and 127.0.0.1), two client certificates, and JWT-shaped tokens bound to
# each client certificate (cnf."x5t#S256"). The tokens are unsigned (alg "none", dummy signature):
# bench-upstream checks the certificate binding only, it is not a signature validator.
set -euo pipefail
dir=${1:-bench-pki}
mkdir -p "$dir"
cd "$dir"

ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }

ec ca.key
openssl req -x509 -new -key ca.key -sha256 -days 30 -subj "/CN=popgate bench CA" \
  -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out ca.pem 2>/dev/null

leaf() { # name cn extensions...
  local name=$1 cn=$2; shift 2
  ec "$name.key"
  openssl req -new -key "$name.key" -subj "/CN=$cn" -out "$name.csr" 2>/dev/null
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -sha256 -days 30 \
    -extfile <(printf '%s\n' "$@") -out "$name.pem" 2>/dev/null
  rm -f "$name.csr"
}
leaf server upstream.bench.local \
  "basicConstraints=critical,CA:false" "keyUsage=critical,digitalSignature" \
  "extendedKeyUsage=serverAuth" "subjectAltName=DNS:upstream.bench.local,IP:127.0.0.1"
for client in client client2; do
  leaf "$client" "bench $client" \
    "basicConstraints=critical,CA:false" "keyUsage=critical,digitalSignature" "extendedKeyUsage=clientAuth"
  thumb=$(openssl x509 -in "$client.pem" -outform DER | openssl dgst -sha256 -binary | b64url)
  header=$(printf '{"alg":"none","typ":"pop"}' | b64url)
  payload=$(printf '{"cnf":{"x5t#S256":"%s"},"aud":"bench"}' "$thumb" | b64url)
  printf 'mtls_pop %s.%s.c2ln\n' "$header" "$payload" > "$client.token"
  echo "$thumb" > "$client.x5t"
done
chmod 600 ./*.key
echo "wrote $(pwd): ca.pem server.{pem,key} client{,2}.{pem,key,token,x5t}"
