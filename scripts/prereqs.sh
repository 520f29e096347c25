#!/usr/bin/env bash
# Installs what imdsguard needs on a fresh Debian 12 machine, and nothing that is already there.
# Sourced by scripts/demo and scripts/test; safe to run again.
set -euo pipefail

APT_PACKAGES=(clang llvm libbpf-dev nftables iproute2 iputils-ping curl python3 pkg-config ca-certificates strace
  chromium podman mmdebstrap binutils)
# Node for the UI's browser tests; a machine with its own Node (and its bundled npm) keeps it.
command -v npm >/dev/null 2>&1 || APT_PACKAGES+=(nodejs npm)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "==> installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "cargo is missing: install Rust 1.95 with rustup (https://rustup.rs) and run this again" >&2
    exit 1
  fi
fi
for c in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$c"; then
    rustup component add "$c" >/dev/null 2>&1 || true
  fi
done

# The UI's browser tests (crates/imdsguard/tests/ui.rs): playwright-core, pinned by its lock file,
# drives the chromium installed above (it downloads no browser).
ui_tests="$(dirname "${BASH_SOURCE[0]}")/../tests/ui"
if [ ! -f "$ui_tests/node_modules/playwright-core/package.json" ]; then
  echo "==> installing the UI tests' node modules (npm ci in tests/ui)"
  (cd "$ui_tests" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

# The SDK tests (crates/imdsguard/tests/sdk.rs): azure-identity, boto3 and google-auth, pinned in
# tests/sdk/requirements.txt, in a virtualenv of the machine's own python3 (Debian's, not one a
# version manager put first on PATH) under the ignored target/. Made again only when it is missing
# or the requirements changed; the copy of the requirements it was made from is written last, so
# an install that failed half-way is redone (and the test skips until then).
if ! dpkg-query -W -f='${Status}' python3-venv 2>/dev/null | grep -q "install ok installed"; then
  echo "==> installing Debian packages: python3-venv"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
fi
sdk_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
sdk_venv="$sdk_root/target/sdk-venv"
sdk_requirements="$sdk_root/tests/sdk/requirements.txt"
if [ ! -x "$sdk_venv/bin/python" ] || ! cmp -s "$sdk_requirements" "$sdk_venv/requirements.installed"; then
  echo "==> installing the SDK tests' Python packages (tests/sdk/requirements.txt) into target/sdk-venv"
  rm -rf "$sdk_venv"
  /usr/bin/python3 -m venv "$sdk_venv"
  "$sdk_venv/bin/pip" install -q --no-input --disable-pip-version-check -r "$sdk_requirements"
  cp "$sdk_requirements" "$sdk_venv/requirements.installed"
fi
