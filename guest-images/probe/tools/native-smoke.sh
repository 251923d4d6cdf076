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
expect "own image" '^ATTACK write-addr NOT-CONTAINED unverified own-image 0x40001000$'
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

scenario "Sweeps natively: every one of the 188 concludes, only what a hypervisor traps gets through"
boot 60 -M virt,gic-version=3 -smp 2 -m 128M -nic none -- "heartbeat=100 off-after=1 attack=sweeps"
expect "count" '^ATTACKS 188 contained 179 not-contained 9 unverified 0$'
expect "aborts" '^ATTACK abort-fetch-past-ram-mmu-off contained fetch 0x48000000 mmu-off external-abort esr=0x86000010 far=0x48000000$'
expect "el0" '^ATTACK el0-ldr64-past-ram contained ldr64 el0 0x7008000000 ipa=0x48000000 external-abort-lower esr=0x92000010 far=0x7008000000$'
expect "race" '^ATTACK race-insn-flip contained racer=1 rounds=2000 '
refuse "no exception" '^PROBE (EXCEPTION|PANIC)'
expect "heartbeat" '^HEARTBEAT 1 ok$'

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

scenario "No GICv3 (gic-version=2): the GIC attacks cannot be attempted, none passes, nothing parks"
boot 30 -M virt,gic-version=2 -smp 2 -m 128M -- "heartbeat=100 off-after=1 attack=sgi-outside,sgi-self-test,spi-foreign,gicr-own,gicr-foreign"
expect "sgi-outside" '^ATTACK sgi-outside NOT-CONTAINED unverified no-sgi icc_sre_el1 fault unknown esr=0x2000000$'
expect "sgi-self-test" '^ATTACK sgi-self-test NOT-CONTAINED unverified receiver-failed icc_sre_el1 fault unknown '
expect "spi-foreign" '^ATTACK spi-foreign NOT-CONTAINED unverified baseline gicd_irouter fault data-abort '
expect "gicr-foreign" '^ATTACK gicr-foreign NOT-CONTAINED unverified frame0 gicr_typer fault data-abort '
refuse "no GIC attack passes" '^ATTACK .* contained'
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
# (nvme=0: a named tree with a host bridge would also promise an NVMe.)
boot 30 -M virt,gic-version=3 -smp 2 -m 128M -dtb "$work/bad.dtb" -- "heartbeat=100 off-after=1 nvme=0"
expect "slice name" '^SLICE-REPORT \{"slice":"web-0","cpus":2,"mpidrs":\[0,1\],'
expect "fail names the CPU" '^PROBE FAIL cpu1-cpu-on-INVALID_PARAMETERS\(-2\)$'
refuse "no pass" '^PROBE PASS$'

# NVMe: QEMU's controller on QEMU's host bridge. Sparse raw disks.
disk=$work/disk.raw
nvme_disk() { rm -f "$disk"; truncate -s "$1" "$disk"; }
nvme() { echo -drive "file=$disk,if=none,id=d0,format=raw" -device "nvme,serial=probe-smoke,drive=d0"; }

scenario "NVMe: report, data test, canary heartbeats (no NIC: 00:01.0)"
nvme_disk 64M
boot 40 -M virt,gic-version=3 -smp 2 -m 128M -nic none $(nvme) -- "heartbeat=200 off-after=2 nvme-check=1"
expect "report" '"nvme":"ok","nvme_pci":"00:01.0","nvme_bytes":67108864,"nvme_queues":2,"nvme_lba_bytes":512,"nvme_model":"QEMU NVMe Ctrl","net":null,"net_mac":null\}$'
expect "info" '^NVME INFO pci=00:01.0 bar0=0x10000000 version=1.4 granted=64 queues=2 entries=64 max-transfer=262144 blocks=131072 lba-bytes=512 '
expect "verdict" '^PROBE PASS$'
expect "data test" '^NVME PASS ranges=first:0\+256,middle:65408\+256,last:130816\+256 chained-prp=ok offset-prp=ok queues=2 past-end=lba-out-of-range\(0/0x80\)$'
expect "beat 2" '^HEARTBEAT 2 ok nvme-ok$'

