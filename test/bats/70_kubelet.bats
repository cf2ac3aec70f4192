# End to end with a real kubelet (issue 6): a standalone kubelet (no API
# server; static pods) on a ch-cri of this file's own, which it may kill.
# Checked through the kubelet's read-only API (GET /pods), its log-reading
# endpoint and the files it writes. The tests run in order and build on
# each other: pods made early keep running for the steady-state and
# restart tests.
#
# ch-cri runs as root, or as $CH_CRI_TEST_SERVER_USER if set; the kubelet
# runs as root, or, if $CH_CRI_TEST_KUBELET_USER is set, as that user,
# rootless (see test/bin/kubelet-run for both, and how the host is
# spared). A kubelet and a ch-cri of the same user run every scenario: an
# HPC user's own node agent and runtime.
#
# Scope full: the kubelet takes 5 minutes and 1.5 GB to build (test/run
# builds it in full scope only) and this file takes about 3 minutes, most
# of it waiting on the kubelet's own clocks (crash-loop back-off, probes,
# garbage collection once a minute).

load ../common

bats_require_minimum_version 1.5.0

node=kubelet-test            # kubelet-run's node name: pods are NAME-$node
ns=ch-cri-kt
busybox=registry.k8s.io/e2e-test-images/busybox:1.29-2
nginx=registry.k8s.io/e2e-test-images/nginx:1.14-2
ro_port=${CH_CRI_KUBELET_PORT:-10255}
export CH_CRI_KUBELET_PORT=$ro_port

setup_file () {
   # Without these, setup skips (or fails, in CI) every test.
   [[ ${CH_CRI_TEST_SCOPE:-full} == full ]] || return 0
   [[ -n ${CH_CRI_TEST_CONFIG:-} ]] || return 0
   [[ -x ${CH_CRI_TEST_CACHE}/bin/kubelet ]] || return 0
   [[ $(id -u) -eq 0 ]] || return 0
   kd=$(mktemp -d "${CH_CRI_TEST_OUT:-/tmp}/kubelet.XXXXXX")
   chmod 755 "$kd"
   export kd
   mkdir -p "${kd}/hostpath"
   echo from-host > "${kd}/hostpath/in.txt"
   if [[ -n ${CH_CRI_TEST_SERVER_USER:-} ]]; then
      chown -R "$CH_CRI_TEST_SERVER_USER" "${kd}/hostpath"
   fi
   server_start "${kd}/server" "${CH_CRI_TEST_SERVER_USER:-}"
   local -a as=()
   if [[ -n ${CH_CRI_TEST_KUBELET_USER:-} ]]; then
      mkdir "${kd}/kubelet"
      chown "$CH_CRI_TEST_KUBELET_USER" "${kd}/kubelet"
      as=(setpriv --reuid="$CH_CRI_TEST_KUBELET_USER"
          --regid="$CH_CRI_TEST_KUBELET_USER" --init-groups --reset-env
          env "CH_CRI_KUBELET_PORT=${ro_port}")
   fi
   local i
   for i in 1 2; do
      "${as[@]}" env "CH_CRI_KUBELET=${CH_CRI_TEST_CACHE}/bin/kubelet" \
         "${test_dir}/bin/kubelet-run" start "${kd}/kubelet" \
         "${kd}/server/ch-cri.sock" && return 0
      # Once (of about a dozen CI runs), something outside the tests sent
      # this fresh ch-cri SIGTERM while the kubelet started (its log says
      # so), and the kubelet found no runtime. Say it, and try once more.
      [[ $i -eq 1 ]] && ! kill -0 "$(cat "${kd}/server/pid")" 2>/dev/null \
         || return 1
      echo "# ch-cri stopped before the kubelet came up:" \
           "$(grep -a 'got SIG' "${kd}/server/log" | tail -n 1);" \
           "starting both again" >&3
      server_start "${kd}/server" "${CH_CRI_TEST_SERVER_USER:-}"
   done
}

