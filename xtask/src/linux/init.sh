#!/bin/busybox sh
# /init of the built-in Linux guest (`kernel = "linux"`), put in the initramfs by
# `cargo xtask` (xtask/src/linux/init.sh). Runs as PID 1 under busybox sh: mounts, reports
# what Linux sees in one line, starts what the kernel command line asks for, then hands over
# to busybox init, which keeps a shell on the console and handles reboot/poweroff. `powerkey`
# (guest-images/manager) runs in the background from the start: the power key of a graceful
# shutdown (`microvisorctl shutdown`).
#
# Lines (stable, parsed by tests):
#   SLICE-REPORT {"slice":"..","cpus":N,"mpidrs":[..],"memory_bytes":N,"memory_base":"0x..",
#                 "dt_cpus":N,"mem_total_kib":N[,"nvme_bytes":N,"nvme_queues":N],
#                 ["root":"<block device>",]  (when / is a disk, e.g. nvme0n1p2 when the
#                 guest is installed on its share and booted by firmware; absent from an
#                 initramfs)
#                 "net":[{"name":"eth0","mac":"..","ipv4":"a.b.c.d/n"|null},..],
#                 "kernel":"..","cmdline":".."}
#                 (at most 1023 bytes, the microvisor's console line: a long cmdline is cut
#                 and ends in "...")
#   PROBE PASS | PROBE FAIL <reason> [<reason> ...]
#   PROBE WARN cmdline <problem>
#   PROBE WARN net <problem>
#   HTTPD 80 started                  microvisor.httpd=1
#   REDFISH ready https=.. [http=..] user=.. password=..
#                                     on the manager (the slice with the control interface):
#                                     microvisor-redfish, HTTPS on 443 by default;
#                                     microvisor.redfish=https|http|http-only|off (http adds
#                                     plain HTTP on 80), microvisor.redfish-media=<host>[,..]
#                                     the hosts virtual media may come from,
#                                     microvisor.redfish-password-sha256=<hex> the admin
#                                     password's SHA-256 (else one is generated and shown);
#                                     HTTPS with /etc/microvisor-redfish/tls.{crt,key} when
#                                     the plan gave them (else a self-signed certificate)
#
# Network (before the report): the virtio-net modules in /lib/modules (put there in load order
# by xtask) are loaded, every NIC (an interface with a device) is brought up with the static
# address a microvisor.ip=<interface-or-MAC>:<a.b.c.d>/<prefix> word of the command line gives
# it, else by DHCP (udhcpc, /etc/udhcpc.script). A NIC left without an IPv4 address fails the
# probe (net-no-ipv4(<name>)), as does a PCI network function without an interface
# (nic-missing(<interfaces>/<functions>)) or a module that does not load (net-module(<name>)).
#   LOAD <n> started                  microvisor.load=1
#   HEARTBEAT <n> ok                  microvisor.heartbeat=<ms>
#   PROBE ACTION reboot|poweroff      microvisor.action=reboot-after:<s>|poweroff-after:<s>
#                                     (<s> may be <s>+<s>: one sleep after the other)
#   DISK ...                          microvisor.disk=<step>[,<step>...], see disk_steps below;
#                                     microvisor.disk=install:http://<host>/<image> deploys a
#                                     whole-disk image onto the disk (a provisioning ramdisk):
#   DISK install ok bytes=<n> md5=<hex> | DISK install FAIL <why>
#   NET ...                           microvisor.net=<step>[,<step>...], see net_steps below
#
# `/init disk <step>[,<step>...]` typed in the slice's shell runs the same disk steps, and
# `/init net <step>[,<step>...]` the same network steps.
#
# MICROVISOR_INIT_ROOT (host tests only) prefixes the /proc, /sys, /lib and /etc paths read,
# and makes the script stop after the report (after the network set-up and the report when
# MICROVISOR_INIT_NET=1, after the disk steps when MICROVISOR_INIT_DISK names them);
# MICROVISOR_DISK replaces /dev/nvme0n1 and MICROVISOR_DISK_TMP /tmp; MICROVISOR_INIT_PATH
# comes first in PATH (fake ip, insmod, udhcpc, wget, sync).

R=${MICROVISOR_INIT_ROOT:-}
DT=$R/proc/device-tree
TAB=$(printf '\t')
export PATH=${MICROVISOR_INIT_PATH:+$MICROVISOR_INIT_PATH:}/bin:/sbin:/usr/bin:/usr/sbin HOME=/
# Longest SLICE-REPORT line: the microvisor's console lines hold 1024 bytes with the newline.
MAX_REPORT=1023

# Bytes [$2, $2 + $3) of file $1 as one big-endian unsigned number, in decimal.
be_number() {
	hex=$(od -An -tx1 -v -j "$2" -N "$3" "$1" | tr -d ' \n')
	echo $((0x${hex:-0}))
}

# Size of file $1 in bytes.
file_size() {
	echo $(($(wc -c <"$1")))
}

# A property holding one cell (#address-cells, #size-cells), or $2 when it is absent.
cells() {
	if [ -f "$1" ]; then be_number "$1" 0 4; else echo "$2"; fi
}

# $1 as a JSON string literal: backslash, quote, tab and newline escaped, other control
# characters dropped.
json_string() {
	printf '"'
	printf '%s' "$1" | tr -d '\000-\010\013-\037' |
		sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e "s/$TAB/\\\\t/g" -e '$!s/$/\\n/' | tr -d '\n'
	printf '"'
}

# Number of CPUs in a list such as "0-3,6".
count_cpus() {
	n=0
	for range in $(echo "$1" | tr ',' ' '); do
		case $range in
		*-*) n=$((n + ${range#*-} - ${range%-*} + 1)) ;;
		*) n=$((n + 1)) ;;
		esac
	done
	echo "$n"
}

# The slice's name from the device tree, or "native".
slice_name() {
	if [ -f "$DT/chosen/microvisor,slice-name" ]; then
		tr -d '\000' <"$DT/chosen/microvisor,slice-name"
	else
		echo native
	fi
}

# The SLICE-REPORT line, in $line, with the command line $shown.
report_line() {
	line="SLICE-REPORT {\"slice\":$(json_string "$slice"),\"cpus\":$cpus"
	line="$line,\"mpidrs\":[$mpidr_list],\"memory_bytes\":$memory_bytes"
	line="$line,\"memory_base\":$base_json,\"dt_cpus\":$dt_cpus"
	line="$line,\"mem_total_kib\":$mem_total_kib$nvme_json$root_json,\"net\":[$net_json]"
	line="$line,\"kernel\":$(json_string "$kernel"),\"cmdline\":$(json_string "$shown")}"
}

# --- Network ---------------------------------------------------------------------------------

NET=$R/sys/class/net

# The NICs: every interface backed by a device (not lo, not virtual ones), by name.
nics() {
	for dev in "$NET"/*; do
		[ -e "$dev/device" ] && echo "${dev##*/}"
	done
}

# Number of PCI functions of base class 02 (network controllers).
pci_net_functions() {
	n=0
	for class in "$R"/sys/bus/pci/devices/*/class; do
		[ -f "$class" ] || continue
		case $(cat "$class") in 0x02*) n=$((n + 1)) ;; esac
	done
	echo "$n"
}

# The static address the command line gives interface $1 (MAC $2): the <a.b.c.d>/<prefix> of
# the last microvisor.ip=<name-or-MAC>:<a.b.c.d>/<prefix> naming it, or nothing.
static_address() {
	found=
	set -f
	for word in $(cat "$R/proc/cmdline" 2>/dev/null); do
		case $word in
		microvisor.ip=*)
			spec=${word#microvisor.ip=}
			who=$(echo "${spec%:*}" | tr 'A-F' 'a-f')
			[ "$who" = "$1" ] || [ "$who" = "$2" ] || continue
			case ${spec##*:} in
			*[!0-9./]* | *.*.*.*.* | */*/*) ;;
			*.*.*.*/[0-9]*) found=${spec##*:} ;;
			esac
			;;
		esac
	done
	set +f
	echo "$found"
}

# The IPv4 address and prefix of interface $1 (the first one), or nothing.
ipv4_of() {
	ip -4 addr show dev "$1" 2>/dev/null | sed -n 's/^ *inet \([0-9.]*\/[0-9]*\).*/\1/p' |
		head -n 1
}

# Loads the NIC modules, waits for an interface per PCI network function, gives each NIC its
# static address or runs DHCP on it (in parallel, each bounded: 3 tries 2 s apart). Sets
# $net_reasons.
net_up() {
	net_reasons=
	for ko in "$R"/lib/modules/*.ko; do
		[ -f "$ko" ] || continue
		name=${ko##*/}
		name=${name#[0-9][0-9]-}
		name=${name%.ko}
		if ! insmod "$ko" 2>/dev/null; then
			net_reasons="$net_reasons net-module($name)"
		fi
	done

	# virtio_net registers its interfaces as it probes; give that 5 s.
	functions=$(pci_net_functions)
	waited=0
	while [ "$(nics | wc -l)" -lt "$functions" ] && [ "$waited" -lt 50 ]; do
		usleep 100000
		waited=$((waited + 1))
	done
	found=$(nics | wc -l)
	[ "$found" -ge "$functions" ] || net_reasons="$net_reasons nic-missing($found/$functions)"

	# Static addresses first, then DHCP on the others (in parallel).
	dhcp=
	for nic in $(nics); do
		mac=$(cat "$NET/$nic/address" 2>/dev/null)
		ip link set "$nic" up
		address=$(static_address "$nic" "$mac")
		if [ -n "$address" ]; then
			ip addr add "$address" dev "$nic" || echo "PROBE WARN net $nic: cannot set $address"
		else
			dhcp="$dhcp $nic"
		fi
	done
	for nic in $dhcp; do
		udhcpc -i "$nic" -s "$R/etc/udhcpc.script" -f -q -n -t 3 -T 2 >/dev/null 2>&1 &
	done
	wait
	for nic in $(nics); do
		[ -n "$(ipv4_of "$nic")" ] || net_reasons="$net_reasons net-no-ipv4($nic)"
	done
}

# The "net" array's objects: name, MAC and IPv4 (or null) of every NIC.
net_report() {
	sep=
	for nic in $(nics); do
		mac=$(cat "$NET/$nic/address" 2>/dev/null)
		address=$(ipv4_of "$nic")
		if [ -n "$address" ]; then address="\"$address\""; else address=null; fi
		printf '%s{"name":%s,"mac":%s,"ipv4":%s}' "$sep" "$(json_string "$nic")" \
			"$(json_string "$mac")" "$address"
		sep=,
	done
}

# The block device / is mounted from (e.g. nvme0n1p2): the device numbers of the last mount
# on / in /proc/self/mountinfo, named through /sys/dev/block; nothing for an initramfs.
root_device() {
	numbers=$(awk '$5 == "/" { n = $3 } END { print n }' "$R/proc/self/mountinfo" 2>/dev/null)
	[ -n "$numbers" ] && [ -L "$R/sys/dev/block/$numbers" ] || return 0
	device=$(readlink "$R/sys/dev/block/$numbers")
	echo "${device##*/}"
}

report() {
	slice=$(slice_name)
	cpus=$(count_cpus "$(cat "$R/sys/devices/system/cpu/online" 2>/dev/null)")

	# vCPU affinities: the `reg` of every /cpus/cpu@* node, whatever its #address-cells.
	mpidrs=$(for reg in "$DT"/cpus/cpu@*/reg; do
		[ -f "$reg" ] && be_number "$reg" 0 "$(file_size "$reg")"
	done | sort -n)
	dt_cpus=0
	for m in $mpidrs; do dt_cpus=$((dt_cpus + 1)); done
	mpidr_list=$(echo $mpidrs | tr ' ' ',')

	# RAM: every (base, size) pair of every memory node's `reg`, in the root's cells.
	ac=$(cells "$DT/#address-cells" 2)
	sc=$(cells "$DT/#size-cells" 1)
	entry=$(((ac + sc) * 4))
	memory_bytes=0
	memory_base=
	for reg in "$DT"/memory/reg "$DT"/memory@*/reg; do
		[ -f "$reg" ] && [ "$entry" -gt 0 ] || continue
		len=$(file_size "$reg")
		off=0
		while [ $((off + entry)) -le "$len" ]; do
			base=$(be_number "$reg" "$off" $((ac * 4)))
			size=$(be_number "$reg" $((off + ac * 4)) $((sc * 4)))
			if [ -z "$memory_base" ] || [ "$base" -lt "$memory_base" ]; then
				memory_base=$base
			fi
			memory_bytes=$((memory_bytes + size))
			off=$((off + entry))
		done
	done
	base_json=null
	[ -n "$memory_base" ] && base_json=$(printf '"0x%x"' "$memory_base")

	mem_total_kib=$(sed -n 's/^MemTotal: *\([0-9][0-9]*\) kB$/\1/p' "$R/proc/meminfo" 2>/dev/null)
	mem_total_kib=${mem_total_kib:-0}
	kernel=$(cat "$R/proc/sys/kernel/osrelease" 2>/dev/null)
	cmdline=$(cat "$R/proc/cmdline" 2>/dev/null)

	# NVMe: when Linux found an NVMe function (class 01 08 02) on its PCIe bus, the namespace
	# must appear; the driver probes it asynchronously, so give it a few seconds. (A PCIe host
	# bridge in the DT no longer means NVMe: QEMU's own DT always has one, and a slice with
	# only a NIC gets one too.)
	nvme_json=
	nvme_missing=
	if grep -qx 0x010802 "$R"/sys/bus/pci/devices/*/class 2>/dev/null; then
		waited=0
		while [ ! -e "$R/sys/block/nvme0n1/size" ] && [ "$waited" -lt 100 ]; do
			usleep 100000
			waited=$((waited + 1))
		done
		if [ -e "$R/sys/block/nvme0n1/size" ]; then
			sectors=$(cat "$R/sys/block/nvme0n1/size")
			queues=$(ls "$R/sys/block/nvme0n1/mq" 2>/dev/null | wc -l)
			nvme_json=",\"nvme_bytes\":$((sectors * 512)),\"nvme_queues\":$queues"
		else
			nvme_missing=1
		fi
	fi

	root_json=
	root=$(root_device)
	[ -z "$root" ] || root_json=",\"root\":$(json_string "$root")"

	net_json=$(net_report)

	shown=$cmdline
	report_line
	while [ "${#line}" -gt "$MAX_REPORT" ] && [ -n "$shown" ]; do
		keep=$((${#shown} - (${#line} - MAX_REPORT) - 3))
		if [ "$keep" -gt 0 ]; then
			shown="$(printf '%s' "$shown" | head -c "$keep")..."
		else
			shown=
		fi
		report_line
	done
	printf '%s\n' "$line"

	reasons=
	[ "$dt_cpus" -gt 0 ] || reasons="$reasons dt-no-cpus"
	[ "$cpus" -eq "$dt_cpus" ] || reasons="$reasons cpus-online($cpus)-not-dt-cpus($dt_cpus)"
	[ "$memory_bytes" -gt 0 ] || reasons="$reasons dt-no-memory"
	if [ "$mem_total_kib" -le 0 ]; then
		reasons="$reasons no-memtotal"
	elif [ "$mem_total_kib" -gt $((memory_bytes / 1024)) ]; then
		reasons="$reasons memtotal-above-dt-memory(${mem_total_kib}KiB>$((memory_bytes / 1024))KiB)"
	fi
	[ -z "$nvme_missing" ] || reasons="$reasons nvme-missing"
	reasons="$reasons$net_reasons"
	if [ -z "$reasons" ]; then echo "PROBE PASS"; else echo "PROBE FAIL$reasons"; fi
}

# --- Disk self-test (microvisor.disk=<steps>): stable lines, parsed by tests ---------------
#
# The disk is /dev/nvme0n1 seen in 4 KiB blocks (B of them). Every block the steps write holds
# one line "MVDISK <slice> <region> <block>" padded with spaces to 4095 bytes plus "\n", so a
# block that lands in another slice or at another LBA is recognisable, also from the host.
# Regions: first = block 0, middle = B/2, last = B-1, load = <MiB> MiB from block B/4.
# Reads happen after `blockdev --flushbufs` and dropping the page cache, so they reach the disk.
#
#   DISK info bytes=<n> blocks=<B>
#   DISK verify first|middle|last|load ok | empty | FAIL <why>   content from an earlier run
#   DISK write first|middle|last|load ok | FAIL <why>            written, flushed, read back
#   DISK end ok read-past=0 read-across=512[ write-past=refused] | DISK end FAIL <values>
#   DISK load start <MiB>MiB at=<block>                          before the load is written
#   DISK sum <bytes> <md5>                                       md5 of the whole disk
#   DISK at <s>                                                  the uptime reached <s> s
#   DISK install ok bytes=<n> md5=<hex>                          an image written, see below
#   DISK install FAIL <why>
#   DISK done <steps> | DISK FAIL no-disk | DISK FAIL unknown-step <step>
#
# Steps: verify, write, end, load[:MiB] (default 8), verify-load[:MiB], sum, at:<s> (wait until
# Linux has been up <s> seconds: slices started together start a later step together),
# install:<URL>. <why>: found="<the first wrong block's first 48 characters>" at=<block>,
# short-read bytes=<n>, dd-read <error>, dd-write <error>, too-large.
#
# install:http://<host>[:<port>]/<path> deploys a whole-disk image, as a provisioning ramdisk
# does (Ironic's agent): busybox wget downloads it into DISK_TMP (memory, in an initramfs;
# at most INSTALL_S seconds), then it is written onto the disk from byte 0 (dd, fsync, sync),
# and the <n> bytes written are read back after dropping the caches: "ok" gives their md5,
# which is the downloaded image's. Only http:// URLs, without commas or spaces (the steps'
# separators). The disk is not touched unless the image downloaded completely and fits:
#   not-http                          the URL is not http://...
#   download <wget's complaint>       no image (404, refused, timed out, no room for it)
#   empty                             the image has no bytes
#   too-large bytes=<n> disk=<bytes>  the image is larger than the disk
#   dd-write <error>                  writing failed (the disk may hold part of the image)
#   verify md5=<read> image=<md5>     the disk does not read back what was written

DISK=${MICROVISOR_DISK:-/dev/nvme0n1}
DISK_TMP=${MICROVISOR_DISK_TMP:-/tmp}
# Bound of an install step's download.
INSTALL_S=600

# Blocks [$3, $3 + $4) of region $2 of slice $1 as they must read.
disk_pattern() {
	awk -v s="$1" -v r="$2" -v a="$3" -v n="$4" \
		'BEGIN { for (i = a; i < a + n; i++) printf "%-4095s\n", "MVDISK " s " " r " " i }'
}

# Makes the next reads reach the disk.
disk_drop_caches() {
	blockdev --flushbufs "$DISK" 2>/dev/null
	{ echo 3 >"$R/proc/sys/vm/drop_caches"; } 2>/dev/null
}

# The first line of dd's complaint, as one token.
disk_error() {
	grep -v -e 'records in' -e 'records out' -e 'bytes' "$DISK_TMP/disk.err" | head -n 1 |
		tr -c 'A-Za-z0-9.:_/\n-' '-' | head -c 60
}

# md5 of what standard input gives, in hex.
disk_md5() {
	md5sum | cut -d' ' -f1
}

# install:<URL> ($1 the URL): downloads the image, writes it onto the disk from byte 0, reads
# it back. One "DISK install ..." line.
disk_install() {
	image=$DISK_TMP/disk.image
	case $1 in
	http://?*) ;;
	*)
		echo "DISK install FAIL not-http"
		return
		;;
	esac
	rm -f "$image"
	# No -T: Debian's busybox-static 1.35 wget crashes with it; timeout bounds it instead.
	if ! timeout "$INSTALL_S" wget -q -O "$image" "$1" >/dev/null 2>"$DISK_TMP/disk.err"; then
		why=$(head -n 1 "$DISK_TMP/disk.err" | tr -c 'A-Za-z0-9.:_/\n-' '-' | head -c 80)
		rm -f "$image"
		echo "DISK install FAIL download ${why:-wget-failed}"
		return
	fi
	n=$(file_size "$image")
	if [ "$n" -eq 0 ]; then
		echo "DISK install FAIL empty"
	elif [ "$n" -gt "$bytes" ]; then
		echo "DISK install FAIL too-large bytes=$n disk=$bytes"
	elif ! dd if="$image" of="$DISK" bs=1048576 conv=notrunc,fsync 2>"$DISK_TMP/disk.err"; then
		echo "DISK install FAIL dd-write $(disk_error)"
	else
		want=$(disk_md5 <"$image")
		rm -f "$image"
		sync
		disk_drop_caches
		# dd, not head -c: busybox's head copies byte by byte (70 s for 83 MiB under TCG).
		got=$(dd if="$DISK" bs=1048576 iflag=count_bytes count="$n" 2>/dev/null | disk_md5)
		if [ "$got" = "$want" ]; then
			echo "DISK install ok bytes=$n md5=$got"
		else
			echo "DISK install FAIL verify md5=$got image=$want"
		fi
	fi
	rm -f "$image"
}

# Characters [0, 48) of 4 KiB block $2 of file $1, printable.
disk_label() {
	dd if="$1" bs=4096 skip="$2" count=1 2>/dev/null | head -c 48 | tr -d '\000' |
		tr -c 'A-Za-z0-9 .:_-' '?' | sed 's/ *$//'
}

# Reads blocks [$3, $3 + $4) and compares them with disk.expect: "DISK $1 $2 ok|empty|FAIL ..."
disk_compare() {
	if ! dd if="$DISK" of="$DISK_TMP/disk.read" bs=4096 skip="$3" count="$4" \
		2>"$DISK_TMP/disk.err"; then
		echo "DISK $1 $2 FAIL dd-read $(disk_error)"
		return
	fi
	got=$(file_size "$DISK_TMP/disk.read")
	if [ "$got" -ne $(($4 * 4096)) ]; then
		echo "DISK $1 $2 FAIL short-read bytes=$got"
	elif cmp -s "$DISK_TMP/disk.read" "$DISK_TMP/disk.expect"; then
		echo "DISK $1 $2 ok"
	elif [ "$(tr -d '\000' <"$DISK_TMP/disk.read" | head -c 1 | wc -c)" -eq 0 ]; then
		echo "DISK $1 $2 empty"
	else
		byte=$(cmp "$DISK_TMP/disk.read" "$DISK_TMP/disk.expect" 2>/dev/null |
			sed -n 's/.*differ: [a-z]* \([0-9]*\).*/\1/p')
		bad=$(((${byte:-1} - 1) / 4096))
		echo "DISK $1 $2 FAIL found=\"$(disk_label "$DISK_TMP/disk.read" "$bad")\" at=$(($3 + bad))"
	fi
}

# Writes region $1 (blocks [$2, $2 + $3)), flushes, reads it back.
disk_write() {
	if [ "$1" = load ] && [ -e "$DISK_TMP/disk.load" ]; then
		mv "$DISK_TMP/disk.load" "$DISK_TMP/disk.expect"
	else
		disk_pattern "$slice" "$1" "$2" "$3" >"$DISK_TMP/disk.expect"
	fi
	[ "$1" = load ] && echo "DISK load start $(($3 / 256))MiB at=$2"
	if ! dd if="$DISK_TMP/disk.expect" of="$DISK" bs=4096 seek="$2" conv=notrunc,fsync \
		2>"$DISK_TMP/disk.err"; then
		echo "DISK write $1 FAIL dd-write $(disk_error)"
		return
	fi
	disk_drop_caches
	disk_compare write "$1" "$2" "$3"
}

# Compares region $1 (blocks [$2, $2 + $3)) with what disk_write would have written.
disk_verify() {
	disk_pattern "$slice" "$1" "$2" "$3" >"$DISK_TMP/disk.expect"
	disk_drop_caches
	disk_compare verify "$1" "$2" "$3"
}

# Reads at and across the end must stop at the end; a write past it must fail (block devices).
disk_end() {
	past=$(dd if="$DISK" bs=4096 skip="$blocks" count=1 2>/dev/null | wc -c)
	across=$(dd if="$DISK" bs=512 skip=$((bytes / 512 - 1)) count=2 2>/dev/null | wc -c)
	line="read-past=$((past)) read-across=$((across))"
	ok=0
	[ "$past" -eq 0 ] && [ "$across" -eq 512 ] || ok=1
	if [ -b "$DISK" ]; then
		if disk_pattern "$slice" end "$blocks" 1 |
			dd of="$DISK" bs=4096 seek="$blocks" conv=notrunc,fsync 2>/dev/null; then
			line="$line write-past=accepted"
			ok=1
		else
			line="$line write-past=refused"
		fi
	fi
	if [ "$ok" -eq 0 ]; then echo "DISK end ok $line"; else echo "DISK end FAIL $line"; fi
}