scenario "NVMe behind the default NIC (00:02.0), 4 CPUs, 8 GiB"
nvme_disk 8G
boot 40 -M virt,gic-version=3 -smp 4 -m 256M $(nvme) -- "heartbeat=100 off-after=1"
expect "report" '"nvme":"ok","nvme_pci":"00:02.0","nvme_bytes":8589934592,"nvme_queues":4,"nvme_lba_bytes":512,'
expect "data test" '^NVME PASS .* queues=4 past-end=lba-out-of-range\(0/0x80\)$'

scenario "NVMe with 4 KiB blocks, EL2 entry"
nvme_disk 64M
boot 40 -M virt,gic-version=3,virtualization=on -smp 2 -m 128M -nic none \
    -drive "file=$disk,if=none,id=d0,format=raw" -device nvme,serial=probe-smoke,id=n0 \
    -device nvme-ns,drive=d0,bus=n0,logical_block_size=4096,physical_block_size=4096 -- "heartbeat=100 off-after=1"
expect "report" '"nvme":"ok","nvme_pci":"00:01.0","nvme_bytes":67108864,"nvme_queues":2,"nvme_lba_bytes":4096,'
expect "data test" '^NVME PASS ranges=first:0\+32,middle:8176\+32,last:16352\+32 chained-prp=ok queues=2 past-end=lba-out-of-range\(0/0x80\)$'

scenario "No NVMe: null, pass"
boot 30 -M virt,gic-version=3 -smp 1 -m 64M -- "heartbeat=100 off-after=1"
expect "report" '"nvme":null,"nvme_pci":null,"nvme_bytes":null,"nvme_queues":null,"nvme_lba_bytes":null,"nvme_model":null,"net":"no-access-platform","net_mac":null\}$'
expect "verdict" '^PROBE PASS$'
refuse "no data test" '^NVME '

scenario "NVMe controller without a namespace: PROBE FAIL"
boot 30 -M virt,gic-version=3 -smp 1 -m 64M -nic none -device nvme,serial=probe-smoke -- "heartbeat=100 off-after=1"
expect "report" '"nvme":"namespace1-inactive","nvme_pci":"00:01.0","nvme_bytes":null,'
expect "verdict" '^PROBE FAIL nvme-namespace1-inactive$'

scenario "Persistence: fill, system reset, verify (the first verify sees a fresh disk)"
nvme_disk 32M
boot 40 -M virt,gic-version=3 -smp 2 -m 128M -nic none $(nvme) -- "heartbeat=100 reset-after=1 nvme-verify=4 nvme-fill=4 nvme-test=0"
expect "fresh disk" '^NVME VERIFY CORRUPT lba=0$'
expect "fill" '^NVME FILL ok 8192 blocks$'
expect "after reset" '^NVME VERIFY ok 8192 blocks$'

# The same disk read by a slice with another name: its data is foreign.
# A tree naming a slice and listing a host bridge promises an NVMe.
dtc -q -I dtb -O dts "$dtc_in" \
    | sed -e 's|chosen {|chosen {\n\t\tmicrovisor,slice-name = "web-1";|' \
    | dtc -q -I dts -O dtb -o "$work/named.dtb" -
scenario "Another slice's pattern reads as corrupt"
boot 40 -M virt,gic-version=3 -smp 2 -m 128M -nic none -dtb "$work/named.dtb" $(nvme) -- "heartbeat=100 off-after=1 nvme-verify=4 nvme-test=0"
expect "foreign data" '^NVME VERIFY CORRUPT lba=0$'
expect "verdict" '^PROBE PASS$'

scenario "A slice tree with a host bridge but no NVMe: PROBE FAIL"
boot 30 -M virt,gic-version=3 -smp 2 -m 128M -nic none -dtb "$work/named.dtb" -- "heartbeat=100 off-after=1"
expect "verdict" '^PROBE FAIL nvme-not-found$'

