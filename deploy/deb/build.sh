#!/usr/bin/env bash
# Builds the Debian package: target/debian/ldmd_<version>_<arch>.deb. Needs cargo-deb
# (`cargo install cargo-deb`; .ci/run installs it into target/ci-tools).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --bin ldmd --bin ldm
assets=target/assets
mkdir -p "$assets"
# Man pages and completions come from the binaries' own command-line definitions.
target/release/ldmd --generate man > "$assets/ldmd.8"
target/release/ldm --generate man > "$assets/ldm.1"
for binary in ldmd ldm; do
    target/release/$binary --generate bash > "$assets/$binary.bash"
    target/release/$binary --generate zsh > "$assets/_$binary"
    target/release/$binary --generate fish > "$assets/$binary.fish"
done
cargo deb --no-build "$@"