# The <MiB> of a load step ($1: "load" or "load:<MiB>"), in blocks; "" if too large.
disk_load_blocks() {
	mib=8
	case $1 in *:*) mib=${1#*:} ;; esac
	is_number disk "$mib" || return
	n=$((mib * 256))
	[ "$n" -gt 0 ] && [ $((blocks / 4 + n)) -le $((blocks / 2)) ] && echo "$n"
}

# Runs the comma-separated steps $1 on the disk.
disk_steps() {
	slice=$(slice_name)
	sectors=$(cat "$R/sys/block/nvme0n1/size" 2>/dev/null)
	if [ ! -e "$DISK" ] || [ -z "$sectors" ]; then
		echo "DISK FAIL no-disk"
		return
	fi
	bytes=$((sectors * 512))
	blocks=$((bytes / 4096))
	echo "DISK info bytes=$bytes blocks=$blocks"
	# No globbing of the steps (a URL may hold * or ?).
	set -f
	# A load's pattern is made before any step runs, so that its write starts as soon as an
	# at:<s> step lets it (slices meant to write together then do, however slowly each
	# generates 16 MiB of text).
	for step in $(echo "$1" | tr ',' ' '); do
		case $step in
		load | load:*)
			n=$(disk_load_blocks "$step")
			[ -n "$n" ] && disk_pattern "$slice" load $((blocks / 4)) "$n" >"$DISK_TMP/disk.load"
			break
			;;
		esac
	done
	for step in $(echo "$1" | tr ',' ' '); do
		case $step in
		verify | write)
			for region in first:0 middle:$((blocks / 2)) last:$((blocks - 1)); do
				"disk_$step" "${region%:*}" "${region#*:}" 1
			done
			;;
		end) disk_end ;;
		load | load:* | verify-load | verify-load:*)
			n=$(disk_load_blocks "$step")
			if [ -z "$n" ]; then
				echo "DISK ${step%%[-:]*} FAIL too-large"
			elif [ "${step%%:*}" = load ]; then
				disk_write load $((blocks / 4)) "$n"
			else
				disk_verify load $((blocks / 4)) "$n"
			fi
			;;
		at:*)
			if is_number disk "${step#at:}"; then
				while [ "$(cut -d. -f1 "$R/proc/uptime")" -lt "${step#at:}" ]; do
					usleep 200000 2>/dev/null || sleep 1
				done
				echo "DISK at ${step#at:}"
			fi
			;;
		sum)
			disk_drop_caches
			echo "DISK sum $bytes $(dd if="$DISK" bs=65536 2>/dev/null | md5sum | cut -d' ' -f1)"
			;;
		install:*) disk_install "${step#install:}" ;;
		*) echo "DISK FAIL unknown-step $step" ;;
		esac
	done
	set +f
	rm -f "$DISK_TMP/disk.expect" "$DISK_TMP/disk.read" "$DISK_TMP/disk.err" "$DISK_TMP/disk.load"
	echo "DISK done $1"
}

