#!/bin/sh
# Installs the Debian packages lmx needs to build and test, only those missing.
# Idempotent: a second run does nothing. Used by `make demo` and `make test`.
set -e
PKGS="build-essential cmake pkg-config libpcre2-dev libutf8proc-dev libcjson-dev libyaml-dev"
# line editing for `lmx chat` (optional: CMake falls back to fgets without it)
PKGS="$PKGS libreadline-dev"
# clang + its runtime give libFuzzer and the sanitizer build; python3 runs fixture checks.
PKGS="$PKGS clang libclang-rt-14-dev python3"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "install-deps: installing$missing"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi
