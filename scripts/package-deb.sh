#!/usr/bin/env bash
# Builds the Debian package of Latchkey from packaging/debian/ with dpkg-deb
# and prints the path of the .deb on standard output (progress on stderr).
#
#   ./scripts/package-deb.sh [release|dev]
#
# release (the default, what releases ship): `cargo build --release`, a
#   stripped, optimised binary. A cold release build costs ~20 CPU-minutes.
# dev: the debug binary. CI packages the one its tests already built (pass
#   it in LATCHKEY_PACKAGE_BINARY) to prove the packaging, not the optimiser.
#
# The profile may also come from LATCHKEY_PACKAGE_PROFILE.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*" >&2; }

profile="${1:-${LATCHKEY_PACKAGE_PROFILE:-release}}"
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  # The same build directory as scripts/test.sh.
  export CARGO_TARGET_DIR="/var/tmp/latchkey-target-$(pwd -P | cksum | cut -d' ' -f1)"
fi

case "$profile" in
  release)
    say "cargo build --release"
    cargo build --release --locked -p latchkey --bin latchkey >&2
    binary="$CARGO_TARGET_DIR/release/latchkey"
    ;;
  dev)
    binary="${LATCHKEY_PACKAGE_BINARY:-}"
    if [ -z "$binary" ]; then
      say "cargo build (debug)"
      cargo build --locked -p latchkey --bin latchkey >&2
      binary="$CARGO_TARGET_DIR/debug/latchkey"
    fi
    ;;
  *)
    echo "usage: $0 [release|dev]" >&2
    exit 2
    ;;
esac
[ -x "$binary" ] || { echo "no binary at $binary" >&2; exit 1; }

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' crates/latchkey/Cargo.toml | head -n1)"
arch="$(dpkg --print-architecture)"
[ "$profile" = dev ] && version="${version}~dev"
out="$CARGO_TARGET_DIR/deb"
root="$out/latchkey_${version}_${arch}"
rm -rf "$root"
mkdir -p "$root/DEBIAN"

src=packaging/debian
install -D -m 0755 "$binary" "$root/usr/bin/latchkey"
# Debug symbols are not shipped (a debug build's are hundreds of MB).
strip --strip-debug "$root/usr/bin/latchkey"
install -D -m 0644 "$src/latchkey.service" "$root/lib/systemd/system/latchkey.service"
install -D -m 0644 "$src/latchkey.toml" "$root/etc/latchkey/latchkey.toml"
install -D -m 0640 "$src/latchkey.env" "$root/etc/latchkey/latchkey.env"
for doc in README.md docs/operations.md docs/configuration.md docs/cli.md; do
  install -D -m 0644 "$doc" "$root/usr/share/doc/latchkey/$(basename "$doc")"
done
printf 'Latchkey\nLicense: Apache-2.0\n' > "$root/usr/share/doc/latchkey/copyright"
install -m 0644 "$src/conffiles" "$root/DEBIAN/conffiles"
install -m 0755 "$src/postinst" "$src/prerm" "$src/postrm" "$root/DEBIAN/"

# Shared libraries the binary links (libssl for passkeys, libc): the
# packages that hold them, at the versions on this machine or later.
depends="adduser"
for lib in $(ldd "$root/usr/bin/latchkey" | awk '/=>/ { print $3 }'); do
  pkg="$(dpkg -S "$(readlink -f "$lib")" 2>/dev/null | head -n1 | cut -d: -f1 || true)"
  [ -z "$pkg" ] && pkg="$(dpkg -S "$lib" 2>/dev/null | head -n1 | cut -d: -f1 || true)"
  [ -n "$pkg" ] || continue
  case "$depends," in *" $pkg ("*) continue ;; esac
  ver="$(dpkg-query -W -f='${Version}' "$pkg" | sed 's/-[^-]*$//')"
  depends="$depends, $pkg (>= $ver)"
done
size="$(du -sk --exclude=DEBIAN "$root" | cut -f1)"
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@DEPENDS@/$depends/" \
  -e "s/@SIZE@/$size/" "$src/control.in" > "$root/DEBIAN/control"

deb="$out/latchkey_${version}_${arch}.deb"
say "dpkg-deb --build ($profile, $(du -sh "$root/usr/bin/latchkey" | cut -f1) binary)"
dpkg-deb --root-owner-group -Zgzip -z1 --build "$root" "$deb" >&2
echo "$deb"
