#!/usr/bin/env bash
# Boots the probe natively on QEMU virt (no hypervisor) in several machine
# shapes and checks the lines it prints. Exits non-zero if any check fails;
# the serial log of a failing scenario is printed.
#
# usage: tools/native-smoke.sh [probe.bin]   (builds it if not given)
# needs: cargo, python3, qemu-system-aarch64 >= 10, dtc
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [[ $# -ge 1 ]]; then
    image=$1
else
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-probe}
    (cd "$here/.." && cargo build -q -p microvisor-probe --release --target aarch64-unknown-none) || exit 1
    image=$work/probe.bin
    python3 "$here/elf2image.py" "$CARGO_TARGET_DIR/aarch64-unknown-none/release/probe" "$image" >/dev/null || exit 1
fi

failures=0
log=""

# boot <seconds> <qemu machine args...> -- <kernel command line>
boot() {
    local seconds=$1; shift
    local args=()
    while [[ $1 != -- ]]; do args+=("$1"); shift; done
    shift
    log=$(timeout "$seconds" qemu-system-aarch64 -cpu max -nographic "${args[@]}" \
        -kernel "$image" -append "$*" 2>&1)
}

# expect <description> <extended regex>: a line of the last log must match.
expect() {
    if ! grep -Eq -- "$2" <<<"$log"; then
        echo "FAIL: $1: no line matches /$2/"
        echo "---- serial log ----"; echo "$log"; echo "--------------------"
        failures=$((failures + 1))
    fi
}

# refuse <description> <extended regex>: no line of the last log may match.
refuse() {
    if grep -Eq -- "$2" <<<"$log"; then
        echo "FAIL: $1: unexpected line /$2/"
        echo "---- serial log ----"; echo "$log"; echo "--------------------"
        failures=$((failures + 1))
    fi
}

scenario() { echo "== $*"; }

scenario "4 CPUs, 256 MiB: report, pass, heartbeats, system-off"
boot 30 -M virt,gic-version=3 -smp 4 -m 256M -- "heartbeat=200 off-after=2"
expect "report" '^SLICE-REPORT \{"slice":"native","cpus":4,"mpidrs":\[0,1,2,3\],"memory_bytes":268435456,"memory_base":"0x40000000","el":1,"kernel":"probe [0-9.]+","cmdline":"heartbeat=200 off-after=2",'
expect "memtest clean" '"memtest_errors":0'
expect "verdict" '^PROBE PASS$'
expect "beat 1" '^HEARTBEAT 1 ok$'
expect "beat 2" '^HEARTBEAT 2 ok$'
expect "action" '^PROBE ACTION system-off$'
refuse "no beat after off" '^HEARTBEAT 3'

scenario "1 CPU, 64 MiB"
boot 30 -M virt,gic-version=3 -smp 1 -m 64M -- "heartbeat=100 off-after=1"
expect "report" '"cpus":1,"mpidrs":\[0\],"memory_bytes":67108864,'
expect "verdict" '^PROBE PASS$'

scenario "8 CPUs, 1 GiB: memory test within a few seconds"
boot 60 -M virt,gic-version=3 -smp 8 -m 1G -- "heartbeat=100 off-after=1"
expect "report" '"cpus":8,"mpidrs":\[0,1,2,3,4,5,6,7\],"memory_bytes":1073741824,'
expect "memtest speed" '"memtest_ms":[0-4]?[0-9]{1,3},'
expect "verdict" '^PROBE PASS$'

scenario "EL2 entry (virtualization=on): drops to EL1, SMC conduit"
boot 30 -M virt,gic-version=3,virtualization=on -smp 2 -m 128M -- "heartbeat=100 off-after=1 attack=hvc-unknown"
expect "el" '"el":1,'
expect "conduit" '"psci":"smc"'
expect "verdict" '^PROBE PASS$'
expect "hvc stub" '^ATTACK hvc-unknown contained hvc 0xc6000000 returned -1$'

scenario "PSCI attacks answered by QEMU"
boot 30 -M virt,gic-version=3 -smp 2 -m 128M -- "heartbeat=100 off-after=1 attack=cpu-on-outside,hvc-unknown,write-addr target=0x40001000"
expect "cpu-on-outside" '^ATTACK cpu-on-outside contained cpu_on\(0x2\)=-2 affinity_info\(0x2\)=-2 cpu_on\(0x100\)=-2 affinity_info\(0x100\)=-2$'
expect "hvc-unknown" '^ATTACK hvc-unknown contained hvc 0xc6000000 returned -1$'
expect "own image" '^ATTACK write-addr contained skipped-own-image 0x40001000$'
expect "beats continue" '^HEARTBEAT 1 ok$'

scenario "write in own RAM, then MMIO read (natively not contained)"
boot 30 -M virt,gic-version=3 -smp 2 -m 128M -- "heartbeat=100 off-after=1 attack=write-addr,mmio target=0x44000000"
expect "own ram" '^ATTACK write-addr contained landed-in-own-ram 0x44000000$'
expect "mmio" '^ATTACK mmio NOT-CONTAINED read32 0x44000000 returned 0x'

scenario "read past RAM faults natively"
boot 8 -M virt,gic-version=3 -smp 2 -m 128M -- "heartbeat=100 attack=read-past-ram"
expect "attempt" '^ATTACK read-past-ram attempting read64 0x48000000$'
expect "exception" '^PROBE EXCEPTION sync-el1h:data-abort esr=0x96000010 far=0x48000000 elr=0x[0-9a-f]+$'
refuse "no outcome" '^ATTACK read-past-ram (contained|NOT-CONTAINED)'
refuse "no heartbeat" '^HEARTBEAT'

scenario "IMPLEMENTATION DEFINED register is UNDEFINED natively"
boot 8 -M virt,gic-version=3 -smp 1 -m 64M -- "attack=undef-sysreg"
expect "exception" '^PROBE EXCEPTION sync-el1h:unknown esr=0x2000000 '

scenario "GIC attacks natively: the real GIC accepts foreign SPIs, nothing parks"
boot 40 -M virt,gic-version=3 -smp 4 -m 128M -- "heartbeat=100 off-after=1 attack=gicr-own,sgi-outside,sgi-self-test,spi-foreign,gicr-foreign"
expect "gicr-own" '^ATTACK gicr-own contained typer-ok frames=4 last-affinity=0x3$'
expect "sgi-outside plan" '^ATTACK sgi-outside attempting sgi1r intid=13 0xd00fff0,0xd01ffff,0x10d00ffff,0x100000d00ffff,0x10000d00ffff,0xf0000d00ffff,0x1000d000000$'
expect "sgi-outside" '^ATTACK sgi-outside contained sgis-dropped writes=7 rss=0$'
expect "sgi-self-test" '^ATTACK sgi-self-test contained sgi-within-slice delivered to=0x1 intid=5 count=1 us=[0-9]+$'
expect "spi-foreign attempt" '^ATTACK spi-foreign attempting isenabler\+ispendr\+ipriorityr spis=34-95,1019 irouter33=0x4,0x100 gicd=0x8000000$'
expect "spi-foreign" '^ATTACK spi-foreign NOT-CONTAINED typer=0x[0-9a-f]+ max-spi=287 isenabler=1:0xfffffffc,2:0xffffffff,31:0x0 ispendr=1:0xfffffffc,2:0xffffffff,31:0x0 ipriorityr-set=62/63 irouter33=0x4->0x4,0x100->0x100$'
expect "gicr-foreign" '^ATTACK gicr-foreign contained gicr_typer fault data-abort esr=0x96000010 far=0x8120008$'
expect "beats continue" '^HEARTBEAT 1 ok$'
refuse "no exception" '^PROBE EXCEPTION'

scenario "SGI self-test on one CPU (to itself), EL2 entry"
boot 30 -M virt,gic-version=3,virtualization=on -smp 1 -m 64M -- "heartbeat=100 off-after=1 attack=sgi-self-test,sgi-outside"
expect "sgi-self-test" '^ATTACK sgi-self-test contained sgi-within-slice delivered to=0x0 intid=5 count=1 us=[0-9]+$'
expect "sgi-outside" '^ATTACK sgi-outside contained sgis-dropped writes=7 rss=0$'
expect "beats continue" '^HEARTBEAT 1 ok$'

scenario "No GICv3 (gic-version=2): the GIC attacks report faults, nothing parks"
boot 30 -M virt,gic-version=2 -smp 2 -m 128M -- "heartbeat=100 off-after=1 attack=sgi-outside,sgi-self-test,spi-foreign,gicr-own"
expect "sgi-outside" '^ATTACK sgi-outside contained no-sgi icc_sre_el1 fault unknown esr=0x2000000$'
expect "sgi-self-test" '^ATTACK sgi-self-test NOT-CONTAINED sgi-within-slice receiver-failed icc_sre_el1 fault unknown '
expect "spi-foreign" '^ATTACK spi-foreign contained gicd_irouter fault data-abort '
expect "gicr-own" '^ATTACK gicr-own NOT-CONTAINED frame=0 gicr_typer fault data-abort '
expect "beats continue" '^HEARTBEAT 1 ok$'

# A tree that names the slice and lists a CPU QEMU does not have (inserted
# before cpu@1, so it is vCPU 1): the probe must say FAIL and name it.
scenario "DT with a slice name and a missing CPU: PROBE FAIL"
dtc_in=$work/virt.dtb
timeout 20 qemu-system-aarch64 -M virt,gic-version=3,dumpdtb="$dtc_in" -cpu max -smp 2 -m 128M \
    -nographic -kernel "$image" -append "x" >/dev/null 2>&1
dtc -q -I dtb -O dts "$dtc_in" \
    | sed -e 's|chosen {|chosen {\n\t\tmicrovisor,slice-name = "web-0";|' \
          -e 's|cpu@1 {|cpu@2 {\n\t\t\treg = <0x02>;\n\t\t\tdevice_type = "cpu";\n\t\t};\n\n\t\tcpu@1 {|' \
    | dtc -q -I dts -O dtb -o "$work/bad.dtb" -
boot 30 -M virt,gic-version=3 -smp 2 -m 128M -dtb "$work/bad.dtb" -- "heartbeat=100 off-after=1"
expect "slice name" '^SLICE-REPORT \{"slice":"web-0","cpus":2,"mpidrs":\[0,1\],'
expect "fail names the CPU" '^PROBE FAIL cpu1-cpu-on-INVALID_PARAMETERS\(-2\)$'
refuse "no pass" '^PROBE PASS$'

if [[ $failures -ne 0 ]]; then
    echo "$failures check(s) failed"
    exit 1
fi
echo "all checks passed"
