#!/usr/bin/env bash
# Validates the Kubernetes examples against the Kubernetes API schemas with kubernetes-validate
# (PyPI), strictly (an unknown field is an error), for 1.29 (the oldest version with native
# sidecars, which pod-sidecar.yaml needs) and for the newest the package knows. The
# ServiceMonitor is a Prometheus Operator CRD, outside those schemas: it is only warned about.
# The tool lives in a venv in target/kubernetes-validate/ (made once). Measured on a fresh
# machine: 17 s to make the venv, 1 s to validate.
# Prints a SKIP line and exits 0 only when python3 with venv is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/kubernetes-validate
version=1.37.0
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
    if ! python3 -m venv --help >/dev/null 2>&1; then
        echo "SKIP kubernetes: python3 with venv is not installed"
        exit 0
    fi
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$version"
fi
for k8s in 1.29.0 "$version"; do
    "$venv/bin/kubernetes-validate" --strict --quiet -k "$k8s" examples/kubernetes/*.yaml
done
echo "examples/kubernetes: valid for Kubernetes 1.29 and $version"