# --- Network steps (microvisor.net=<steps>): stable lines, parsed by tests ----------------
#
# Run in the background once the NICs are up and httpd started, so the shell does not wait.
#
#   NET GET <a.b.c.d> ok <summary>    http://<a.b.c.d>/ answered; <summary> is the text of the
#                                     page's first <h1> ("slice web"), else its first 40
#                                     characters (printable, others as ?), else "empty"
#   NET GET <a.b.c.d> failed          no page (no answer, refused, an HTTP error)
#   NET at <s>                        the uptime reached <s> s
#   NET done <steps> | NET FAIL unknown-step <step> | NET FAIL bad-address <step>
#
# Steps:
#   wget:<a.b.c.d>        fetch the page, tried again 1 s apart while it fails, for up to
#                         NET_WAIT_TRIES tries and NET_WAIT_S seconds of uptime (the peer may
#                         still be booting): one line
#   watch:<a.b.c.d>:<n>   <n> single tries 1 s apart: one line each (a transfer that keeps
#                         working, or stops while the peer is down)
#   at:<s>                wait until Linux has been up <s> seconds
# Every try is bounded: wget under timeout NET_TRY_S.

NET_TMP=${MICROVISOR_NET_TMP:-/tmp}
NET_WAIT_TRIES=60
NET_WAIT_S=60
NET_TRY_S=5

