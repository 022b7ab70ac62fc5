#!/usr/bin/env bash
# Makes sure the Debian PostgreSQL server is installed and prints the
# directory of its binaries (initdb, pg_ctl, postgres, psql) on stdout.
# Everything else goes to stderr.
#
# Only the packages are installed: no cluster is created or started here.
# (The Debian package may create and start its own system cluster through
# its service; nothing in this repository uses that one.)
set -euo pipefail

# The /usr/lib/postgresql/<version>/bin with a server in it, highest version
# first (sorted numerically on the version component).
find_bin() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    if [[ -x "$dir/initdb" && -x "$dir/pg_ctl" && -x "$dir/postgres" ]]; then
      echo "$dir"
    fi
  done | sort -t/ -k5,5nr | head -n1
}

bin="$(find_bin)"
if [[ -z "$bin" ]]; then
  if [[ $EUID -ne 0 ]]; then
    echo "install-postgres: PostgreSQL is not installed and this is not root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt_install() { apt-get install -y --no-install-recommends postgresql >&2; }
  echo "install-postgres: installing the postgresql package" >&2
  if ! apt_install; then
    # Usually stale package lists: refresh them once and try again.
    apt-get update >&2
    apt_install
  fi
  bin="$(find_bin)"
  if [[ -z "$bin" ]]; then
    echo "install-postgres: postgresql installed, but no /usr/lib/postgresql/*/bin with initdb, pg_ctl and postgres" >&2
    exit 1
  fi
fi

if ! id postgres >/dev/null 2>&1; then
  echo "install-postgres: warning: there is no 'postgres' system user" >&2
fi

"$bin/postgres" --version >&2
echo "$bin"