scenario "NVMe attacks natively: QEMU refuses some, executes others, nothing hangs"
nvme_disk 64M
boot 120 -M virt,gic-version=3 -smp 2 -m 128M -nic none $(nvme) -- "heartbeat=100 off-after=1 nvme-check=1 \
attack=nvme-lba-outside,nvme-nsid,nvme-prp-outside,nvme-prp-toctou,nvme-prp-flip,nvme-sgl-fused,nvme-doorbell,nvme-queue-outside,nvme-reset-inflight,nvme-admin-refused"
expect "lba-outside" '^ATTACK nvme-lba-outside contained read@end=lba-out-of-range\(0/0x80\) write@end=lba-out-of-range\(0/0x80\) read@cross=lba-out-of-range\(0/0x80\) write@cross=lba-out-of-range\(0/0x80\) read@max=lba-out-of-range\(0/0x80\) write@wrap=lba-out-of-range\(0/0x80\) write@-size=lba-out-of-range\(0/0x80\) read@2\^63=lba-out-of-range\(0/0x80\) last-block=intact$'
expect "nsid" '^ATTACK nvme-nsid contained read-nsid2=invalid-field\(0/0x02\) read-nsid0=invalid-namespace\(0/0x0b\) read-nsid-all=invalid-namespace\(0/0x0b\) write-nsid2=invalid-field\(0/0x02\) write-nsid-all=invalid-namespace\(0/0x0b\) own-block=intact$'
expect "prp-outside" '^ATTACK nvme-prp-outside NOT-CONTAINED at=0x48000000 read-prp1=success\(0/0x00\) read-prp2=success\(0/0x00\) read-list-pointer=data-transfer-error\(0/0x04\) read-list-entry=success\(0/0x00\) read-chain-pointer=data-transfer-error\(0/0x04\) write-prp1=success\(0/0x00\),blocks-changed write-list-entry=success\(0/0x00\),blocks-changed$'
expect "toctou control" '^ATTACK nvme-prp-toctou (contained|NOT-CONTAINED) round0-outside=.* control-decoy=success\(0/0x00\),original-pages-ok=0/8,decoy-pages-hit=8$'
expect "flip control" '^ATTACK nvme-prp-flip (contained|NOT-CONTAINED) control-decoy=success\(0/0x00\),original-pages-ok=0/8,decoy-pages-hit=8 flips=[1-9][0-9]* '
expect "sgl-fused" '^ATTACK nvme-sgl-fused NOT-CONTAINED sgl-read=success\(0/0x00\),data-arrived sgl-read-outside=success\(0/0x00\) fused-compare=invalid-field\(0/0x02\) fused-write=invalid-field\(0/0x02\) fused-first-alone=invalid-field\(0/0x02\) mptr-outside=success\(0/0x00\),no-metadata-format block=intact$'
expect "doorbell" '^ATTACK nvme-doorbell contained writes=12 faults=0 io-after=2/2 admin-after=ok stray-completions=0$'
expect "queue-outside" '^ATTACK nvme-queue-outside NOT-CONTAINED cq-prp-outside=success\(0/0x00\) cq-straddles-ram-end=success\(0/0x00\) cq-noncontiguous=invalid-field\(0/0x02\) cq-qid-beyond=invalid-qid\(1/0x01\) cq-qid-0=invalid-qid\(1/0x01\) cq-size-beyond-mqes=invalid-queue-size\(1/0x02\) sq-prp-outside=success\(0/0x00\) sq-straddles-ram-end=success\(0/0x00\) sq-noncontiguous=invalid-field\(0/0x02\) sq-qid-beyond=invalid-qid\(1/0x01\) sq-cq-uncreated=invalid-cq\(1/0x00\) sq-size-beyond-mqes=invalid-queue-size\(1/0x02\) restored-q2=ok$'
expect "reset-inflight" '^ATTACK nvme-reset-inflight contained in-flight=4 rdy0-after-us=[0-9]+ re-enabled queues=2 read-after=ok old-completions=0 late-dma-pages=0$'
expect "admin-refused" '^ATTACK nvme-admin-refused NOT-CONTAINED 0x80=success\(0/0x00\) 0x84=invalid-opcode\(0/0x01\) .* 0x7c=success\(0/0x00\) 0xc0=invalid-opcode\(0/0x01\) controller-reset=ok$'
expect "format wiped the canary" '^HEARTBEAT 1 CORRUPT nvme-CORRUPT lba=0$'
refuse "no exception" '^PROBE EXCEPTION'