# The uptime in whole seconds.
uptime_s() {
	cut -d. -f1 "$R/proc/uptime"
}

# Whether $1 is a dotted IPv4 address (four decimal parts).
is_ipv4() {
	case $1 in
	*[!0-9.]* | *..* | .* | *. | *.*.*.*.*) return 1 ;;
	*.*.*.*) return 0 ;;
	*) return 1 ;;
	esac
}

# One try at http://$1/: prints "NET GET $1 ok <summary>" and returns 0, or returns 1 silently.
net_get_once() {
	rm -f "$NET_TMP/net.page"
	# No -T: Debian's busybox-static 1.35 wget crashes with it (SIGSEGV, seen natively).
	timeout "$NET_TRY_S" wget -q -O "$NET_TMP/net.page" "http://$1/" >/dev/null 2>&1 ||
		return 1
	[ -f "$NET_TMP/net.page" ] || return 1
	summary=$(tr -d '\000\r' <"$NET_TMP/net.page" | tr '\n' ' ' | sed 's/<[hH]1>/\n/' |
		sed -n '2{s/<.*//;p;}' | head -c 60)
	if [ -z "$summary" ]; then
		summary=$(head -c 40 "$NET_TMP/net.page" | tr -c 'A-Za-z0-9 .:_/<>=-' '?')
	fi
	echo "NET GET $1 ok ${summary:-empty}"
	rm -f "$NET_TMP/net.page"
}

# Runs the comma-separated network steps $1.
net_steps() {
	for step in $(echo "$1" | tr ',' ' '); do
		case $step in
		wget:*)
			ip=${step#wget:}
			if ! is_ipv4 "$ip"; then
				echo "NET FAIL bad-address $step"
				continue
			fi
			until_s=$(($(uptime_s) + NET_WAIT_S))
			tries=0
			until net_get_once "$ip"; do
				tries=$((tries + 1))
				if [ "$tries" -ge "$NET_WAIT_TRIES" ] || [ "$(uptime_s)" -ge "$until_s" ]; then
					echo "NET GET $ip failed"
					break
				fi
				usleep 1000000
			done
			;;
		watch:*:*)
			ip=${step#watch:}
			n=${ip#*:}
			ip=${ip%%:*}
			if ! is_ipv4 "$ip"; then
				echo "NET FAIL bad-address $step"
				continue
			fi
			is_number net "$n" || continue
			i=0
			while [ "$i" -lt "$n" ]; do
				[ "$i" -eq 0 ] || usleep 1000000
				net_get_once "$ip" || echo "NET GET $ip failed"
				i=$((i + 1))
			done
			;;
		at:*)
			if is_number net "${step#at:}"; then
				while [ "$(uptime_s)" -lt "${step#at:}" ]; do
					usleep 200000 2>/dev/null || sleep 1
				done
				echo "NET at ${step#at:}"
			fi
			;;
		*) echo "NET FAIL unknown-step $step" ;;
		esac
	done
	echo "NET done $1"
}

# Prints "PROBE WARN cmdline bad-number <key>=..." unless $2 is a decimal number.
is_number() {
	case $2 in
	'' | *[!0-9]*)
		echo "PROBE WARN cmdline bad-number microvisor.$1=\"$2\""
		return 1
		;;
	esac
}

# The Redfish service (docs/redfish.md), on the manager only: the slice whose device tree has
# the control interface. It prints its own REDFISH line.
redfish_start() {
	[ -x /bin/microvisor-redfish ] || return 0
	grep -qs 'microvisor,control-v1' "$DT"/control@*/compatible || return 0
	case ${redfish:-https} in
	https) set -- --https 0.0.0.0:443 ;;
	http) set -- --https 0.0.0.0:443 --http 0.0.0.0:80 ;;
	http-only) set -- --https off --http 0.0.0.0:80 ;;
	off) return 0 ;;
	*)
		echo "PROBE WARN cmdline bad-redfish microvisor.redfish=\"$redfish\""
		return 0
		;;
	esac
	for host in $(echo "$redfish_media" | tr ',' ' '); do
		set -- "$@" --media-host "$host"
	done
	[ -z "$redfish_sha256" ] || set -- "$@" --password-sha256 "$redfish_sha256"
	# The plan's certificate and key (redfish-certificate, redfish-key), which xtask put here.
	tls=/etc/microvisor-redfish
	if [ -f $tls/tls.crt ] && [ -f $tls/tls.key ]; then
		set -- "$@" --tls-cert $tls/tls.crt --tls-key $tls/tls.key
	fi
	# From a subshell, like powerkey: not a child net_up's `wait` would wait for.
	(/bin/microvisor-redfish "$@" </dev/null &)
}

