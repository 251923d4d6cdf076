#!/bin/busybox sh
# /init of the built-in Linux guest (`kernel = "linux"`), put in the initramfs by
# `cargo xtask` (xtask/src/linux/init.sh). Runs as PID 1 under busybox sh: mounts, reports
# what Linux sees in one line, starts what the kernel command line asks for, then hands over
# to busybox init, which keeps a shell on the console and handles reboot/poweroff.
#
# Lines (stable, parsed by tests):
#   SLICE-REPORT {"slice":"..","cpus":N,"mpidrs":[..],"memory_bytes":N,"memory_base":"0x..",
#                 "dt_cpus":N,"mem_total_kib":N[,"nvme_bytes":N,"nvme_queues":N],
#                 "kernel":"..","cmdline":".."}
#   PROBE PASS | PROBE FAIL <reason> [<reason> ...]
#   PROBE WARN cmdline <problem>
#   LOAD <n> started                  microvisor.load=1
#   HEARTBEAT <n> ok                  microvisor.heartbeat=<ms>
#   PROBE ACTION reboot|poweroff      microvisor.action=reboot-after:<s>|poweroff-after:<s>
#
# MICROVISOR_INIT_ROOT (host tests only) prefixes the /proc and /sys paths read, and makes
# the script stop after the report.

R=${MICROVISOR_INIT_ROOT:-}
DT=$R/proc/device-tree
TAB=$(printf '\t')
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/

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

report() {
	slice=native
	if [ -f "$DT/chosen/microvisor,slice-name" ]; then
		slice=$(tr -d '\000' <"$DT/chosen/microvisor,slice-name")
	fi
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

	# NVMe: a slice with a PCIe host bridge in its DT has a controller; the driver probes it
	# asynchronously, so give the namespace a few seconds to appear.
	nvme_json=
	nvme_missing=
	if ls -d "$R"/proc/device-tree/pcie@* >/dev/null 2>&1; then
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

	line="SLICE-REPORT {\"slice\":$(json_string "$slice"),\"cpus\":$cpus"
	line="$line,\"mpidrs\":[$mpidr_list],\"memory_bytes\":$memory_bytes"
	line="$line,\"memory_base\":$base_json,\"dt_cpus\":$dt_cpus"
	line="$line,\"mem_total_kib\":$mem_total_kib$nvme_json,\"kernel\":$(json_string "$kernel")"
	line="$line,\"cmdline\":$(json_string "$cmdline")}"
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
	if [ -z "$reasons" ]; then echo "PROBE PASS"; else echo "PROBE FAIL$reasons"; fi
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

# The microvisor.* options of the kernel command line.
options() {
	load=
	heartbeat=
	action=
	set -f
	for word in $cmdline; do
		case $word in
		microvisor.load=*) load=${word#*=} ;;
		microvisor.heartbeat=*) heartbeat=${word#*=} ;;
		microvisor.action=*) action=${word#*=} ;;
		esac
	done
	set +f

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
		if is_number action "$after"; then
			(
				sleep "$after"
				echo "PROBE ACTION $what"
				"$what" -f
			) &
		fi
		;;
	*) echo "PROBE WARN cmdline unknown-action \"$action\"" ;;
	esac
}

if [ -n "$R" ]; then
	report
	exit 0
fi

/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts
report
options
cd /
exec /bin/busybox init
