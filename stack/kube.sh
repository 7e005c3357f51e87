# shellcheck shell=bash
# A real Kubernetes API server for tests and the demo (sourced by bin/stack, not executed).
#
# Three processes, on loopback, with their data under .stack/kube/:
# * etcd, from Debian's etcd-server package;
# * stack/kube/core_stub.py, which answers the few "core" API calls apiextensions-apiserver delegates (TokenReview,
#   SubjectAccessReview, a Service informer): bearer tokens and RBAC rules come from files it rereads;
# * apiextensions-apiserver, built with Go from the k8s.io/apiextensions-apiserver module once and cached outside the
#   clone, keyed by version. It serves CustomResourceDefinitions and custom objects with list and watch.
#
# The real OCM CRDs (ManagedCluster, ClusterClaim, Policy) come from Go modules at pinned versions
# (stack/kube/crds.txt) and are applied on every start (server-side apply: idempotent).
#
# Who may do what:
# * .stack/kube/admin.kubeconfig: a client certificate in the group system:masters (everything);
# * .stack/kube/agent.kubeconfig: a bearer token for the agent's ServiceAccount user, allowed exactly what
#   .stack/kube/rules.json grants it (by default the ClusterRole of deploy/agent/base/rbac.yaml: get, list and watch
#   on managedclusters, clusterclaims and policies).

KUBE_SRC=$ROOT/stack/kube
KUBE_DIR=$STACK_DIR/kube
KUBE_PKI=$KUBE_DIR/pki
KUBE_LOGS=$KUBE_DIR/logs
ETCD_DATA=$KUBE_DIR/etcd
ETCD_PIDFILE=$KUBE_DIR/etcd.pid
KUBE_STUB_PIDFILE=$KUBE_DIR/core-stub.pid
KUBE_APISERVER_PIDFILE=$KUBE_DIR/apiserver.pid
KUBE_ADMIN_KUBECONFIG=$KUBE_DIR/admin.kubeconfig
KUBE_AGENT_KUBECONFIG=$KUBE_DIR/agent.kubeconfig
KUBE_TOKENS=$KUBE_DIR/tokens.csv
KUBE_RULES=$KUBE_DIR/rules.json
KUBE_AGENT_USER=system:serviceaccount:globalhub-agent:globalhub-agent

KUBE_APISERVER_VERSION=${GH_KUBE_APISERVER_VERSION:-v0.34.3}
KUBE_APISERVER_BIN=$CACHE_DIR/kube/apiextensions-apiserver-$KUBE_APISERVER_VERSION/apiextensions-apiserver

ETCD_PORT=${GH_ETCD_PORT:-52379}
ETCD_PEER_PORT=${GH_ETCD_PEER_PORT:-52380}
KUBE_PORT=${GH_KUBE_PORT:-56443}
KUBE_STUB_PORT=${GH_KUBE_STUB_PORT:-56442}
for _port in "$ETCD_PORT" "$ETCD_PEER_PORT" "$KUBE_PORT" "$KUBE_STUB_PORT"; do
    [[ $_port =~ ^[0-9]+$ ]] || die "stack: ports must be numbers, got '$_port'"
done
KUBE_URL=https://127.0.0.1:$KUBE_PORT
ETCD_URL=http://127.0.0.1:$ETCD_PORT

# ---------------------------------------------------------------------------------------------
# Prerequisites: etcd from Debian, the API server built once with Go
# ---------------------------------------------------------------------------------------------

require_etcd() {
    command -v etcd >/dev/null 2>&1 && command -v etcdctl >/dev/null 2>&1 && return 0
    apt_install etcd-server etcd-client ||
        die "etcd is missing: install it with 'apt-get install etcd-server etcd-client' (Debian's packages)."
}

require_go() {
    command -v go >/dev/null 2>&1 ||
        die "kube: building apiextensions-apiserver and fetching the OCM CRDs needs Go (1.24 or newer): https://go.dev/doc/install"
}