# The microvisor.* options of the kernel command line.
options() {
	load=
	heartbeat=
	action=
	disk=
	net=
	httpd=
	redfish=
	redfish_media=
	redfish_sha256=
	set -f
	for word in $cmdline; do
		case $word in
		microvisor.load=*) load=${word#*=} ;;
		microvisor.heartbeat=*) heartbeat=${word#*=} ;;
		microvisor.action=*) action=${word#*=} ;;
		microvisor.disk=*) disk=${word#*=} ;;
		microvisor.net=*) net=${word#*=} ;;
		microvisor.httpd=*) httpd=${word#*=} ;;
		microvisor.redfish=*) redfish=${word#*=} ;;
		microvisor.redfish-media=*) redfish_media=${word#*=} ;;
		microvisor.redfish-password-sha256=*) redfish_sha256=${word#*=} ;;
		microvisor.ip=*) ;;
		esac
	done
	set +f

	case $httpd in
	'' | 0) ;;
	1)
		# busybox httpd serves /www on port 80 in the background.
		mkdir -p /www
		printf '<!DOCTYPE html>\n<title>slice %s</title>\n<h1>slice %s</h1>\n' "$slice" \
			"$slice" >/www/index.html
		if httpd -p 80 -h /www; then
			echo "HTTPD 80 started"
		else
			echo "PROBE WARN net httpd-failed"
		fi
		;;
	*) echo "PROBE WARN cmdline bad-httpd microvisor.httpd=\"$httpd\"" ;;
	esac

	redfish_start

	# In the background: the peer may still be booting, and a watch lasts.
	[ -z "$net" ] || net_steps "$net" &

	if [ -n "$load" ] && is_number load "$load" && [ "$load" -gt 0 ]; then
		i=0
		while [ "$i" -lt "$cpus" ]; do
			yes >/dev/null &
			i=$((i + 1))
		done
		echo "LOAD $cpus started"
	fi

	if [ -n "$heartbeat" ] && is_number heartbeat "$heartbeat" && [ "$heartbeat" -gt 0 ]; then
		(
			n=0
			while :; do
				usleep $((heartbeat * 1000))
				n=$((n + 1))
				echo "HEARTBEAT $n ok"
			done
		) &
	fi

	case $action in
	'') ;;
	reboot-after:* | poweroff-after:*)
		what=${action%%-after:*}
		after=${action#*-after:}
		# <s>, or <s>+<s>: two sleeps one after the other. The bench's exit-rate runs
		# (10+00 and 10+20) share the first, so they stay identical until the shorter one
		# powers off: a guest asleep for 10 s and one asleep for 30 s idle differently.
		first=${after%%+*}
		then=${after#"$first"}
		then=${then#+}
		if is_number action "$first" && { [ "$after" = "$first" ] || is_number action "$then"; }; then
			(
				sleep "$first"
				[ -z "$then" ] || sleep "$then"
				echo "PROBE ACTION $what"
				"$what" -f
			) &
		fi
		;;
	*) echo "PROBE WARN cmdline unknown-action \"$action\"" ;;
	esac

	# Last: the shell starts once the disk steps are done.
	[ -z "$disk" ] || disk_steps "$disk"
}

# Typed in the slice's shell: /init disk <steps>.
if [ "$$" -ne 1 ] && [ "${1:-}" = disk ]; then
	disk_steps "${2:-}"
	exit 0
fi

# Typed in the slice's shell: /init net <steps>.
if [ "$$" -ne 1 ] && [ "${1:-}" = net ]; then
	net_steps "${2:-}"
	exit 0
fi

if [ -n "$R" ]; then
	if [ -n "${MICROVISOR_INIT_DISK:-}" ]; then
		disk_steps "$MICROVISOR_INIT_DISK"
	elif [ -n "${MICROVISOR_INIT_NET_STEPS:-}" ]; then
		net_steps "$MICROVISOR_INIT_NET_STEPS"
	else
		[ "${MICROVISOR_INIT_NET:-}" = 1 ] && net_up
		report
	fi
	exit 0
fi

/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts
# The power key (docs/control.md, "Power key"): `powerkey` runs `poweroff` when the
# hypervisor raises GPIO line 3 of the PL061; silent, and gone at once without one. Started
# from a subshell so that it is not a child of this shell: net_up's `wait` must not wait
# for it.
[ -x /bin/powerkey ] && (/bin/powerkey &)
ip link set lo up
net_up
report
options
cd /
exec /bin/busybox init