scenario "nvme-prp-flip needs a second vCPU"
nvme_disk 16M
boot 60 -M virt,gic-version=3 -smp 1 -m 64M -nic none $(nvme) -- "heartbeat=100 off-after=1 attack=nvme-prp-flip"
expect "flip" '^ATTACK nvme-prp-flip NOT-CONTAINED unverified no-second-vcpu$'
expect "beats continue" '^HEARTBEAT 1 ok$'

scenario "MDTS of 8 KiB: transfers are split, what does not fit is skipped"
boot 60 -M virt,gic-version=3 -smp 2 -m 64M -nic none -drive "file=$disk,if=none,id=d0,format=raw" \
    -device nvme,serial=probe-smoke,drive=d0,mdts=1 -- "heartbeat=100 off-after=1 attack=nvme-prp-toctou,nvme-prp-outside"
expect "data test" '^NVME PASS ranges=first:0\+256,middle:16256\+256,last:32512\+256 offset-prp=ok queues=2 '
expect "toctou" '^ATTACK nvme-prp-toctou NOT-CONTAINED unverified max-transfer=8192$'
expect "skipped" 'read-list-pointer=skipped\(mdts\)'
expect "beats continue" '^HEARTBEAT 1 ok$'

# virtio-net: a modern NIC behind a pcie-root-port (bus 1), on a restricted slirp.
nic() { echo -device pcie-root-port,id=rp0,bus=pcie.0,chassis=1,addr=0x10 \
    -device virtio-net-pci,bus=rp0,netdev=n0,iommu_platform=on,romfile= \
    -netdev user,id=n0,restrict=on,ipv6=off; }

scenario "virtio-net behind a root port: bridge walk, MSI-X through QEMU's ITS (DeviceID 0x100) as LPIs, ARP with slirp"
boot 40 -M virt,gic-version=3 -smp 2 -m 128M -nic none $(nic) -- "heartbeat=100 off-after=1"
expect "info" '^NET INFO bdf=01:00.0 mac=52:54:00:12:34:56 bridges=00:10.0 bar1=0x10000000 bar4=0x10004000 features=0x300010020 .* msix=4 doorbell=its\(0x8090040,device=0x100,lpi=8192\) ip=10.0.2.15 peer=10.0.2.2 '
expect "report" '"net":"ok","net_mac":"52:54:00:12:34:56"\}$'
expect "pass" '^NET PASS arp-reply from=52:55:0a:00:02:02 ip=10.0.2.2 us=[0-9]+ irq-tx=delivered\(us=[0-9]+\) irq-rx=delivered\(us=[0-9]+\)$'
expect "verdict" '^PROBE PASS$'

scenario "virtio-net without iommu_platform (the default NIC): refused, no frame sent"
boot 30 -M virt,gic-version=3 -smp 1 -m 64M -- "heartbeat=100 off-after=1"
expect "fail" '^NET FAIL no-access-platform$'
expect "verdict" '^PROBE PASS$'

scenario "NVMe on the root bus and the NIC behind a root port share the window"
nvme_disk 64M
boot 60 -M virt,gic-version=3 -smp 2 -m 128M -nic none $(nvme) $(nic) -- "heartbeat=100 off-after=1 nvme-check=1 attack=net-bar-move"
expect "nvme" '^NVME INFO pci=00:01.0 bar0=0x10000000 '
expect "net" '^NET INFO bdf=01:00.0 .* bar1=0x10100000 bar4=0x10104000 '
expect "pass" '^NET PASS '
expect "bar-move" '^ATTACK net-bar-move contained over-ram@0x[0-9a-f]+=intact over-nvme-bar0@0x10000000=intact nic-after=ok$'
expect "victim" '^HEARTBEAT 1 ok nvme-ok$'

