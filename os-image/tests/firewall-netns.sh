#!/usr/bin/env bash
# Behavioural test of os-image/nftables/medgate.nft, without booting anything: three network
# namespaces joined by veth pairs stand for the appliance, a modality and the hospital network;
# the ruleset is loaded into the appliance's namespace and real TCP/UDP/ICMP traffic checks that
# exactly what the ruleset promises passes. Nothing leaves this machine: the namespaces have no
# route out, and the addresses are from the documentation ranges (192.0.2.0/24, 198.51.100.0/24).
#
# Needs root, iproute2 (`ip netns`), nft and python3. Exits 0 when every check passes.
set -euo pipefail

ruleset=${1:-"$(cd "$(dirname "$0")/.." && pwd)/nftables/medgate.nft"}
py=/usr/bin/python3
tag="mg$$"
appl="${tag}-appl" modal="${tag}-modal" hosp="${tag}-hosp"
pids=()
failures=0

cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for ns in "$appl" "$modal" "$hosp"; do ip netns del "$ns" 2>/dev/null || true; done
}
trap cleanup EXIT

for ns in "$appl" "$modal" "$hosp"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
done
# The appliance's NICs carry the names the ruleset expects by default (eno1 modality, eno2 uplink).
ip link add "${tag}m" type veth peer name "${tag}a"
ip link set "${tag}m" netns "$modal"
ip link set "${tag}a" netns "$appl"
ip -n "$appl" link set "${tag}a" name eno1
ip link add "${tag}h" type veth peer name "${tag}u"
ip link set "${tag}h" netns "$hosp"
ip link set "${tag}u" netns "$appl"
ip -n "$appl" link set "${tag}u" name eno2

ip -n "$appl" addr add 192.0.2.1/24 dev eno1
ip -n "$appl" addr add 198.51.100.1/24 dev eno2
ip -n "$modal" addr add 192.0.2.2/24 dev "${tag}m"
ip -n "$hosp" addr add 198.51.100.2/24 dev "${tag}h"
ip -n "$appl" link set eno1 up
ip -n "$appl" link set eno2 up
ip -n "$modal" link set "${tag}m" up
ip -n "$hosp" link set "${tag}h" up

ip netns exec "$appl" nft -f "$ruleset"

# A server listening on TCP and UDP ports in a namespace; it accepts and closes, and echoes UDP.
serve() {
    local ns=$1; shift
    ip netns exec "$ns" "$py" -c '
import socket, sys, threading
def tcp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(16)
    while True:
        c, _ = s.accept(); c.close()
def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    while True:
        data, peer = s.recvfrom(512); s.sendto(data, peer)
for spec in sys.argv[1:]:
    proto, port = spec.split("/")
    threading.Thread(target=tcp if proto == "tcp" else udp, args=(int(port),), daemon=True).start()

threading.Event().wait()
' "$@" &
    pids+=($!)
}

serve "$appl" tcp/104 tcp/2762 tcp/22 tcp/8080 udp/161
serve "$modal" tcp/104 tcp/22
serve "$hosp" tcp/8883 tcp/443 tcp/2762 tcp/53 tcp/22 tcp/80 tcp/104 udp/53 udp/123 udp/161
sleep 1

# probe NS PROTO HOST PORT: exit 0 if a TCP connection (or a UDP echo, or an ICMP echo reply)
# succeeds within 2 s.
probe() {
    ip netns exec "$1" "$py" -c '
import socket, struct, sys
proto, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    if proto == "tcp":
        socket.create_connection((host, port), timeout=2).close()
    elif proto == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
        s.sendto(b"medgate", (host, port)); s.recvfrom(512)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); s.settimeout(2)
        body = struct.pack("!BBHHH", 8, 0, 0, 0x4d47, 1) + b"medgate!"
        csum = sum(struct.unpack("!%dH" % (len(body) // 2), body))
        csum = (csum >> 16) + (csum & 0xffff); csum = ~(csum + (csum >> 16)) & 0xffff
        s.sendto(body[:2] + struct.pack("!H", csum) + body[4:], (host, 0))
        while True:
            data, _ = s.recvfrom(1024)
            if data[20] == 0:
                break
except OSError:
    sys.exit(1)
' "$2" "$3" "$4"
}

expect() {
    local want=$1 what=$2; shift 2
    local got
    if probe "$@"; then got=pass; else got=blocked; fi
    if [[ $got == "$want" ]]; then
        printf '  ok    %-7s %s\n' "$got" "$what"
    else
        printf '  FAIL  %-7s %s (expected %s)\n' "$got" "$what" "$want"
        failures=$((failures + 1))
    fi
}

echo "firewall ($ruleset), modality NIC eno1, uplink NIC eno2:"
expect pass    "modality -> appliance tcp/104 (DICOM)"            "$modal" tcp 192.0.2.1 104
expect pass    "modality -> appliance tcp/2762 (DICOM TLS)"       "$modal" tcp 192.0.2.1 2762
expect pass    "modality -> appliance ICMP echo"                  "$modal" icmp 192.0.2.1 0
expect blocked "modality -> appliance tcp/22 (SSH)"               "$modal" tcp 192.0.2.1 22
expect blocked "modality -> appliance tcp/8080"                   "$modal" tcp 192.0.2.1 8080
expect blocked "modality -> appliance udp/161"                    "$modal" udp 192.0.2.1 161
expect blocked "hospital -> appliance tcp/104 (uplink takes nothing new)" "$hosp" tcp 198.51.100.1 104
expect blocked "hospital -> appliance tcp/22 (SSH)"               "$hosp" tcp 198.51.100.1 22
expect blocked "hospital -> appliance ICMP echo"                  "$hosp" icmp 198.51.100.1 0
expect pass    "appliance -> hospital tcp/8883 (MQTT TLS)"        "$appl" tcp 198.51.100.2 8883
expect pass    "appliance -> hospital tcp/443 (HTTPS)"            "$appl" tcp 198.51.100.2 443
expect pass    "appliance -> hospital tcp/2762 (DICOM TLS)"       "$appl" tcp 198.51.100.2 2762
expect pass    "appliance -> hospital udp/53 (DNS)"               "$appl" udp 198.51.100.2 53
expect pass    "appliance -> hospital tcp/53 (DNS)"               "$appl" tcp 198.51.100.2 53
expect pass    "appliance -> hospital udp/123 (NTP)"              "$appl" udp 198.51.100.2 123
expect blocked "appliance -> hospital tcp/80"                     "$appl" tcp 198.51.100.2 80
expect blocked "appliance -> hospital tcp/22"                     "$appl" tcp 198.51.100.2 22
expect blocked "appliance -> hospital tcp/104 (plain DICOM out)"  "$appl" tcp 198.51.100.2 104
expect blocked "appliance -> hospital udp/161"                    "$appl" udp 198.51.100.2 161
expect blocked "appliance -> modality tcp/104 (modality NIC only answers)" "$appl" tcp 192.0.2.2 104

if ((failures > 0)); then
    echo "firewall: $failures check(s) failed" >&2
    exit 1
fi
echo "firewall: all checks passed"
