# A real cluster (issue 14): test/bin/cluster's control plane, two root
# ch-cri nodes and, with $CH_CRI_TEST_USER, one node owned by that user.
# Everything is checked through kubectl as a cluster user would, except
# what only a node can tell (leftover keepers, mounts, cgroups; killing a
# node's ch-cri), checked with "cluster exec" in that node's namespaces.
# The tests run in order and some build on earlier ones (the web
# Deployment and its Service).
#
# Scope full: the control plane builds with the kubelet (go-tools); the
# file takes about 4 minutes, most of it waiting on the kubelet's and the
# controllers' clocks (probes, garbage collection once a minute).

load ../common

bats_require_minimum_version 1.5.0

e2e=registry.k8s.io/e2e-test-images
busybox=${e2e}/busybox:1.37.0-1
agnhost=${e2e}/agnhost:2.63.0
nginx=${e2e}/nginx:1.15-4
nginx_old=${e2e}/nginx:1.14-2
ns=ch-cri-cluster

setup_file () {
   [[ ${CH_CRI_TEST_SCOPE:-full} == full ]] || return 0
   [[ $(id -u) -eq 0 ]] || return 0
   [[ -x ${CH_CRI_TEST_CACHE}/bin/control-plane/kubectl ]] || return 0
   export CH_CRI_CLUSTER_DIR=${CH_CRI_TEST_OUT:-/var/tmp}/cluster
   local -a user=()
   [[ -n ${CH_CRI_TEST_USER:-} ]] && user=(--user "$CH_CRI_TEST_USER")
   "${test_dir}/bin/cluster" down
   host_state > "${BATS_FILE_TMPDIR}/host-before"
   local t0=$SECONDS
   "${test_dir}/bin/cluster" up "${user[@]}" > "${BATS_FILE_TMPDIR}/up" \
      2> "${BATS_FILE_TMPDIR}/up.log" || { cat "${BATS_FILE_TMPDIR}/up.log"; return 1; }
   echo "# cluster up in $(( SECONDS - t0 )) s:" \
        "$(grep -o 'nodes Ready in [0-9]* s' "${BATS_FILE_TMPDIR}/up.log")" >&3
   local kc
   kc=$(tail -n 1 "${BATS_FILE_TMPDIR}/up")
   export "${kc?}"
   export KUBECTL=${CH_CRI_TEST_CACHE}/bin/control-plane/kubectl
   "$KUBECTL" create namespace "$ns" > /dev/null
}

# The host's network, packet filter and the sysctls a node touches.
host_state () {
   ip -o link show | awk '{ print $2 }'
   ip -o addr show
   ip route show
   iptables-save | grep -v '^#' | sed 's/\[[0-9]*:[0-9]*\]//'
   sysctl -n net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables \
          net.ipv4.conf.all.route_localnet net.netfilter.nf_conntrack_max \
          vm.overcommit_memory kernel.panic kernel.panic_on_oops
}

teardown_file () {
   [[ -n ${CH_CRI_CLUSTER_DIR:-} ]] || return 0
   "${test_dir}/bin/cluster" down || true
}

setup () {
   scope full
   local ok=no
   [[ -n ${KUBECONFIG:-} && -f ${KUBECONFIG:-} ]] && ok=yes
   prereq_or_skip "a test cluster (root; go-tools control-plane)" "$ok"
}

k () {
   "$KUBECTL" -n "$ns" "$@"
}

cluster () {
   "${test_dir}/bin/cluster" "$@"
}

# Print what the root nodes hold for pods, summed (pods move between
# them): keeper processes and mounts.
leftovers () {
   local n k m tk=0 tm=0
   for n in ch-cri-1 ch-cri-2; do
      k=$(cluster exec "$n" pgrep -fc 'keeper/keeper.py' || true)
      m=$(cluster exec "$n" grep -c '' /proc/self/mountinfo)
      tk=$(( tk + k ))
      tm=$(( tm + m ))
   done
   echo "keepers=${tk} mounts=${tm}"
}