# Build the API server into the cache once per version. The build goes to a temporary folder first, so an interrupted
# build never looks complete, and a lock keeps two clones on one machine from building it twice at once.
kube_build_apiserver() {
    [[ -x $KUBE_APISERVER_BIN ]] && return 0
    require_go
    local dir=${KUBE_APISERVER_BIN%/*} tmp
    mkdir -p "$CACHE_DIR/kube"
    (
        cache_lock "$CACHE_DIR/kube/.build.lock" 1800
        [[ -x $KUBE_APISERVER_BIN ]] && exit 0
        say "kube: building apiextensions-apiserver $KUBE_APISERVER_VERSION with Go (first run only, several minutes)..."
        tmp=$(mktemp -d "$CACHE_DIR/kube/build.XXXXXX")
        if ! GOBIN=$tmp GOFLAGS=-buildvcs=false go install "k8s.io/apiextensions-apiserver@$KUBE_APISERVER_VERSION" \
            >"$CACHE_DIR/kube/build.log" 2>&1 </dev/null; then
            tail -n 20 "$CACHE_DIR/kube/build.log" >&2
            rm -rf "$tmp"
            die "kube: building apiextensions-apiserver failed (log: $CACHE_DIR/kube/build.log)"
        fi
        rm -rf "$dir"
        mv "$tmp" "$dir"
    ) 9>&-
}

# The CRDs pinned in stack/kube/crds.txt, one "file group/version/plural" line each on stdout. `go mod download`
# keeps the modules in Go's module cache, so a second run needs no network.
kube_crd_files() {
    local module path resource dir
    require_go
    while read -r module path resource; do
        [[ -z $module || $module == \#* ]] && continue
        dir=$(cd "$CACHE_DIR" && go mod download -json "$module" 2>>"$KUBE_LOGS/crds.log" |
            sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p') || true
        [[ -n $dir && -d $dir ]] ||
            die "kube: could not download $module from the Go module proxy (log: $KUBE_LOGS/crds.log)"
        [[ -f $dir/$path ]] || die "kube: $module has no $path"
        printf '%s %s\n' "$dir/$path" "$resource"
    done <"$KUBE_SRC/crds.txt"
}

# ---------------------------------------------------------------------------------------------
# Certificates, tokens, rules and kubeconfigs (made once; deleting .stack/kube makes them anew)
# ---------------------------------------------------------------------------------------------

kube_openssl() {
    openssl "$@" >>"$KUBE_LOGS/pki.log" 2>&1 || die "kube: openssl $1 failed (log: $KUBE_LOGS/pki.log)"
}

# kube_sign NAME SUBJECT EXTENSIONS: a key and a certificate signed by the stack's CA.
kube_sign() {
    local name=$1 subject=$2 extensions=$3
    kube_openssl req -newkey rsa:2048 -nodes -keyout "$KUBE_PKI/$name.key" -out "$KUBE_PKI/$name.csr" -subj "$subject"
    printf '%s\n' "$extensions" >"$KUBE_PKI/$name.ext"
    kube_openssl x509 -req -in "$KUBE_PKI/$name.csr" -CA "$KUBE_PKI/ca.crt" -CAkey "$KUBE_PKI/ca.key" \
        -CAcreateserial -out "$KUBE_PKI/$name.crt" -days 3650 -extfile "$KUBE_PKI/$name.ext"
    rm -f "$KUBE_PKI/$name.csr" "$KUBE_PKI/$name.ext"
}

kube_pki() {
    [[ -f $KUBE_PKI/admin.crt ]] && return 0
    command -v openssl >/dev/null 2>&1 || apt_install openssl || die "kube: openssl is missing"
    rm -rf "$KUBE_PKI"
    mkdir -p "$KUBE_PKI"
    chmod 700 "$KUBE_PKI"
    kube_openssl req -x509 -newkey rsa:2048 -nodes -keyout "$KUBE_PKI/ca.key" -out "$KUBE_PKI/ca.crt" -days 3650 \
        -subj "/CN=globalhub-local-kube-ca"
    kube_sign server "/CN=kube-apiserver" $'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth'
    kube_sign admin "/O=system:masters/CN=globalhub-admin" "extendedKeyUsage=clientAuth"
}

# kube_kubeconfig FILE SERVER USER-YAML [CA]: a kubeconfig with one cluster, one user and one context.
kube_kubeconfig() {
    local file=$1 server=$2 user=$3 ca=${4:-}
    {
        printf 'apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: "%s"\n' "$server"
        [[ -n $ca ]] && printf '    certificate-authority: "%s"\n' "$ca"
        printf 'users:\n- name: local\n  user:\n%s\n' "$user"
        printf 'contexts:\n- name: local\n  context: {cluster: local, user: local}\ncurrent-context: local\n'
    } >"$file"
    chmod 600 "$file"
}

kube_config_files() {
    if [[ ! -s $KUBE_TOKENS ]]; then
        printf '%s,%s,%s,%s\n' "$(head -c 24 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')" \
            "$KUBE_AGENT_USER" agent-uid "system:serviceaccounts|system:serviceaccounts:globalhub-agent" >"$KUBE_TOKENS"
        chmod 600 "$KUBE_TOKENS"
    fi
    [[ -s $KUBE_RULES ]] || cp "$KUBE_SRC/rules.json" "$KUBE_RULES"
    local token
    token=$(head -n 1 "$KUBE_TOKENS" | cut -d, -f1)
    # Rewritten every time: the port may have changed.
    kube_kubeconfig "$KUBE_DIR/core.kubeconfig" "http://127.0.0.1:$KUBE_STUB_PORT" "    {}"
    kube_kubeconfig "$KUBE_ADMIN_KUBECONFIG" "$KUBE_URL" \
        "    client-certificate: \"$KUBE_PKI/admin.crt\""$'\n'"    client-key: \"$KUBE_PKI/admin.key\"" "$KUBE_PKI/ca.crt"
    kube_kubeconfig "$KUBE_AGENT_KUBECONFIG" "$KUBE_URL" "    token: \"$token\"" "$KUBE_PKI/ca.crt"
}

# ---------------------------------------------------------------------------------------------
# etcd
# ---------------------------------------------------------------------------------------------

etcd_alive() { pidfile_alive "$ETCD_PIDFILE" etcd; }

etcd_up() {
    local start=$EPOCHREALTIME i
    if etcd_alive; then
        report etcd reused "$ETCD_URL"
        return 0
    fi
    require_etcd
    local port
    for port in "$ETCD_PORT" "$ETCD_PEER_PORT"; do
        port_open "$port" && die "etcd: port $port is used by another program; set GH_ETCD_PORT / GH_ETCD_PEER_PORT"
    done
    mkdir -p "$ETCD_DATA" "$KUBE_LOGS"
    chmod 700 "$ETCD_DATA"
    rm -f "$ETCD_PIDFILE"
    # shellcheck disable=SC2016  # $$, $0 and $@ belong to the inner shell
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$ETCD_PIDFILE" \
        etcd --name globalhub --data-dir "$ETCD_DATA" \
        --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster "globalhub=http://127.0.0.1:$ETCD_PEER_PORT" \
        --unsafe-no-fsync --quota-backend-bytes 4294967296 \
        </dev/null >>"$KUBE_LOGS/etcd.log" 2>&1 9>&- &
    wait_pidfile "$ETCD_PIDFILE" || die "etcd: did not start (log: $KUBE_LOGS/etcd.log)"
    for ((i = 0; i < 300; i++)); do
        ETCDCTL_API=3 etcdctl --endpoints "$ETCD_URL" --command-timeout 2s endpoint health >/dev/null 2>&1 && break
        if ((i > 10)) && ! etcd_alive; then
            tail -n 20 "$KUBE_LOGS/etcd.log" >&2
            die "etcd: exited during startup (log: $KUBE_LOGS/etcd.log)"
        fi
        sleep 0.1
    done
    ((i < 300)) || { tail -n 20 "$KUBE_LOGS/etcd.log" >&2; die "etcd: not healthy after 30s"; }
    report etcd started "$ETCD_URL ($(elapsed_since "$start"))"
}

etcd_down() {
    stop_pidfile etcd "$ETCD_PIDFILE" etcd "$ETCD_URL"
}

etcd_status() {
    if etcd_alive && port_open "$ETCD_PORT"; then
        report etcd running "$ETCD_URL"
    else
        report etcd stopped "$ETCD_URL"
        return 1
    fi
}

# ---------------------------------------------------------------------------------------------
# The API server (and its core stub)
# ---------------------------------------------------------------------------------------------

kube_stub_alive() { pidfile_alive "$KUBE_STUB_PIDFILE" core_stub.py; }
kube_apiserver_alive() { pidfile_alive "$KUBE_APISERVER_PIDFILE" apiextensions-apiserver; }

kube_curl() {
    curl -sS --max-time 10 --cacert "$KUBE_PKI/ca.crt" --cert "$KUBE_PKI/admin.crt" --key "$KUBE_PKI/admin.key" "$@"
}

kube_start_stub() {
    kube_stub_alive && return 0
    port_open "$KUBE_STUB_PORT" &&
        die "kube: port $KUBE_STUB_PORT is used by another program; set GH_KUBE_STUB_PORT to a free port"
    rm -f "$KUBE_STUB_PIDFILE"
    # shellcheck disable=SC2016  # $$, $0 and $@ belong to the inner shell
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$KUBE_STUB_PIDFILE" \
        python3 "$KUBE_SRC/core_stub.py" --port "$KUBE_STUB_PORT" --tokens "$KUBE_TOKENS" --rules "$KUBE_RULES" \
        </dev/null >>"$KUBE_LOGS/core-stub.log" 2>&1 9>&- &
    local i
    for ((i = 0; i < 100; i++)); do
        port_open "$KUBE_STUB_PORT" && return 0
        if ((i > 10)) && ! kube_stub_alive; then
            tail -n 20 "$KUBE_LOGS/core-stub.log" >&2
            die "kube: the core stub exited during startup (log: $KUBE_LOGS/core-stub.log)"
        fi
        sleep 0.1
    done
    die "kube: the core stub does not answer on port $KUBE_STUB_PORT after 10s (log: $KUBE_LOGS/core-stub.log)"
}

kube_start_apiserver() {
    rm -f "$KUBE_APISERVER_PIDFILE"
    # Webhook results are cached for a second only, so a changed token or rule takes effect at once. Open watches
    # get 2 s to end when it stops (by default it waits for them, and `down` would wait 30 s and kill it).
    # shellcheck disable=SC2016  # $$, $0 and $@ belong to the inner shell
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$KUBE_APISERVER_PIDFILE" \
        "$KUBE_APISERVER_BIN" --etcd-servers "$ETCD_URL" \
        --bind-address 127.0.0.1 --secure-port "$KUBE_PORT" \
        --tls-cert-file "$KUBE_PKI/server.crt" --tls-private-key-file "$KUBE_PKI/server.key" \
        --client-ca-file "$KUBE_PKI/ca.crt" \
        --kubeconfig "$KUBE_DIR/core.kubeconfig" \
        --authentication-kubeconfig "$KUBE_DIR/core.kubeconfig" \
        --authorization-kubeconfig "$KUBE_DIR/core.kubeconfig" \
        --authentication-skip-lookup \
        --authentication-token-webhook-cache-ttl 1s \
        --authorization-webhook-cache-authorized-ttl 1s --authorization-webhook-cache-unauthorized-ttl 1s \
        --enable-priority-and-fairness=false \
        --shutdown-watch-termination-grace-period 2s \
        --disable-admission-plugins NamespaceLifecycle,MutatingAdmissionPolicy,MutatingAdmissionWebhook,ValidatingAdmissionPolicy,ValidatingAdmissionWebhook \
        </dev/null >>"$KUBE_LOGS/apiserver.log" 2>&1 9>&- &
}

kube_wait_ready() {
    local deadline=$((SECONDS + 120))
    wait_pidfile "$KUBE_APISERVER_PIDFILE" || die "kube: the API server did not start (log: $KUBE_LOGS/apiserver.log)"
    while [[ $(kube_curl "$KUBE_URL/readyz" 2>/dev/null) != ok ]]; do
        if ! kube_apiserver_alive; then
            tail -n 20 "$KUBE_LOGS/apiserver.log" >&2
            die "kube: the API server exited during startup (log: $KUBE_LOGS/apiserver.log)"
        fi
        ((SECONDS < deadline)) || die "kube: the API server is not ready after 120s (log: $KUBE_LOGS/apiserver.log)"
        sleep 0.3
    done
}

# Server-side apply of every CRD, then wait until each serves its resource. (The list is read first, in this shell:
# a failure to download it must stop `up`, which it would not from inside a process substitution.)
kube_apply_crds() {
    local file resource name code deadline plural rest crds
    crds=$(kube_crd_files)
    while read -r file resource; do
        plural=${resource##*/}
        rest=${resource%/*}
        name=$plural.${rest%/*}
        code=$(kube_curl -o "$KUBE_LOGS/crd-apply.out" -w '%{http_code}' -X PATCH \
            -H 'Content-Type: application/apply-patch+yaml' --data-binary "@$file" \
            "$KUBE_URL/apis/apiextensions.k8s.io/v1/customresourcedefinitions/$name?fieldManager=globalhub-stack&force=true") ||
            true
        [[ $code == 200 || $code == 201 ]] ||
            die "kube: applying the CRD $name failed with HTTP $code: $(head -c 500 "$KUBE_LOGS/crd-apply.out")"
        deadline=$((SECONDS + 60))
        until [[ $(kube_curl -o /dev/null -w '%{http_code}' "$KUBE_URL/apis/$resource?limit=1") == 200 ]]; do
            ((SECONDS < deadline)) || die "kube: the CRD $name is not served after 60s"
            sleep 0.2
        done
    done <<<"$crds"
}

# True when every CRD of stack/kube/crds.txt serves its resource.
kube_crds_served() {
    local module path resource
    while read -r module path resource; do
        [[ -z $module || $module == \#* ]] && continue
        [[ $(kube_curl -o /dev/null -w '%{http_code}' "$KUBE_URL/apis/$resource?limit=1" 2>/dev/null) == 200 ]] ||
            return 1
    done <"$KUBE_SRC/crds.txt"
}

# Wait until the pidfile $1 of a process just launched in the background is written (the launching shell writes it
# before it execs the program).
wait_pidfile() {
    local i
    for ((i = 0; i < 100; i++)); do
        [[ -s $1 ]] && return 0
        sleep 0.05
    done
    return 1
}

kube_up() {
    local start=$EPOCHREALTIME
    mkdir -p "$KUBE_DIR" "$KUBE_LOGS"
    if kube_apiserver_alive && kube_stub_alive; then
        port_open "$KUBE_PORT" && port_open "$KUBE_STUB_PORT" ||
            die "kube: an API server runs from $KUBE_DIR but not on ports $KUBE_PORT/$KUBE_STUB_PORT; run 'bin/stack down kube' first"
        kube_crds_served || kube_apply_crds
        report kube reused "$KUBE_URL (KUBECONFIG=$KUBE_ADMIN_KUBECONFIG)"
        return 0
    fi
    command -v curl >/dev/null 2>&1 || apt_install curl || die "kube: curl is missing"
    kube_build_apiserver
    kube_pki
    kube_config_files
    kube_start_stub
    if ! kube_apiserver_alive; then
        port_open "$KUBE_PORT" && die "kube: port $KUBE_PORT is used by another program; set GH_KUBE_PORT to a free port"
        kube_start_apiserver
    fi
    kube_wait_ready
    kube_apply_crds
    report kube started "$KUBE_URL, apiextensions-apiserver $KUBE_APISERVER_VERSION ($(elapsed_since "$start"))"
}

kube_down() {
    stop_pidfile kube "$KUBE_APISERVER_PIDFILE" apiextensions-apiserver "$KUBE_URL"
    stop_pidfile core-stub "$KUBE_STUB_PIDFILE" core_stub.py "http://127.0.0.1:$KUBE_STUB_PORT" >/dev/null
}

kube_status() {
    if kube_apiserver_alive && kube_stub_alive && port_open "$KUBE_PORT"; then
        report kube running "$KUBE_URL (KUBECONFIG=$KUBE_ADMIN_KUBECONFIG)"
    else
        report kube stopped "$KUBE_URL"
        return 1
    fi
}
