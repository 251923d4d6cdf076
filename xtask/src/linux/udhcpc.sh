#!/bin/sh
# /etc/udhcpc.script of the built-in Linux guest (xtask/src/linux/udhcpc.sh): busybox udhcpc
# runs it with the event in $1 and the lease in the environment ($interface, $ip, $subnet,
# $mask). It sets the leased address on the interface and nothing else: no route, no DNS (a
# restricted QEMU user network offers neither, and a slice's only routes are its own subnets).
case $1 in
deconfig)
	ip -4 addr flush dev "$interface"
	ip link set "$interface" up
	;;
bound | renew)
	ip -4 addr flush dev "$interface"
	ip addr add "$ip/${mask:-24}" dev "$interface"
	;;
esac
exit 0
