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

# A tree QEMU edited: a dtc-compiled virt tree (plus a slice name and a bogus
# cpu@2 listed before cpu@1) passed with -dtb; QEMU's edits leave FDT_NOP
# tokens. Read back from guest memory through the monitor before the guest
# runs (-S). The DTB sits at RAM + 64 MiB for -m 128M.
timeout 20 qemu-system-aarch64 -M virt,gic-version=3,dumpdtb="$tmp/v2.dtb" -cpu max -smp 2 -m 128M \
    -nographic -kernel "$tmp/empty" -append x
dtc -q -I dtb -O dts "$tmp/v2.dtb" \
    | sed -e 's|chosen {|chosen {\n\t\tmicrovisor,slice-name = "web-0";|' \
          -e 's|cpu@1 {|cpu@2 {\n\t\t\treg = <0x02>;\n\t\t\tdevice_type = "cpu";\n\t\t};\n\n\t\tcpu@1 {|' \
    | dtc -q -I dts -O dtb -o "$tmp/user.dtb" -
timeout 20 qemu-system-aarch64 -M virt,gic-version=3 -cpu max -smp 2 -m 128M -display none -S \
    -monitor tcp:127.0.0.1:4444,server,nowait -kernel "$tmp/empty" -dtb "$tmp/user.dtb" \
    -append "heartbeat=100" &
sleep 1.5
python3 - "$tmp/edited.dtb" <<'PY'
import socket, struct, sys, time
s = socket.create_connection(("127.0.0.1", 4444))
time.sleep(0.3)
s.sendall(f'pmemsave 0x44000000 0x100000 "{sys.argv[1]}"\n'.encode())
time.sleep(0.5)
s.sendall(b"quit\n")
time.sleep(0.3)
PY
wait
python3 - "$tmp/edited.dtb" qemu-user-dtb-with-nops.dtb <<'PY'
import struct, sys
blob = open(sys.argv[1], "rb").read()
total, = struct.unpack_from(">I", blob, 4)
open(sys.argv[2], "wb").write(blob[:total])
PY
