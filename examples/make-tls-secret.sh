#!/usr/bin/env bash
# Prints a kubernetes.io/tls Secret "demo-tls" (namespace "demo") holding a fresh self-signed
# certificate for the demo Ingress hosts. The key never touches the repository.
#   bash examples/make-tls-secret.sh | kubectl apply -f -
#   bash examples/make-tls-secret.sh OUTDIR   # also leaves OUTDIR/tls.crt and OUTDIR/tls.key
set -euo pipefail

outdir=${1:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 30 days: a demo certificate, not something to keep.
openssl req -x509 -newkey rsa:2048 -nodes -days 30 \
  -keyout "$work/tls.key" -out "$work/tls.crt" \
  -subj "/CN=a.demo.example" \
  -addext "subjectAltName=DNS:a.demo.example,DNS:b.demo.example" 2>/dev/null

if [ -n "$outdir" ]; then
  mkdir -p "$outdir"
  cp "$work/tls.crt" "$work/tls.key" "$outdir/"
fi

crt=$(base64 -w0 "$work/tls.crt")
key=$(base64 -w0 "$work/tls.key")
cat <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: demo-tls
  namespace: demo
type: kubernetes.io/tls
data:
  tls.crt: ${crt}
  tls.key: ${key}
YAML
