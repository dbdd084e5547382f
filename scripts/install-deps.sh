#!/usr/bin/env bash
# Installs every Debian package isoflop needs to build, test and run, and selects OpenBLAS
# (OpenMP flavour) as the system BLAS/LAPACK so LibTorch trains ~3x faster than with ATLAS.
# Idempotent: a second run finds everything present and returns in about a second.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git clang-format
  libtorch-dev libgloo-dev libceres-dev libsqlite3-dev sqlite3 libcli11-dev libyaml-cpp-dev
  nlohmann-json3-dev libgtest-dev googletest libssl-dev
  libopenblas0-openmp
  python3-nbconvert python3-nbclient python3-ipykernel python3-matplotlib python3-pandas
  python3-numpy python3-scipy python3-torch
  slurm-wlm munge slurmdbd mariadb-server
  libcpp-httplib-dev chromium
)
# node and npm (the dashboard's page packages, the browser test): Debian's, unless a node is
# already installed (e.g. NodeSource's, which bundles npm and conflicts with Debian's npm).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  PACKAGES+=(nodejs npm)
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-deps: must run as root or with sudo available" >&2; exit 1
  fi
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages already installed"
else
  echo "install-deps: installing ${#missing[@]} packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  # slurm-wlm would start daemons through systemd/invoke-rc.d on install; none is wanted here.
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Select OpenBLAS (openmp) for libblas.so.3 and liblapack.so.3. Debian's Ceres pulls in ATLAS,
# which would otherwise win the alternative on some installs and make LibTorch ~3x slower.
arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
for lib in libblas.so.3 liblapack.so.3; do
  target="/usr/lib/$arch/openblas-openmp/$lib"
  name="$lib-$arch"
  if [ -e "$target" ]; then
    current=$(readlink -f "/etc/alternatives/$name" 2>/dev/null || true)
    if [ "$current" != "$target" ]; then
      echo "install-deps: selecting $target for $name"
      $SUDO update-alternatives --set "$name" "$target"
    else
      echo "install-deps: $name -> OpenBLAS (openmp) already selected"
    fi
  fi
done

# The dashboard's npm packages (Chart.js, embedded into `isoflop`; playwright-core, which drives
# Debian's chromium in the browser test), exactly as serve/web/package-lock.json pins them. No
# browser download: the test uses /usr/bin/chromium. Skipped when that lockfile is installed.
web="$(cd "$(dirname "$0")/.." && pwd)/serve/web"
stamp="$web/node_modules/.isoflop-lock.sha256"
want=$(sha256sum "$web/package-lock.json" | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "install-deps: serve/web npm packages already installed"
else
  echo "install-deps: npm ci in serve/web"
  (cd "$web" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" > "$stamp"
fi
