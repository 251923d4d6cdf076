#!/bin/sh
# Regenerates the device-tree fixtures used by `cargo test -p microvisor-probe --lib`.
# Needs dtc and qemu-system-aarch64.
set -eu
cd "$(dirname "$0")/../tests/fixtures"
for dts in *.dts; do
    dtc -q -I dts -O dtb -o "${dts%.dts}.dtb" "$dts"
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '\0' > "$tmp/empty"
timeout 20 qemu-system-aarch64 -M virt,gic-version=3,dumpdtb="$tmp/virt.dtb" -cpu max -smp 4 -m 256M \
    -nographic -kernel "$tmp/empty" -append "heartbeat=500 attack=mmio"
# QEMU pads its tree to 1 MiB; pack it.
dtc -q -I dtb -O dtb -o qemu-virt-4cpu-256m.dtb "$tmp/virt.dtb"
