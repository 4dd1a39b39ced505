# Sourced by the bench scripts: `netns_pair TAG` creates namespaces nflua-TAG-<pid>-a and -b
# (names in NS_A and NS_B) joined by a veth pair named veth0 on both sides, 192.0.2.2/24 in b,
# loopback and veth up, and deletes them (killing only processes inside them) on exit, failure
# or ctrl-c. The caller adds the addresses of a.
netns_pair() {
    NS_A="nflua-$1-$$-a"
    NS_B="nflua-$1-$$-b"
    trap netns_pair_cleanup EXIT
    trap 'netns_pair_cleanup; exit 130' INT TERM
    ip netns add "$NS_A"
    ip netns add "$NS_B"
    ip link add veth0 netns "$NS_A" type veth peer name veth0 netns "$NS_B"
    ip -n "$NS_B" addr add 192.0.2.2/24 dev veth0
    for ns in "$NS_A" "$NS_B"; do
        ip -n "$ns" link set lo up
        ip -n "$ns" link set veth0 up
    done
}

netns_pair_cleanup() {
    trap - EXIT INT TERM
    for ns in "$NS_A" "$NS_B"; do
        if ip netns list | grep -qw "$ns"; then
            # Only processes inside our own namespaces (started by this run).
            for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
            ip netns del "$ns" || true
        fi
    done
}