# Print the cgroup directories of the containers of the pods labelled $1
# and of their pods (ch-cri's cgroups: ROOT/CONTROLLER/ch-cri/POD/CTR).
cgroups_of () {
   local id
   for id in $(k get pods -l "$1" -o jsonpath='{range .items[*]}{range .status.containerStatuses[*]}{.containerID}{"\n"}{end}{end}' | sed 's|^ch-cri://||'); do
      find /sys/fs/cgroup/*/ch-cri -mindepth 2 -maxdepth 2 -type d \
           -name "$id" -printf '%p\n%h\n' 2>/dev/null
   done | sort -u
}

# Wait up to $1 seconds for "$@" (after $1) to succeed.
wait_for () {
   local t=$1 end
   shift
   end=$(( SECONDS + t ))
   until "$@"; do
      (( SECONDS < end )) || return 1
      sleep 1
   done
}

# Print the name of a pod with label $1 on node $2.
pod_on () {
   k get pods -l "$1" --field-selector "spec.nodeName=${2},status.phase=Running" \
     -o jsonpath='{.items[0].metadata.name}'
}

restarts () {
   k get pod "$1" -o jsonpath="{.status.containerStatuses[?(@.name==\"$2\")].restartCount}"
}

restarted () {
   [[ $(restarts "$1" "$2") -ge 1 ]]
}

endpoint_ready () {
   k get endpointslices -l "kubernetes.io/service-name=$1" \
     -o jsonpath='{.items[*].endpoints[*].conditions.ready}' | grep -q true
}

file_is () {
   [[ $(k exec "$1" -- cat "$2" 2>/dev/null) == "$3" ]]
}

waiting_on_pull () {
   k get pod "$1" -o jsonpath='{.status.containerStatuses[0].state.waiting.reason}' \
     | grep -Eq 'ErrImagePull|ImagePullBackOff'
}

logs_have () {
   k logs "$1" -c "$2" 2>/dev/null | grep -q "$3"
}

leftovers_as_before () {
   [[ $(leftovers) == $(cat "${BATS_FILE_TMPDIR}/before") ]]
}

cgroups_gone () {
   local d
   while read -r d; do
      [[ -z $d || ! -e $d ]] || return 1
   done < "$1"
}

pid_changed () {
   [[ $(cluster pid "$1" ch-cri) != "$2" ]]
}

# busybox wget, bounded (its own -T crashes Debian's 1.35).
wget_in () {
   local pod=$1 url=$2
   k exec "$pod" -- timeout 10 wget -qO- "$url"
}

@test "cluster: nodes Ready, each with its own pod CIDR, DNS running" {
   run "$KUBECTL" get nodes -o \
       'jsonpath={range .items[*]}{.metadata.name} {.spec.podCIDR} {.status.nodeInfo.containerRuntimeVersion}{"\n"}{end}'
   echo "$output"
   [[ $status -eq 0 ]]
   [[ $(grep -c ' 10\.235\.[0-9]*\.0/24 ch-cri://' <<< "$output") -ge 2 ]]
   [[ $(awk '$1 ~ /^ch-cri-[0-9]$/ { print $2 }' <<< "$output" \
        | sort -u | wc -l) -eq 2 ]]
   "$KUBECTL" -n kube-system get deploy coredns \
      -o jsonpath='{.status.readyReplicas}' | grep -qx 2
}

@test "cluster: a Deployment of 4 spreads over both nodes; rolling update" {
   leftovers > "${BATS_FILE_TMPDIR}/before"
   k apply -f - <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 4
  selector: {matchLabels: {app: web}}
  strategy: {rollingUpdate: {maxUnavailable: 1, maxSurge: 1}}
  template:
    metadata: {labels: {app: web}}
    spec:
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
            - matchExpressions:
              - {key: ch-cri.test/rootless, operator: DoesNotExist}
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, nodeTaintsPolicy: Honor, labelSelector: {matchLabels: {app: web}}}
      containers:
      - name: web
        image: ${nginx_old}
        ports: [{containerPort: 80}]
        readinessProbe: {httpGet: {path: /, port: 80}, periodSeconds: 2}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 80}]
EOF
   k rollout status deploy/web --timeout 120s
   run k get pods -l app=web -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}'
   echo "$output"
   [[ $(sort <<< "$output" | uniq -c | awk '{ print $1 }' | tr '\n' ' ') == "2 2 " ]]
   k set image deploy/web "web=${nginx}"
   k rollout status deploy/web --timeout 120s
   run k get pods -l app=web -o jsonpath='{range .items[*]}{.spec.containers[0].image} {.status.phase}{"\n"}{end}'
   echo "$output"
   [[ $(grep -c "^${nginx} Running$" <<< "$output") -eq 4 ]]
}

@test "cluster: a ClusterIP Service by name from a pod on the other node" {
   k run client --image "$busybox" --restart Never \
     --overrides '{"spec": {"nodeName": "ch-cri-2"}}' -- sleep 3600
   k wait --for condition=Ready pod/client --timeout 60s
   # Only the pods of node 1 behind the Service: traffic must cross.
   k apply -f - <<EOF
apiVersion: v1
kind: Service
metadata: {name: web-one}
spec:
  selector: {app: web-one}
  ports: [{port: 8080, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-one, labels: {app: web-one}}
spec:
  nodeName: ch-cri-1
  containers:
  - {name: web, image: "${agnhost}", args: [netexec, --http-port=8080]}
EOF
   k wait --for condition=Ready pod/web-one --timeout 60s
   run wget_in client "http://web-one.${ns}.svc.cluster.local:8080/hostname"
   echo "$output"
   [[ $status -eq 0 && $output == web-one ]]
   # The server sees the client's own pod IP (routed, not masqueraded).
   local cip
   cip=$(k get pod client -o jsonpath='{.status.podIP}')
   run wget_in client "http://web-one:8080/clientip"
   echo "$output (client ${cip})"
   [[ $output == "${cip}:"* ]]
   run wget_in client "http://web.${ns}/"
   [[ $status -eq 0 && $output == *nginx* ]]
}

@test "cluster: a NodePort reached from the cluster's host network" {
   k expose deploy web --name web-np --type NodePort --port 80
   local port ip
   port=$(k get svc web-np -o jsonpath='{.spec.ports[0].nodePort}')
   for ip in 10.234.0.11 10.234.0.12; do
      run wait_for 20 cluster exec hub curl -fsS --max-time 3 -o /dev/null \
          "http://${ip}:${port}/"
      [[ $status -eq 0 ]]
   done
}

@test "cluster: readiness gates endpoints; TCP and gRPC liveness restart" {
   k apply -f - <<EOF
apiVersion: v1
kind: Service
metadata: {name: gate}
spec:
  selector: {app: gate}
  ports: [{port: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: gate, labels: {app: gate}}
spec:
  containers:
  - name: web
    image: ${busybox}
    command: [sh, -c, "mkdir -p /www && exec httpd -f -p 8080 -h /www"]
    readinessProbe:
      httpGet: {path: /ready, port: 8080}
      periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata: {name: live}
spec:
  containers:
  - name: tcp
    image: ${busybox}
    command: [sleep, "3600"]
    livenessProbe: {tcpSocket: {port: 9999}, periodSeconds: 1, failureThreshold: 2}
  - name: grpc
    image: ${agnhost}
    args: [grpc-health-checking, --port=5000, --http-port=8081, --delay-unhealthy-sec=30]
    livenessProbe: {grpc: {port: 5000}, periodSeconds: 1, failureThreshold: 2}
EOF
   k wait --for jsonpath='{.status.phase}'=Running pod/gate --timeout 60s
   sleep 3
   run k get endpointslices -l kubernetes.io/service-name=gate \
       -o jsonpath='{.items[*].endpoints[*].conditions.ready}'
   [[ $output != *true* ]]
   # The kubelet's HTTP probe, on the pod IP, gets 404 until the page is
   # there.
   k exec gate -- touch /www/ready
   k wait --for condition=Ready pod/gate --timeout 30s
   run wait_for 20 endpoint_ready gate
   [[ $status -eq 0 ]]
   # TCP: nothing listens, restarts. gRPC: serving for 30 s, then not.
   [[ $(restarts live grpc) -eq 0 ]]
   run wait_for 60 restarted live tcp
   [[ $status -eq 0 ]]
   run wait_for 90 restarted live grpc
   [[ $status -eq 0 ]]
}

@test "cluster: ConfigMap and Secret volumes, live update, subPath, modes, env" {
   k create configmap cfg --from-literal=greeting=hello --from-literal=color=blue
   k create secret generic sec --from-literal=password=s3cret
   k apply -f - <<EOF
apiVersion: v1
kind: Pod
metadata: {name: vols, labels: {app: vols, tier: backend}, annotations: {note: downward}}
spec:
  containers:
  - name: c
    image: ${busybox}
    command: [sleep, "3600"]
    envFrom: [{configMapRef: {name: cfg}}, {secretRef: {name: sec}}]
    volumeMounts:
    - {name: cfg, mountPath: /etc/cfg}
    - {name: sec, mountPath: /etc/sec}
    - {name: cfg, mountPath: /etc/greeting, subPath: greeting}
    - {name: info, mountPath: /etc/info}
  volumes:
  - {name: cfg, configMap: {name: cfg, defaultMode: 0640}}
  - {name: sec, secret: {secretName: sec, defaultMode: 0400}}
  - name: info
    downwardAPI:
      items:
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
      - {path: name, fieldRef: {fieldPath: metadata.name}}
EOF
   k wait --for condition=Ready pod/vols --timeout 60s
   [[ $(k exec vols -- cat /etc/cfg/greeting) == hello ]]
   [[ $(k exec vols -- cat /etc/sec/password) == s3cret ]]
   [[ $(k exec vols -- cat /etc/greeting) == hello ]]
   [[ $(k exec vols -- stat -L -c %a /etc/cfg/color) == 640 ]]
   [[ $(k exec vols -- stat -L -c %a /etc/sec/password) == 400 ]]
   [[ $(k exec vols -- sh -c 'echo "$greeting $password"') == 'hello s3cret' ]]
   [[ $(k exec vols -- cat /etc/info/name) == vols ]]
   k exec vols -- cat /etc/info/labels | grep -qx 'tier="backend"'
   # A live update: the kubelet swaps ..data; a subPath keeps the old.
   k create configmap cfg --from-literal=greeting=bonjour \
     --from-literal=color=blue --dry-run=client -o yaml | k replace -f -
   run wait_for 90 file_is vols /etc/cfg/greeting bonjour
   [[ $status -eq 0 ]]
   [[ $(k exec vols -- cat /etc/greeting) == hello ]]
}

@test "cluster: the projected service-account token is accepted" {
   local tok
   tok=$(k exec vols -- cat /var/run/secrets/kubernetes.io/serviceaccount/token)
   [[ -n $tok ]]
   local server ca
   server=$("$KUBECTL" config view -o jsonpath='{.clusters[0].cluster.server}')
   ca=$("$KUBECTL" config view -o jsonpath='{.clusters[0].cluster.certificate-authority}')
   run "$KUBECTL" --token "$tok" --kubeconfig /dev/null --server "$server" \
       --certificate-authority "$ca" auth whoami -o jsonpath='{.status.userInfo.username}'
   echo "$output"
   [[ $output == "system:serviceaccount:${ns}:default" ]]
   # And the API server's Service answers a pod (TCP through kube-proxy).
   k exec web-one -- /agnhost connect --timeout 5s kubernetes.default.svc:443
}

@test "cluster: Jobs: exit 0, exit 3 (backoff limit), parallelism 3" {
   k apply -f - <<EOF
apiVersion: batch/v1
kind: Job
metadata: {name: ok}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: "${busybox}", command: [sh, -c, "echo done"]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: three}
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: "${busybox}", command: [sh, -c, "exit 3"]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: par}
spec:
  parallelism: 3
  completions: 3
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: "${busybox}", command: [sh, -c, "sleep 2; hostname"]}]
EOF
   k wait --for condition=Complete job/ok --timeout 90s
   k wait --for condition=Complete job/par --timeout 90s
   k wait --for condition=Failed job/three --timeout 120s
   [[ $(k logs job/ok) == done ]]
   run k get pods -l job-name=three -o json
   [[ $(jq '[.items[].status.containerStatuses[0].state.terminated.exitCode] | unique' <<< "$output" | tr -d ' \n') == "[3]" ]]
   [[ $(k get pods -l job-name=par --no-headers | wc -l) -eq 3 ]]
}

@test "cluster: kubectl logs -f, --previous, --timestamps" {
   k apply -f - <<EOF
apiVersion: v1
kind: Pod
metadata: {name: talker}
spec:
  containers:
  - name: c
    image: ${busybox}
    command: [sh, -c, "echo start-\$(cat /proc/sys/kernel/random/uuid); i=0; while [ \$i -lt 3 ]; do echo line-\$i; i=\$((i+1)); sleep 1; done; exit 1"]
EOF
   run wait_for 90 restarted talker c
   [[ $status -eq 0 ]]
   run k logs --previous talker
   echo "$output"
   [[ $output == start-*$'\n'line-0$'\n'line-1$'\n'line-2 ]]
   run k logs --timestamps --previous talker
   [[ ${lines[1]} =~ ^20[0-9-]+T[0-9:.]+Z\ line-0$ ]]
   k wait --for jsonpath='{.status.phase}'=Running pod/talker --timeout 60s
   run timeout 30 "$KUBECTL" -n "$ns" logs -f talker
   echo "$output"
   [[ $output == *line-2* ]]
}

@test "cluster: exec -it through a pty, attach, port-forward, cp both ways" {
   k apply -f - <<EOF
apiVersion: v1
kind: Pod
metadata: {name: streams}
spec:
  nodeName: ch-cri-2
  containers:
  - name: web
    image: ${agnhost}
    args: [netexec, --http-port=8080]
  - name: reader
    image: ${busybox}
    command: [sh, -c, "while read l; do echo got-\$l; done"]
    stdin: true
EOF
   k wait --for condition=Ready pod/streams --timeout 60s
   run script -qec "'$KUBECTL' -n '$ns' exec -it streams -c reader -- tty" /dev/null
   echo "$output"
   [[ $output == */dev/pts/* ]]
   run bash -c "echo hi | timeout 15 '$KUBECTL' -n '$ns' attach -i streams -c reader"
   run k logs streams -c reader
   [[ $output == *got-hi* ]]
   local port=18095 pf
   "$KUBECTL" -n "$ns" port-forward pod/streams "${port}:8080" \
      > "${BATS_FILE_TMPDIR}/pf.log" 2>&1 &
   pf=$!
   run wait_for 20 curl -fs --max-time 3 "http://127.0.0.1:${port}/hostname"
   kill "$pf"
   echo "$output"
   [[ $status -eq 0 && $output == *streams ]]
   echo in-from-host > "${BATS_FILE_TMPDIR}/cp-in"
   k cp "${BATS_FILE_TMPDIR}/cp-in" streams:/tmp/cp-in -c reader
   [[ $(k exec streams -c reader -- cat /tmp/cp-in) == in-from-host ]]
   k exec streams -c reader -- sh -c 'echo out-from-pod > /tmp/cp-out'
   k cp streams:/tmp/cp-out "${BATS_FILE_TMPDIR}/cp-out" -c reader
   [[ $(cat "${BATS_FILE_TMPDIR}/cp-out") == out-from-pod ]]
}

@test "cluster: kubectl debug: an ephemeral container in the app's PID namespace" {
   k debug streams --image "$busybox" --target web --container dbg \
     -- sh -c 'ps -o pid,args; sleep 3600'
   run wait_for 60 logs_have streams dbg 'agnhost netexec'
   k logs streams -c dbg
   [[ $status -eq 0 ]]
}

@test "cluster: imagePullSecrets: the right secret pulls, a wrong one says why" {
   local reg=127.0.0.1:5444 pw
   pw=$(cat "${CH_CRI_CLUSTER_DIR}/registry-password")
   k create secret docker-registry good --docker-server "$reg" \
     --docker-username ch-cri-test --docker-password "$pw"
   k create secret docker-registry bad --docker-server "$reg" \
     --docker-username ch-cri-test --docker-password wrong
   local img=${reg}/e2e-test-images/busybox:1.37.0-1
   k apply -f - <<EOF
apiVersion: v1
kind: Pod
metadata: {name: private-good}
spec:
  imagePullSecrets: [{name: good}]
  containers: [{name: c, image: "${img}", command: [sleep, "3600"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: private-bad}
spec:
  imagePullSecrets: [{name: bad}]
  containers: [{name: c, image: "${img}", command: [sleep, "3600"]}]
EOF
   k wait --for condition=Ready pod/private-good --timeout 60s
   run wait_for 60 waiting_on_pull private-bad
   [[ $status -eq 0 ]]
   run k get events --field-selector involvedObject.name=private-bad \
       -o jsonpath='{range .items[*]}{.message}{"\n"}{end}'
   echo "$output"
   grep -i 'failed to pull' <<< "$output" | grep -Eiq 'unauthorized|authentication|401'
}

@test "cluster, user's node: a Job, ConfigMap and Secret volumes, logs, exec" {
   [[ -n ${CH_CRI_TEST_USER:-} ]] || skip "no user node (\$CH_CRI_TEST_USER)"
   k create configmap ucfg --from-literal=greeting=hello
   k create secret generic usec --from-literal=password=s3cret
   k apply -f - <<EOF
apiVersion: batch/v1
kind: Job
metadata: {name: ujob}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      nodeSelector: {ch-cri.test/rootless: "true"}
      tolerations: [{key: ch-cri.test/rootless, operator: Exists}]
      containers:
      - name: c
        image: ${busybox}
        command: [sh, -c, "cat /etc/cfg/greeting; echo; cat /etc/sec/password; echo; id -u"]
        volumeMounts: [{name: cfg, mountPath: /etc/cfg}, {name: sec, mountPath: /etc/sec}]
      volumes:
      - {name: cfg, configMap: {name: ucfg}}
      - {name: sec, secret: {secretName: usec}}
---
apiVersion: v1
kind: Pod
metadata: {name: upod}
spec:
  nodeSelector: {ch-cri.test/rootless: "true"}
  tolerations: [{key: ch-cri.test/rootless, operator: Exists}]
  containers:
  - {name: c, image: "${busybox}", command: [sh, -c, "echo up; sleep 3600"]}
EOF
   k wait --for condition=Complete job/ujob --timeout 90s
   run k logs job/ujob
   echo "$output"
   [[ $output == $'hello\ns3cret\n0' ]]
   k wait --for condition=Ready pod/upod --timeout 60s
   [[ $(k get pod upod -o jsonpath='{.spec.nodeName}') == ch-cri-user ]]
   [[ $(k logs upod) == up ]]
   [[ $(k exec upod -- sh -c 'echo $((6 * 7))') == 42 ]]
   run script -qec "'$KUBECTL' -n '$ns' exec -it upod -- tty" /dev/null
   [[ $output == */dev/pts/* ]]
}

@test "cluster, user's node: everything runs as the user; pods have no IP" {
   [[ -n ${CH_CRI_TEST_USER:-} ]] || skip "no user node (\$CH_CRI_TEST_USER)"
   local uid
   uid=$(id -u "$CH_CRI_TEST_USER")
   # ch-cri, the kubelet and the container: that user's, on the host.
   run ps -o uid=,args= -u "$uid"
   echo "$output"
   grep -q 'bin/ch-cri --config .*/ch-cri-user/' <<< "$output"
   grep -q 'kubelet --config .*/ch-cri-user/' <<< "$output"
   grep -q 'sleep 3600' <<< "$output"
   [[ $(ps -o args= -u 0 | grep -c '[c]h-cri-user/ch-cri.toml') -eq 0 ]]
   [[ -z $(k get pod upod -o jsonpath='{.status.podIP}') ]]
}