teardown_file () {
   [[ -n ${kd:-} ]] || return 0
   rm -f "${kd}"/kubelet/manifests/*.yaml
   "${test_dir}/bin/kubelet-run" stop "${kd}/kubelet" || true
   # Whatever the kubelet left (a failed test): stop and remove it.
   local p
   for p in $(crictl pods -q 2>/dev/null); do
      crictl stopp "$p" > /dev/null 2>&1 || true
      crictl rmp "$p" > /dev/null 2>&1 || true
   done
   server_stop "${kd}/server" TERM || true
}

setup () {
   scope full
   local ok=no
   [[ -n ${CH_CRI_TEST_CONFIG:-} ]] && ok=yes
   prereq_or_skip 'test registry config ($CH_CRI_TEST_CONFIG)' "$ok"
   ok=no
   [[ -x ${CH_CRI_TEST_CACHE}/bin/kubelet ]] && ok=yes
   prereq_or_skip "kubelet (test/bin/go-tools kubelet)" "$ok"
   ok=no
   [[ $(id -u) -eq 0 ]] && ok=yes
   prereq_or_skip "root (the kubelet runs as root)" "$ok"
   [[ -n ${kd:-} ]] || return 1
}

crictl () {
   crictl_ "${kd}/server/ch-cri.sock" "$@"
}

# Scenario tests need ch-cri and the kubelet to be the same user: a root
# kubelet makes each pod's directory (etc-hosts, emptyDir volumes) mode
# 0750 and each container's log directory mode 0755, both owned by root,
# before it calls the runtime, so an unprivileged ch-cri can neither read
# the one nor write the other (see doc/ch-cri.rst, "Using with the
# kubelet"). The test "unprivileged ch-cri under a root kubelet" checks
# that this fails clearly.
same_user_or_skip () {
   if [[ ${CH_CRI_TEST_SERVER_USER:-} != "${CH_CRI_TEST_KUBELET_USER:-}" ]]; then
      skip "root kubelet + unprivileged ch-cri: pod and log directories are root's (doc/ch-cri.rst)"
   fi
}

# Write static pod manifest $1 from standard input, atomically (the
# kubelet reads a half-written file and logs an error; it skips dot files).
manifest () {
   cat > "${kd}/kubelet/manifests/.${1}.tmp"
   mv "${kd}/kubelet/manifests/.${1}.tmp" "${kd}/kubelet/manifests/${1}.yaml"
}

pods_json () {
   curl -fsS --max-time 5 "http://127.0.0.1:${ro_port}/pods"
}

# The kubelet's v1.Pod of static pod $1; fails when there is none (jq -e
# succeeds on empty input, so every helper here checks for output).
pod_get () {
   local all pod
   all=$(pods_json) || return 1
   pod=$(jq -c --arg n "${1}-${node}" \
            '.items[] | select(.metadata.name == $n)' <<< "$all") || return 1
   [[ -n $pod ]] && printf '%s\n' "$pod"
}

# The v1.ContainerStatus of container $2 of pod $1 (init containers too);
# fails when the kubelet reports none yet.
ctr_get () {
   local pod ctr
   pod=$(pod_get "$1") || return 1
   ctr=$(jq -c --arg c "$2" \
            '[.status.containerStatuses[]?, .status.initContainerStatuses[]?]
             | map(select(.name == $c)) | .[0] // empty' <<< "$pod") || return 1
   [[ -n $ctr ]] && printf '%s\n' "$ctr"
}

# Succeed if jq filter $3 is true of container $2 of pod $1.
ctr_p () {
   local ctr
   ctr=$(ctr_get "$1" "$2") || return 1
   jq -e "$3" <<< "$ctr" > /dev/null
}

# The pod's log directory, as the kubelet names it.
pod_logs () {
   local uid
   uid=$(pod_get "$1" | jq -r .metadata.uid)
   echo "${kd}/kubelet/logs/${ns}_${1}-${node}_${uid}"
}

# Run command $3... until it succeeds, at most $1 seconds; else say what
# did not happen ($2) and fail.
wait_for () {
   local limit=$1 what=$2 t0=$SECONDS
   shift 2
   while (( SECONDS - t0 < limit )); do
      "$@" && return 0
      sleep 0.5
   done
   echo "timed out after ${limit} s: ${what}" 1>&2
   return 1
}

# The authenticated kubelet port serves container logs (anonymous,
# AlwaysAllow in kubelet-run's config; self-signed certificate).
kubelet_logs () {  # pod container [query]
   curl -fsSk --max-time 5 \
        "https://127.0.0.1:$(( ro_port - 5 ))/containerLogs/${ns}/${1}-${node}/${2}?${3:-}"
}

# Succeed if jq filter $2 is true of pod $1.
pod_p () {
   local pod
   pod=$(pod_get "$1") || return 1
   jq -e "$2" <<< "$pod" > /dev/null
}

# Succeed if every container of pod $1 is ready.
pod_ready_p () {
   pod_p "$1" '[.status.containerStatuses[]?.ready]
               | length > 0 and all'
}

# Succeed if pod s7's host port serves nginx's page.
host_port_p () {
   curl -fsS --max-time 2 http://127.0.0.1:12097/ | grep -q nginx
}

# Succeed if the kubelet has no pod.
kubelet_empty_p () {
   [[ $(pods_json | jq '.items | length') -eq 0 ]]
}

# Succeed if ch-cri has no pod (in state $1, if given).
server_empty_p () {
   [[ -z $(crictl pods -q ${1:+--state "$1"}) ]]
}

# Succeed if ch-cri's pod $1 is in state $2.
sandbox_state_p () {
   [[ $(crictl inspectp "$1" | jq -r .status.state) == "$2" ]]
}

pid_gone_p () {
   ! kill -0 "$1" 2>/dev/null
}

# IDs and restart counts of the containers of pods $@, sorted.
ctr_ids () {
   pods_json | jq -c --arg node "$node" --args '
      [.items[] | select(.metadata.name as $n
                         | $ARGS.positional | map(. + "-" + $node)
                         | index($n))
       | .metadata.name as $p
       | .status.containerStatuses[]
       | {pod: $p, name, containerID, restartCount}] | sort' "$@"
}

@test 'kubelet: one container runs; CRI log in the pod log directory' {
   same_user_or_skip
   manifest s1 <<EOF
apiVersion: v1
kind: Pod
metadata: {name: s1, namespace: ${ns}}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 5
  containers:
  - name: c
    image: ${busybox}
    command: [sh, -c, 'echo hello from s1; while :; do echo tick; sleep 1; done']
EOF
   # Phase and container status in one answer: once, a GET just after the
   # one that first showed the container running did not say Running.
   wait_for 60 's1 running' pod_p s1 '.status.phase == "Running"
      and (.status.containerStatuses[0] | .state.running and .ready)'
   # The kubelet's status can lag a GET behind (rootless, once).
   wait_for 10 's1 container ID' \
            ctr_p s1 c '.restartCount == 0 and (.containerID // "" | startswith("ch-cri://"))'
   log=$(pod_logs s1)/c/0.log
   wait_for 10 's1 log' grep -q 'tick' "$log"
   grep -E '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}\.[0-9]{9}Z stdout F hello from s1$' "$log"
   # The kubelet reads the log back (kubectl logs goes this way).
   run kubelet_logs s1 c
   [[ $status -eq 0 && ${lines[0]} == 'hello from s1' ]]
}

@test 'kubelet: exec through the kubelet (WebSocket, as kubectl exec)' {
   same_user_or_skip
   wait_for 60 's1 running' pod_p s1 '.status.phase == "Running"'
   run "${PYTHON:-python3}" "${test_dir}/bin/kubelet-exec" \
       "127.0.0.1:$(( ro_port - 5 ))" "$ns" "s1-${node}" c \
       sh -c 'echo out; echo err >&2; exit 3'
   echo "$output"
   [[ $status -eq 3 ]]
   [[ $output == *out* && $output == *err* ]]
   run "${PYTHON:-python3}" "${test_dir}/bin/kubelet-exec" \
       "127.0.0.1:$(( ro_port - 5 ))" "$ns" "s1-${node}" c hostname
   [[ $status -eq 0 && -n $output ]]
}

@test 'kubelet: two containers share an emptyDir volume' {
   same_user_or_skip
   manifest s2 <<EOF
apiVersion: v1
kind: Pod
metadata: {name: s2, namespace: ${ns}}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 5
  volumes:
  - {name: shared, emptyDir: {}}
  containers:
  - name: writer
    image: ${busybox}
    command: [sh, -c, 'i=0; while :; do i=\$((i+1)); echo "line \$i" >> /data/f; sleep 1; done']
    volumeMounts: [{name: shared, mountPath: /data}]
  - name: reader
    image: docker.io/library/busybox:latest
    command: [sh, -c, 'while :; do tail -n 1 /data/f 2>/dev/null; sleep 1; done']
    volumeMounts: [{name: shared, mountPath: /data}]
EOF
   wait_for 60 's2 running' ctr_p s2 reader '.state.running'
   wait_for 15 's2 writer running' ctr_p s2 writer '.state.running'
   log=$(pod_logs s2)/reader/0.log
   wait_for 15 'reader sees the writer' grep -q 'stdout F line 3$' "$log"
   # The volume is the kubelet's directory on the host.
   uid=$(pod_get s2 | jq -r .metadata.uid)
   grep -qx 'line 3' \
        "${kd}/kubelet/root/pods/${uid}/volumes/kubernetes.io~empty-dir/shared/f"
}

@test 'kubelet: a crashing container restarts with back-off; previous log kept' {
   same_user_or_skip
   manifest s3 <<EOF
apiVersion: v1
kind: Pod
metadata: {name: s3, namespace: ${ns}}
spec:
  hostNetwork: true
  restartPolicy: Always
  terminationGracePeriodSeconds: 5
  containers:
  - name: crash
    image: ${busybox}
    command: [sh, -c, 'echo "run at \$(date +%s)"; sleep 2; exit 3']
EOF
   # Runs: 2 s, back-off 10 s, 2 s, back-off 20 s, ...
   wait_for 90 's3 restarted twice' ctr_p s3 crash '.restartCount >= 2'
   ctr_p s3 crash '.lastState.terminated.exitCode == 3
                   and .lastState.terminated.reason == "Error"'
   # The kubelet doubled its back-off (its log is flushed every 5 s).
   wait_for 10 'back-off 20s in the kubelet log' \
            grep -q 'back-off 20s restarting failed container=crash' \
            "${kd}/kubelet/kubelet.log"
   wait_for 30 's3 in CrashLoopBackOff' \
            ctr_p s3 crash '.state.waiting.reason == "CrashLoopBackOff"'
   # The previous run's log is still there, for the kubelet and on disk.
   run kubelet_logs s3 crash previous=true
   [[ $status -eq 0 && $output == 'run at '* ]]
   prev=$(ctr_get s3 crash | jq -r '.lastState.terminated.containerID')
   path=$(crictl inspect "${prev#ch-cri://}" | jq -r .status.logPath)
   [[ $path == "$(pod_logs s3)/crash/"*.log ]]
   grep -q 'stdout F run at ' "$path"
}

@test 'kubelet: exec readiness and liveness probes' {
   same_user_or_skip
   manifest s4 <<EOF
apiVersion: v1
kind: Pod
metadata: {name: s4, namespace: ${ns}}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 5
  containers:
  - name: ready
    image: ${busybox}
    command: [sh, -c, 'sleep 8; touch /tmp/ready; while :; do sleep 1; done']
    readinessProbe:
      exec: {command: [test, -f, /tmp/ready]}
      periodSeconds: 2
  - name: live
    image: ${busybox}
    command: [sh, -c, 'touch /tmp/healthy; sleep 6; rm /tmp/healthy; while :; do sleep 1; done']
    livenessProbe:
      exec: {command: [cat, /tmp/healthy]}
      initialDelaySeconds: 2
      periodSeconds: 2
      failureThreshold: 2
EOF
   wait_for 60 's4 ready container running' ctr_p s4 ready '.state.running'
   # Not ready while its probe fails (8 s), ready once it passes.
   ctr_p s4 ready '.ready == false'
   wait_for 30 's4 ready' ctr_p s4 ready '.ready'
   ctr_p s4 ready '.restartCount == 0'
   # The liveness probe fails from 6 s on: the kubelet kills and restarts.
   wait_for 60 's4 live restarted' ctr_p s4 live '.restartCount >= 1'
   ctr_p s4 live '.lastState.terminated.exitCode == 143
                  or .lastState.terminated.exitCode == 137'
   wait_for 10 'liveness failure in the kubelet log' \
            grep -q 'Container live failed liveness probe, will be restarted' \
            "${kd}/kubelet/kubelet.log"
}

@test 'kubelet: init container first; env, command and args; hostPath' {
   same_user_or_skip
   manifest s5 <<EOF
apiVersion: v1
kind: Pod
metadata: {name: s5, namespace: ${ns}}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 5
  volumes:
  - {name: host, hostPath: {path: ${kd}/hostpath, type: Directory}}
  - {name: work, emptyDir: {}}
  initContainers:
  - name: init
    image: ${busybox}
    command: [sh, -c, 'sleep 3; cat /host/in.txt > /work/from-init']
    volumeMounts: [{name: host, mountPath: /host}, {name: work, mountPath: /work}]
  containers:
  - name: main
    image: ${busybox}
    command: [sh, -c]
    args: ['echo "\$GREETING \$(cat /work/from-init) \$0 \$1" > /host/out.txt; while :; do sleep 1; done', arg0, arg1]
    env: [{name: GREETING, value: hello-env}]
    volumeMounts: [{name: host, mountPath: /host}, {name: work, mountPath: /work}]
EOF
   wait_for 60 's5 init running' ctr_p s5 init '.state.running'
   # The main container waits for the init container.
   run ! ctr_p s5 main '.state.running'
   wait_for 30 's5 main running' ctr_p s5 main '.state.running'
   ctr_p s5 init '.state.terminated.exitCode == 0
                  and .state.terminated.reason == "Completed"'
   fin=$(ctr_get s5 init | jq -r .state.terminated.finishedAt)
   start=$(ctr_get s5 main | jq -r .state.running.startedAt)
   [[ ! $start < $fin ]]
   wait_for 10 's5 output' test -s "${kd}/hostpath/out.txt"
   [[ $(cat "${kd}/hostpath/out.txt") == 'hello-env from-host arg0 arg1' ]]
}

@test 'kubelet: a pod on the pod network, with a host port' {
   same_user_or_skip
   manifest s7 <<EOF
apiVersion: v1
kind: Pod
metadata: {name: s7, namespace: ${ns}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: web
    image: ${nginx}
    ports: [{containerPort: 80, hostPort: 12097}]
EOF
   wait_for 90 's7 running' ctr_p s7 web '.state.running'
   wait_for 15 's7 host port' host_port_p
   pod=$(crictl pods -q --label "io.kubernetes.pod.name=s7-${node}")
   [[ $(wc -w <<< "$pod") -eq 1 ]]
   if [[ -z ${CH_CRI_TEST_SERVER_USER:-} ]]; then
      # CNI: the kubelet reports the pod's address.
      [[ $(pod_get s7 | jq -r .status.podIP) =~ ^10\.85\. ]]
   else
      # slirp4netns: no address is reported, and the kubelet keeps the
      # pod (it replaces one whose network has an empty IP).
      [[ $(pod_get s7 | jq -r '.status.podIP // ""') == "" ]]
   fi
   sleep 12   # several sync periods
   [[ $(crictl pods -q --label "io.kubernetes.pod.name=s7-${node}") == "$pod" ]]
}

@test 'kubelet: steady state has no CRI errors' {
   same_user_or_skip
   for p in s1 s2 s5; do
      wait_for 30 "${p} ready" pod_ready_p "$p"
   done
   # Steady state: every pod is up (s3 crash-loops and s4's live container
   # is killed by its probe, by design); watch 20 s of the kubelet's log.
   # Expected there, and so not counted: CrashLoopBackOff "Error syncing
   # pod" lines (a kubelet decision, not a CRI error). Counted: any CRI
   # call failing with NotFound, Unimplemented, Internal, Unknown,
   # InvalidArgument or FailedPrecondition, and any ERROR from ch-cri.
   kl=${kd}/kubelet/kubelet.log
   sl=${kd}/server/log
   k0=$(wc -l < "$kl")
   s0=$(wc -l < "$sl")
   sleep 20
   run bash -c 'tail -n +$(( $2 + 1 )) "$1" | grep -E "code = (NotFound|Unimplemented|Internal|Unknown|InvalidArgument|FailedPrecondition)"' _ "$kl" "$k0"
   echo "$output"
   [[ $status -eq 1 ]]
   run bash -c 'tail -n +$(( $2 + 1 )) "$1" | grep -E " ERROR |Traceback"' _ "$sl" "$s0"
   echo "$output"
   [[ $status -eq 1 ]]
}

@test 'kubelet: SIGKILL of ch-cri: pods keep running, nothing recreated' {
   same_user_or_skip
   before=$(ctr_ids s1 s2 s5)
   echo "$before"
   [[ $(jq length <<< "$before") -eq 4 ]]
   pods_before=$(crictl pods -q --state ready | sort)
   log=$(pod_logs s1)/c/0.log
   server_stop "${kd}/server" KILL
   sleep 3   # the kubelet's calls fail meanwhile
   server_start "${kd}/server" "${CH_CRI_TEST_SERVER_USER:-}"
   n0=$(grep -c tick "$log")
   # Several sync periods (5 s) and PLEG relists (1 s).
   sleep 20
   after=$(ctr_ids s1 s2 s5)
   echo "$after"
   [[ $after == "$before" ]]
   [[ $(crictl pods -q --state ready | sort) == "$pods_before" ]]
   # The keeper kept writing s1's log through all this.
   (( $(grep -c tick "$log") > n0 + 10 ))
   # s7's network (CNI's, or its slirp4netns) outlived ch-cri too.
   host_port_p
}

@test 'kubelet: removing a manifest stops the pod within its grace period' {
   same_user_or_skip
   manifest s6 <<EOF
apiVersion: v1
kind: Pod
metadata: {name: s6, namespace: ${ns}}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 10
  volumes:
  - {name: host, hostPath: {path: ${kd}/hostpath, type: Directory}}
  containers:
  - name: c
    image: ${busybox}
    command: [sh, -c, 'trap "sleep 2; echo got TERM > /host/s6-term; exit 0" TERM; sleep 86406 & wait; sleep 86407']
    volumeMounts: [{name: host, mountPath: /host}]
EOF
   wait_for 60 's6 running' ctr_p s6 c '.state.running'
   wait_for 5 's6 child running' pgrep -f '^sleep 86406$'
   pod=$(crictl pods -q --label "io.kubernetes.pod.name=s6-${node}")
   [[ -n $pod ]]
   info=$(crictl inspectp "$pod" | jq -r .info)
   keeper=$(jq -r .pid <<< "$info")
   pod_dir=$(jq -r .dir <<< "$info")
   mnt=$(readlink "/proc/${keeper}/ns/mnt")
   t0=$SECONDS
   rm "${kd}/kubelet/manifests/s6.yaml"
   wait_for 15 's6 stopped' sandbox_state_p "$pod" SANDBOX_NOTREADY
   (( SECONDS - t0 <= 12 ))
   run ! pod_get s6
   # Stopped gracefully: SIGTERM first, and the trap ran to its end (the
   # kubelet removes the container, and its log, as soon as it stopped).
   [[ $(cat "${kd}/hostpath/s6-term") == 'got TERM' ]]
   # Nothing left: no keeper, no process of the container (the child
   # outlived its shell), nothing in the pod's mount namespace, no mount.
   # The keeper exits just after it answers StopPodSandbox.
   wait_for 5 'keeper exit' pid_gone_p "$keeper"
   run ! pgrep -f '^sleep 8640[67]$'
   for p in /proc/[0-9]*; do
      [[ $(readlink "${p}/ns/mnt" 2>/dev/null) != "$mnt" ]]
   done
   run ! grep -F "$pod_dir" /proc/self/mountinfo
}

@test 'kubelet: removed pods are removed from ch-cri; nothing left behind' {
   same_user_or_skip
   rm -f "${kd}"/kubelet/manifests/*.yaml
   wait_for 20 'no pod left in the kubelet' kubelet_empty_p
   # The kubelet removes stopped sandboxes in its garbage collection, once
   # a minute.
   wait_for 100 'sandboxes removed' server_empty_p
   [[ -z $(crictl ps -a -q) ]]
   [[ -z $(ls "${kd}/server/state/pods") ]]
   [[ -z $(ls "${kd}/server/state/containers") ]]
   run ! pgrep -f -- "keeper.py ${kd}/server/state/"
   run ! grep -F "${kd}/server/state" /proc/self/mountinfo
   # Over the whole run, the only CRI errors besides Unavailable (ch-cri
   # killed) are the NotFound of ContainerStatus when the kubelet removes a
   # deleted pod's container a second time (doc/ch-cri.rst).
   run bash -c 'grep -E "code = (NotFound|Unimplemented|Internal|Unknown|InvalidArgument|FailedPrecondition)" "$1" | grep -vE "\"(ContainerStatus from runtime service failed|DeleteContainer returned error)\".*code = NotFound desc = container not found"' _ "${kd}/kubelet/kubelet.log"
   echo "$output"
   [[ $status -eq 1 ]]
}

@test 'kubelet: unprivileged ch-cri under a root kubelet fails clearly' {
   [[ -n ${CH_CRI_TEST_SERVER_USER:-} ]] || skip 'root ch-cri'
   [[ -z ${CH_CRI_TEST_KUBELET_USER:-} ]] || skip 'kubelet of the same user'
   manifest u1 <<EOF
apiVersion: v1
kind: Pod
metadata: {name: u1, namespace: ${ns}}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 5
  containers:
  - name: c
    image: ${busybox}
    command: [sh, -c, 'while :; do sleep 1; done']
EOF
   wait_for 60 'u1 CreateContainerError' \
            ctr_p u1 c '.state.waiting.reason == "CreateContainerError"'
   msg=$(ctr_get u1 c | jq -r .state.waiting.message)
   echo "$msg"
   [[ $msg == *"${kd}/kubelet/root/pods/"*'Permission denied'* ]]
   rm "${kd}/kubelet/manifests/u1.yaml"
   wait_for 20 'u1 stopped' server_empty_p SANDBOX_READY
}
