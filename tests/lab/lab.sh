# lab.sh - a lab of hosts on one machine, for tests that need several NICs
# per host, rate-capped links and links that fail.  Source it from bash:
# hosts are network namespaces named $LAB_PREFIX-<name> (the prefix holds
# the test's pid, so parallel runs do not clash), links are veth pairs
# created straight inside them with addresses in 10.77.<net>.0/24, visible
# only there.  Everything made is removed by lab_cleanup, which lab_init
# installs as the EXIT trap.
#
#   lab_init                      checks root and namespaces (exit 77 if not)
#   lab_host H                    a host (namespace) with lo up
#   lab_link H1 H2 NET [RATE]     a link: lab<NET> in both, 10.77.NET.1 / .2,
#                                 RATE (e.g. 200mbit) caps both egresses
#   lab_bridge NET                a switch (in the lab's own namespace)
#   lab_attach H NET IDX [RATE]   H joins switch NET as 10.77.NET.IDX
#   lab_exec H CMD...             runs CMD inside H (foreground)
#   lab_spawn H LOG CMD...        runs CMD inside H in the background; the
#                                 pid is in LAB_LAST_PID, killed at cleanup
#   lab_cut H DEV / lab_restore H DEV     link down / up
#   lab_kill_host H               kills every process running inside H
#   lab_addr NET IDX              prints 10.77.NET.IDX
#   lab_reach H ADDR              whether H reaches ADDR (a TCP connect to a
#                                 closed port is refused: no ping needed)
#   fail MSG...                   prints "FAIL: MSG" and exits 1 (cleaning up)

LAB_PREFIX="te-lab-$$"
LAB_NS=()
LAB_PIDS=()
LAB_TMP=() # files and folders removed at cleanup
LAB_LAST_PID=

lab_log() { echo "lab: $*" >&2; }

fail() {
    echo "FAIL: $*"
    exit 1
}

lab_skip() {
    echo "SKIP: $*"
    exit 77
}

lab_ns() { echo "$LAB_PREFIX-$1"; }

lab_addr() { echo "10.77.$1.$2"; }

lab_init() {
    [ "$(id -u)" = 0 ] || lab_skip "the lab needs root (network namespaces, veth, tc)"
    command -v ip >/dev/null || lab_skip "ip (iproute2) is not installed"
    command -v tc >/dev/null || lab_skip "tc (iproute2) is not installed"
    local probe
    probe=$(lab_ns probe)
    ip netns add "$probe" 2>/dev/null || lab_skip "cannot create a network namespace here"
    local why=
    if ! ip -n "$probe" link add lab0 type veth peer name lab1 2>/dev/null; then
        why="cannot create veth pairs here"
    elif ! ip netns exec "$probe" tc qdisc add dev lab0 root tbf rate 100mbit burst 256kb \
        latency 50ms 2>/dev/null; then
        why="the tbf qdisc is not available (kernel module sch_tbf)"
    elif ! ip -n "$probe" link add labbr type bridge 2>/dev/null; then
        why="cannot create a bridge here (kernel module bridge)"
    fi
    ip netns del "$probe"
    [ -z "$why" ] || lab_skip "$why"
    trap lab_cleanup EXIT
    trap 'exit 1' INT TERM
}

lab_add_ns() {
    ip netns add "$1" || return 1
    LAB_NS+=("$1")
    ip -n "$1" link set lo up
}

lab_host() { lab_add_ns "$(lab_ns "$1")"; }

# Caps DEV's egress inside host H: tbf with a burst large enough for GSO packets.
lab_cap() {
    ip netns exec "$(lab_ns "$1")" tc qdisc replace dev "$2" root tbf rate "$3" \
        burst 256kb latency 50ms
}

lab_link() {
    local h1=$1 h2=$2 net=$3 rate=$4 ns1 ns2
    ns1=$(lab_ns "$h1") ns2=$(lab_ns "$h2")
    ip link add "lab$net" netns "$ns1" type veth peer name "lab$net" netns "$ns2" || return 1
    ip -n "$ns1" addr add "$(lab_addr "$net" 1)/24" dev "lab$net"
    ip -n "$ns2" addr add "$(lab_addr "$net" 2)/24" dev "lab$net"
    ip -n "$ns1" link set "lab$net" up
    ip -n "$ns2" link set "lab$net" up
    if [ -n "$rate" ]; then
        lab_cap "$h1" "lab$net" "$rate" && lab_cap "$h2" "lab$net" "$rate"
    fi
}

lab_bridge() {
    local ns
    ns=$(lab_ns sw)
    ip netns list | grep -q "^$ns\b" || lab_add_ns "$ns" || return 1
    ip -n "$ns" link add "br$1" type bridge && ip -n "$ns" link set "br$1" up
}

lab_attach() {
    local h=$1 net=$2 idx=$3 rate=$4 ns sw
    ns=$(lab_ns "$h") sw=$(lab_ns sw)
    ip link add "lab$net" netns "$ns" type veth peer name "p${idx}n$net" netns "$sw" || return 1
    ip -n "$sw" link set "p${idx}n$net" master "br$net"
    ip -n "$sw" link set "p${idx}n$net" up
    ip -n "$ns" addr add "$(lab_addr "$net" "$idx")/24" dev "lab$net"
    ip -n "$ns" link set "lab$net" up
    if [ -n "$rate" ]; then
        lab_cap "$h" "lab$net" "$rate" &&
            ip netns exec "$sw" tc qdisc replace dev "p${idx}n$net" root tbf rate "$rate" \
                burst 256kb latency 50ms
    fi
}

lab_exec() {
    local ns
    ns=$(lab_ns "$1")
    shift
    ip netns exec "$ns" "$@"
}

lab_spawn() {
    local ns log=$2
    ns=$(lab_ns "$1")
    shift 2
    # In a subshell, so that the shell's "Killed" notice lands in the log.
    (
        ip netns exec "$ns" "$@"
        exit $?
    ) >"$log" 2>&1 &
    LAB_LAST_PID=$!
    LAB_PIDS+=("$LAB_LAST_PID")
}

lab_reach() {
    local out
    out=$(lab_exec "$1" timeout 2 bash -c "exec 3<>/dev/tcp/$2/9" 2>&1) && return 0
    case $out in *refused*) return 0 ;; esac
    return 1
}

lab_cut() { ip -n "$(lab_ns "$1")" link set "$2" down; }

lab_restore() { ip -n "$(lab_ns "$1")" link set "$2" up; }

# Every process inside the namespace, by pid (ours: the namespace is ours).
lab_kill_host() {
    local ns pids
    ns=$(lab_ns "$1")
    pids=$(ip netns pids "$ns" 2>/dev/null)
    [ -n "$pids" ] && kill -9 $pids 2>/dev/null
    return 0
}

lab_cleanup() {
    local rc=$? pid ns pids
    trap - EXIT
    for pid in "${LAB_PIDS[@]}"; do
        kill "$pid" 2>/dev/null
    done
    sleep 0.2
    for ns in "${LAB_NS[@]}"; do
        pids=$(ip netns pids "$ns" 2>/dev/null)
        [ -n "$pids" ] && kill -9 $pids 2>/dev/null
    done
    for pid in "${LAB_PIDS[@]}"; do
        kill -9 "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    for ns in "${LAB_NS[@]}"; do
        ip netns del "$ns" 2>/dev/null
    done
    [ ${#LAB_TMP[@]} -gt 0 ] && rm -rf "${LAB_TMP[@]}"
    LAB_NS=()
    LAB_PIDS=()
    exit $rc
}