@test "cluster: kill -9 of a node's ch-cri under load: nothing restarts" {
   local before after pid
   before=$(k get pods -o jsonpath='{range .items[*]}{.metadata.name}={range .status.containerStatuses[*]}{.restartCount},{end} {end}')
   pid=$(cluster pid ch-cri-1 ch-cri)
   # Load: exec and logs on that node while it dies.
   local p
   p=$(pod_on app=web ch-cri-1)
   ( for i in 1 2 3 4 5 6 7 8 9 10; do
        k exec "$p" -- true > /dev/null 2>&1; k logs "$p" > /dev/null 2>&1
     done ) &
   local load=$!
   sleep 1
   cluster exec ch-cri-1 kill -KILL "$pid"
   run wait_for 30 pid_changed ch-cri-1 "$pid"
   [[ $status -eq 0 ]]
   wait "$load" || true
   # For 20 s: the node stays Ready, no container restarts.
   local i
   for (( i = 0; i < 10; i++ )); do
      [[ $("$KUBECTL" get node ch-cri-1 -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]
      sleep 2
   done
   k exec "$p" -- true
   after=$(k get pods -o jsonpath='{range .items[*]}{.metadata.name}={range .status.containerStatuses[*]}{.restartCount},{end} {end}')
   # talker and live restart on their own; compare the others.
   diff <(tr ' ' '\n' <<< "$before" | grep -Ev '^(talker|live)=') \
        <(tr ' ' '\n' <<< "$after" | grep -Ev '^(talker|live)=')
}

@test "cluster: drain a node: its pods go to the other one" {
   "$KUBECTL" drain ch-cri-2 --ignore-daemonsets --delete-emptydir-data \
      --force --timeout 120s
   k rollout status deploy/web --timeout 120s
   run k get pods -l app=web -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}'
   echo "$output"
   [[ $(sort -u <<< "$output") == ch-cri-1 ]]
   "$KUBECTL" uncordon ch-cri-2
}

@test "cluster: the host's network, iptables and sysctls are untouched" {
   host_state > "${BATS_FILE_TMPDIR}/host-now"
   diff "${BATS_FILE_TMPDIR}/host-before" "${BATS_FILE_TMPDIR}/host-now"
}

@test "cluster: scale to 0 leaves no keeper, mount or cgroup behind" {
   # Everything this file made, then the Deployment scaled to 0.
   cgroups_of app=web > "${BATS_FILE_TMPDIR}/web-cgroups"
   echo "web's cgroups: $(wc -l < "${BATS_FILE_TMPDIR}/web-cgroups")"
   [[ $(wc -l < "${BATS_FILE_TMPDIR}/web-cgroups") -ge 8 ]]
   k delete pod --all --wait=false > /dev/null
   k delete job --all > /dev/null
   k scale deploy web --replicas 0
   # The kubelet removes dead sandboxes once a minute.
   run wait_for 150 leftovers_as_before
   echo "now: $(leftovers) (before: $(cat "${BATS_FILE_TMPDIR}/before"))"
   [[ $status -eq 0 ]]
   run wait_for 30 cgroups_gone "${BATS_FILE_TMPDIR}/web-cgroups"
   [[ $status -eq 0 ]]
}
