#!/usr/bin/env bash
# Installs what is missing: PostgreSQL 15+ with PostGIS 3 and pgRouting (Debian packages),
# optional tools (chromium for map tests, wrk for benchmarks), and the locked Python environment.
# Usage: scripts/deps.sh [--browser] [--bench]
set -euo pipefail
cd "$(dirname "$0")/.."

want_browser=0; want_bench=0
for arg in "$@"; do
  case "$arg" in
    --browser) want_browser=1 ;;
    --bench) want_bench=1 ;;
  esac
done

pg_major() { ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1; }
have_postgis() {
  # the server, and the PostGIS and pgRouting libraries (their SQL scripts alone may outlive a removal)
  local v; v=$(pg_major); [ -n "$v" ] && [ "$v" -ge 15 ] \
    && [ -x "/usr/lib/postgresql/$v/bin/postgres" ] \
    && ls /usr/lib/postgresql/"$v"/lib/postgis-3.so >/dev/null 2>&1 \
    && ls /usr/lib/postgresql/"$v"/lib/libpgrouting-*.so >/dev/null 2>&1
}

apt_packages=()
if [ -z "${WANGGE_DATABASE_URL:-}" ] && ! have_postgis; then
  v=$(pg_major); if [ -z "$v" ] || [ "$v" -lt 15 ]; then v=15; fi
  apt_packages+=("postgresql-$v" "postgresql-$v-postgis-3" "postgresql-$v-pgrouting")
fi
[ "$want_browser" = 1 ] && ! command -v chromium >/dev/null && apt_packages+=(chromium)
# A CJK font, so screenshots of the maps show Chinese names.
[ "$want_browser" = 1 ] && [ ! -d /usr/share/fonts/truetype/wqy ] && apt_packages+=(fonts-wqy-zenhei)
[ "$want_bench" = 1 ] && ! command -v wrk >/dev/null && apt_packages+=(wrk)
[ "$want_bench" = 1 ] && ! ls /usr/lib/postgresql/*/bin/pgbench >/dev/null 2>&1 && apt_packages+=(postgresql-contrib)

if [ ${#apt_packages[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    echo "Missing: ${apt_packages[*]}." >&2
    echo "This is not a Debian/Ubuntu machine: install PostgreSQL >= 15 with PostGIS 3 and pgRouting" >&2
    echo "(e.g. Homebrew: brew install postgresql@15 postgis pgrouting), chromium and wrk yourself," >&2
    echo "or point WANGGE_DATABASE_URL at an existing PostGIS, or use 'docker compose up'." >&2
    exit 1
  fi
  SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
  echo "Installing Debian packages: ${apt_packages[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
fi

# Python: a locked environment in .venv, built by uv (itself installed into .wangge/tools).
PY=""
for candidate in python3 python3.13 python3.12 python3.11; do
  if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then PY=$(command -v "$candidate"); break; fi
done
if [ -z "$PY" ]; then
  echo "Python 3.11 or newer is required (apt-get install python3 python3-venv)." >&2; exit 1
fi
UV=.wangge/tools/bin/uv
if [ ! -x "$UV" ]; then
  mkdir -p .wangge
  "$PY" -m venv .wangge/tools
  .wangge/tools/bin/pip install -q uv
fi
"$UV" sync --frozen --python "$PY" -q