scenario "net attacks natively (no SMMU: DMA and MSIs land anywhere)"
boot 90 -M virt,gic-version=3 -smp 2 -m 128M -nic none $(nic) -- "heartbeat=100 off-after=1 \
attack=net-pba-write,net-hidden-caps,net-msix-foreign,net-desc-outside,net-bar-move,net-bus-master"
expect "pba" '^ATTACK net-pba-write contained pba=0x10000800 before=0x0 after-ones=0x0 after-zero=0x0$'
expect "hidden-caps" '^ATTACK net-hidden-caps NOT-CONTAINED caps=0x11,0x09,0x09,0x09,0x09,0x09,0x01,0x10 ext-nonzero=0 writes=8 write-faults=0 ext-nonzero-after=3@0x104=0xffffffff$'
expect "msix" '^ATTACK net-msix-foreign NOT-CONTAINED baseline=delivered\(us=[0-9]+\) its@0x8090040=0x0:none-seen spi-uart@0x8000040=0x21:none-seen spi-beyond@0x8000040=0x60:none-seen outside@0x48000000=0x4e455499:none-seen own-ram@0x[0-9a-f]+=0x4e455477:LANDED restored=delivered\(us=[0-9]+\)$'
expect "desc-outside" '^ATTACK net-desc-outside NOT-CONTAINED at=0x48000000 tx=arp-reply rx=completed\(len=76\) ring=needs-reset\(status=0x4f\) recovered=ok$'
expect "bar-move" '^ATTACK net-bar-move NOT-CONTAINED over-ram@0x[0-9a-f]+=intact over-own-bar1@0x10000000=CHANGED\(0x[0-9a-f]+->0x1\) nic-after=ok$'
expect "bus-master" '^ATTACK net-bus-master contained queued=8 done-while-off=[0-8] status-after=0x[0-9a-f]+ recovered=ok$'
expect "beats continue" '^HEARTBEAT 1 ok$'
refuse "no exception" '^PROBE EXCEPTION'

# The microvisor's doorbell: `mbi-ranges` in the GIC node makes the probe aim its MSI-X entries
# at GICD_SETSPI_NSR. QEMU's GICv3 ignores that register (no MBIs), so natively no MSI arrives;
# the SPI path itself (ISPENDR written by the CPU, taken as an IRQ) must work.
timeout 20 qemu-system-aarch64 -M virt,gic-version=3,dumpdtb="$work/nic.dtb" -cpu max -smp 2 -m 128M \
    -nographic -nic none $(nic) -kernel "$image" -append x >/dev/null 2>&1
dtc -q -I dtb -O dts "$work/nic.dtb" \
    | sed -e 's|#redistributor-regions = <0x01>;|#redistributor-regions = <0x01>;\n\t\tmbi-ranges = <0x40 0x20>;|' \
    | dtc -q -I dts -O dtb -o "$work/mbi.dtb" -
scenario "MBI doorbell from the tree: MSI-X aimed at GICD_SETSPI_NSR (QEMU drops it), SPI path ok"
boot 30 -M virt,gic-version=3 -smp 2 -m 128M -nic none $(nic) -dtb "$work/mbi.dtb" -- "heartbeat=100 off-after=1"
expect "doorbell" '^NET INFO bdf=01:00.0 .* doorbell=mbi\(0x8000040,spi=64\) '
expect "no MBIs in QEMU" '^NET FAIL interrupts arp-reply from=52:55:0a:00:02:02 irq-tx=not-delivered irq-rx=not-delivered spi-path=ok$'

scenario "net-reset-dma: frames in flight, SYSTEM_RESET, the NIC comes back"
boot 20 -M virt,gic-version=3 -smp 2 -m 128M -nic none $(nic) -- "heartbeat=100 attack=net-reset-dma"
expect "attempt" '^ATTACK net-reset-dma attempting tx-loop frames=16 rx-posted=8 ms=50 then system-reset$'
expect "reset" '^PROBE ACTION system-reset$'
[[ $(grep -c '^NET PASS ' <<<"$log") -ge 2 ]] || { echo "FAIL: net-reset-dma: no NET PASS after the reset"; failures=$((failures + 1)); }
refuse "no outcome" '^ATTACK net-reset-dma (contained|NOT-CONTAINED)'

if [[ $failures -ne 0 ]]; then
    echo "$failures check(s) failed"
    exit 1
fi
echo "all checks passed"
