# shellcheck shell=bash
# Small helpers shared by bin/stack (sourced, not executed).

# Messages go to stderr so that `eval "$(bin/stack env)"` only ever sees the export lines.
# Callers start the text with the service it is about ("kafka: ...") or with "stack: ".
say() { printf '%s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

is_root() { [[ $(id -u) -eq 0 ]]; }

# True when something accepts TCP connections on 127.0.0.1:$1 (or host $2). Uses bash's /dev/tcp,
# so it needs no nc/ss; the timeout guards against a filtered port hanging the connect.
port_open() {
    local port=$1 host=${2:-127.0.0.1}
    # shellcheck disable=SC2016  # $0 and $1 belong to the inner shell
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$host" "$port" 2>/dev/null
}

# True when process $1 exists and is not a zombie. A daemon whose parent has exited is reaped by
# PID 1, which in some containers does so late; kill -0 alone would report such a zombie as alive.
pid_running() {
    local pid=$1 stat
    kill -0 "$pid" 2>/dev/null || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 0   # no /proc: trust kill -0
    stat=${stat##*) }                                        # field 3, after "pid (comm) "
    [[ ${stat%% *} != Z ]]
}

# True when the pid stored in file $1 is a live process (and, with $2, its command line contains $2,
# so that a pid recycled by an unrelated process after a reboot is not mistaken for ours).
pidfile_alive() {
    local file=$1 needle=${2:-} pid
    [[ -s $file ]] || return 1
    pid=$(<"$file")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    pid_running "$pid" || return 1
    if [[ -n $needle ]]; then
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$needle" || return 1
    fi
}

# Wait until process $1 has exited, at most $2 seconds. Returns 1 on time-out.
wait_pid_gone() {
    local pid=$1 limit=$2 i
    for ((i = 0; i < limit * 10; i++)); do
        pid_running "$pid" || return 0
        sleep 0.1
    done
    return 1
}

# Seconds since $1 (a value of $EPOCHREALTIME), with one decimal, for the "started in" messages.
elapsed_since() {
    local start=$1
    awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1fs", b - a }'
}

# "host:port" of a URL such as postgres://u:p@host:5432/db or redis://host:6379/0, or of the first
# entry of a Kafka bootstrap list ("h1:9092,h2:9092"). Prints nothing if it cannot tell.
url_host_port() {
    local url=$1 default_port=$2 rest hostport
    rest=${url#*://}          # drop scheme (no-op for a bootstrap list)
    rest=${rest%%[/?,]*}      # drop path, query, further bootstrap servers
    hostport=${rest##*@}      # drop credentials
    if [[ $hostport =~ ^\[(.*)\]:([0-9]+)$ ]]; then
        printf '%s %s\n' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
    elif [[ $hostport =~ ^([^:]+):([0-9]+)$ ]]; then
        printf '%s %s\n' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
    elif [[ -n $hostport ]]; then
        printf '%s %s\n' "$hostport" "$default_port"
    fi
}

# Run a command as root: directly when we are root, through `sudo -n` (never prompts, so CI fails
# fast instead of hanging) otherwise. Returns 127 if neither is possible.
as_root() {
    if is_root; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        return 127
    fi
}

# Install Debian packages without questions. `apt-get update` costs time and network, so it only
# runs when the plain install fails (typically: empty or stale package lists on a fresh machine).
apt_install() {
    local log
    command -v apt-get >/dev/null 2>&1 || return 127
    if ! is_root && ! command -v sudo >/dev/null 2>&1; then
        return 127
    fi
    log=$(mktemp)
    say "stack: installing $* with apt-get..."
    if as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >"$log" 2>&1 ||
        { as_root apt-get update -q >>"$log" 2>&1 &&
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >>"$log" 2>&1; }; then
        rm -f "$log"
        return 0
    fi
    tail -n 15 "$log" >&2
    rm -f "$log"
    return 1
}

# Slow downloads and builds (Kafka's jars, the Kubernetes API server) are cached outside the clone, keyed by version,
# so every clone on this machine (and every CI run) shares them.
CACHE_DIR=${GH_CACHE_DIR:-${XDG_CACHE_HOME:-${HOME:-$(cd ~ && pwd)}/.cache}/globalhub}

# Hold an exclusive lock on file $1 (at most $2 seconds of waiting) for the rest of the calling (sub)shell, on fd 8.
cache_lock() {
    local file=$1 limit=$2
    mkdir -p "${file%/*}"
    command -v flock >/dev/null 2>&1 || return 0
    exec 8>"$file"
    flock -w "$limit" 8 || die "stack: another build has held $file for $limit seconds"
}

# stop_pidfile NAME PIDFILE NEEDLE WHAT: SIGTERM the process of a pidfile (SIGKILL after 30 s), and report it.
stop_pidfile() {
    local name=$1 file=$2 needle=$3 what=$4 pid
    if ! pidfile_alive "$file" "$needle"; then
        rm -f "$file"
        report "$name" stopped "-"
        return 0
    fi
    pid=$(<"$file")
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_pid_gone "$pid" 30; then
        say "$name: pid $pid ignored SIGTERM for 30s, killing it"
        kill -KILL "$pid" 2>/dev/null || true
        wait_pid_gone "$pid" 10 || die "$name: pid $pid did not exit"
    fi
    rm -f "$file"
    report "$name" stopped "$what"
}
