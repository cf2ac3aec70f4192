# Isolation and security context against the live ch-cri at
# $CH_CRI_TEST_SOCKET (root and unprivileged): PID namespaces, capabilities,
# seccomp, no_new_privs, masked and read-only paths, resources; and every
# refused field named in its error.

load ../common

setup () {
   scope standard
   live_server_or_skip
   work_make sec
   crictl pull registry.k8s.io/e2e-test-images/busybox:1.29-2 > /dev/null
}

teardown () {
   [[ -z ${host_sleep:-} ]] || kill "$host_sleep" 2>/dev/null || true
   work_remove sec
   if [[ -n ${parent:-} ]]; then   # a kubelet-style cgroup_parent
      for c in memory cpu cpuacct pids cpuset; do
         rmdir "/sys/fs/cgroup/${c}/${parent}" \
               "/sys/fs/cgroup/${c}/${parent%/*}" 2>/dev/null || true
      done
   fi
}

# Write the pod config for pod $1 with PID namespace mode $2 (0 POD,
# 1 CONTAINER, 2 NODE) to $work/$1.json and start it; print its ID.
pod_run () {
   pod_config "$1" ch-cri-test "$work" sec \
      "{\"linux\": {\"security_context\": {\"namespace_options\": {\"pid\": ${2:-0}}}}}" \
      > "${work}/$1.json"
   crictl runp "${work}/$1.json" | tee "${work}/$1.id"
}

# Create container $2 (in pod $1) with "linux" object $3 and mounts $4,
# command "sleep 600"; print the create command's output (ID or error).
ctr_create () {
   local linux=${3:-\{\}} mounts=${4:-[]}
   ctr_sleep_create "$1" "$2" sec "\"linux\": ${linux}, \"mounts\": ${mounts}"
}

ctr_run () {
   ctr_started ctr_create "$@"
}

# Assert that creating container $2 with linux $3 (mounts $4) fails with
# an error that names field $5.
refused () {
   run ctr_create "$1" "$2" "$3" "${4:-[]}"
   echo "$output"
   [[ $status -ne 0 ]]
   [[ $output == *InvalidArgument* ]]
   [[ $output == *"$5"* ]]
}

@test 'refused security fields are named in the error' {
   pod_run r > /dev/null
   sc=config.linux.security_context
   refused r c1 '{"security_context": {"capabilities": {"add_capabilities": ["BOGUS"]}}}' \
      '[]' "${sc}.capabilities.add_capabilities"
   refused r c2 '{"security_context": {"seccomp": {"profile_type": 2, "localhost_ref": "rel.json"}}}' \
      '[]' "${sc}.seccomp.localhost_ref"
   refused r c3 '{"security_context": {"seccomp": {"profile_type": 2, "localhost_ref": "/nonexistent/p.json"}}}' \
      '[]' "${sc}.seccomp.localhost_ref"
   refused r c4 '{"security_context": {"masked_paths": ["/a/../../etc"]}}' \
      '[]' "${sc}.masked_paths[0]"
   refused r c5 '{"security_context": {"readonly_paths": ["etc"]}}' \
      '[]' "${sc}.readonly_paths[0]"
   refused r c6 '{"security_context": {"seccomp_profile_path": "bogus"}}' \
      '[]' "${sc}.seccomp_profile_path"
   refused r c7 '{"security_context": {"namespace_options": {"pid": 3}}}' \
      '[]' "${sc}.namespace_options.target_id"
   refused r c8 '{}' "[{\"host_path\": \"${work}\", \"container_path\": \"/mnt\", \"recursive_read_only\": true}]" \
      'config.mounts[0].recursive_read_only'
   refused r c9 '{}' "[{\"host_path\": \"${work}\", \"container_path\": \"/mnt\", \"readonly\": true, \"recursive_read_only\": true, \"propagation\": 1}]" \
      'config.mounts[0].recursive_read_only'
   refused r c10 '{}' "[{\"host_path\": \"${work}\", \"container_path\": \"/mnt\", \"propagation\": 2}]" \
      'config.mounts[0].propagation'
}

@test 'capabilities: the default set, drop ALL, add; no_new_privs' {
   pod_run caps > /dev/null
   c=$(ctr_run caps c-default)
   crictl exec "$c" grep -q 'CapEff:.*a80425fb' /proc/self/status
   # ch-run always sets no_new_privs (see ch-cri(1), Limitations).
   crictl exec "$c" grep -q 'NoNewPrivs:.*1' /proc/self/status
   c=$(ctr_run caps c-none '{"security_context": {"capabilities": {"drop_capabilities": ["ALL"]}, "no_new_privs": true}}')
   crictl exec "$c" grep -q 'CapBnd:.*0000000000000000' /proc/self/status
   crictl exec "$c" grep -q 'NoNewPrivs:.*1' /proc/self/status
   c=$(ctr_run caps c-add '{"security_context": {"capabilities": {"drop_capabilities": ["ALL"], "add_capabilities": ["SYS_ADMIN"]}}}')
   crictl exec "$c" grep -q 'CapEff:.*0000000000200000' /proc/self/status
}

@test 'seccomp: RuntimeDefault, Localhost, Unconfined' {
   pod_run sc > /dev/null
   # With SYS_ADMIN, root may mount in its own user namespace, unless the
   # default profile refuses mount(2).
   admin='"capabilities": {"add_capabilities": ["SYS_ADMIN"]}'
   c=$(ctr_run sc s-default "{\"security_context\": {${admin}, \"seccomp\": {\"profile_type\": 0}}}")
   crictl exec "$c" grep -q 'Seccomp:.*2' /proc/self/status
   run crictl exec "$c" mount -t tmpfs none /mnt
   [[ $status -ne 0 ]]
   c=$(ctr_run sc s-none "{\"security_context\": {${admin}, \"seccomp\": {\"profile_type\": 1}}}")
   crictl exec "$c" grep -q 'Seccomp:.*0' /proc/self/status
   crictl exec "$c" mount -t tmpfs none /mnt
   cat > "${work}/prof.json" <<'EOF'
{"defaultAction": "SCMP_ACT_ALLOW",
 "syscalls": [{"names": ["chmod", "fchmodat", "fchmodat2", "nosuchcall"],
               "action": "SCMP_ACT_ERRNO"}]}
EOF
   chmod 644 "${work}/prof.json"
   c=$(ctr_run sc s-local "{\"security_context\": {\"seccomp\": {\"profile_type\": 2, \"localhost_ref\": \"${work}/prof.json\"}}}")
   run crictl exec "$c" chmod 400 /
   [[ $status -ne 0 && $output == *"Operation not permitted"* ]]
}

@test 'masked and read-only paths' {
   pod_run mp > /dev/null
   c=$(ctr_run mp m1 '{"security_context": {"masked_paths": ["/bin/ls", "/sys/firmware", "/nonexistent"], "readonly_paths": ["/etc", "/tmp", "/proc/sys"]}}')
   run crictl exec "$c" /bin/sh -c ls
   [[ $output == *"ls: Permission denied"* ]]
   [[ -z $(crictl exec "$c" ls /sys/firmware) ]]
   run crictl exec "$c" touch /etc/x
   [[ $output == *"Read-only file system"* ]]
   run crictl exec "$c" touch /tmp/x
   [[ $output == *"Read-only file system"* ]]
   run crictl exec "$c" sh -c 'echo 1 > /proc/sys/kernel/shm_rmid_forced'
   [[ $status -ne 0 ]]
   # Other paths stay writable.
   crictl exec "$c" touch /root-ok
}

@test 'PID namespaces: POD shares one, CONTAINER has its own' {
   pod_run shared 0 > /dev/null
   a=$(ctr_run shared pa)
   b=$(ctr_run shared pb)
   # Both sleeps, and none of the host's (the test's own sleep included).
   sleep 600 3>&- &
   host_sleep=$!
   [[ $(crictl exec "$b" pgrep -c sleep) -eq 2 ]]
   kill "$host_sleep"
   pod_run own 1 > /dev/null
   c=$(ctr_run own pc '{"security_context": {"namespace_options": {"pid": 1}}}')
   [[ $(crictl exec "$c" cat /proc/1/cmdline | tr '\0' ' ') == "sleep 600 " ]]
   # The mount namespace recorded is the container's (ch-run's), which
   # stats, "kill all" and exec rely on.
   pid=$(crictl inspect "$c" | jq -r .info.pid)
   ns=$(readlink "/proc/${pid}/ns/mnt")
   [[ $(crictl inspect "$c" | jq -r .info.status.mntns) == "$ns" ]]
   [[ $(crictl exec "$c" pgrep -c sleep) -eq 1 ]]
   # Stop reaches PID 1 (SIGTERM is ignored by a PID 1 without a handler,
   # so the grace period ends in SIGKILL).
   crictl stop -t 1 "$c" > /dev/null
   [[ $(crictl inspect "$c" | jq -r .status.exitCode) -eq 137 ]]
   [[ -n $(crictl exec "$a" true && echo alive) ]]
}

@test 'memory limit: OOMKilled (root)' {
   [[ -z ${CH_CRI_TEST_SERVER_USER:-} ]] || skip "cgroups need a root ch-cri"
   pod_run oom > /dev/null
   cat > "${work}/o2.json" <<EOF
{"metadata": {"name": "o2"},
 "image": {"image": "registry.k8s.io/e2e-test-images/busybox:1.29-2"},
 "command": ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
 "log_path": "o2.log", "labels": {"ch-cri-test": "sec"},
 "linux": {"resources": {"memory_limit_in_bytes": 20971520}}}
EOF
   id=$(crictl create "$(cat "${work}/oom.id")" "${work}/o2.json" \
                      "${work}/oom.json")
   crictl start "$id" > /dev/null
   for (( i = 0; i < 100; i++ )); do
      [[ $(crictl inspect "$id" | jq -r .status.state) == CONTAINER_EXITED ]] \
         && break
      sleep 0.1
   done
   crictl inspect "$id" | jq -r .status.reason | grep -qx OOMKilled
   [[ $(crictl inspect "$id" | jq -r .status.exitCode) -eq 137 ]]
}

@test 'resources: cgroup limits, live update, stats from cgroups (root)' {
   [[ -z ${CH_CRI_TEST_SERVER_USER:-} ]] || skip "cgroups need a root ch-cri"
   pod=$(pod_run res)
   id=$(ctr_run res r1 '{"resources": {"memory_limit_in_bytes": 104857600, "cpu_shares": 512, "cpu_quota": 50000, "cpu_period": 100000}}')
   # The pod has no cgroup_parent: ch-cri makes and owns its cgroup.
   cg=/sys/fs/cgroup
   m=${cg}/memory/ch-cri/${pod}/${id}
   [[ $(cat "${m}/memory.limit_in_bytes") -eq 104857600 ]]
   [[ $(cat "${cg}/cpu/ch-cri/${pod}/${id}/cpu.shares") -eq 512 ]]
   [[ $(cat "${cg}/cpu/ch-cri/${pod}/${id}/cpu.cfs_quota_us") -eq 50000 ]]
   pid=$(crictl inspect "$id" | jq -r .info.pid)
   grep -qx "$pid" "${m}/cgroup.procs"
   crictl update --memory 209715200 --cpu-quota 20000 "$id" > /dev/null
   [[ $(cat "${m}/memory.limit_in_bytes") -eq 209715200 ]]
   [[ $(cat "${cg}/cpu/ch-cri/${pod}/${id}/cpu.cfs_quota_us") -eq 20000 ]]
   # Stats are the cgroup's.
   crictl exec "$id" sh -c 'x=$(head -c 8000000 /dev/zero | tr "\0" x); echo ${#x}' > /dev/null
   ws=$(crictl stats -o json --id "$id" | jq -r '.stats[0].memory.workingSetBytes.value')
   [[ $ws -gt 0 ]]
   # UpdatePodSandboxResources limits the pod's cgroup (resources plus
   # overhead), which holds its containers and not its keeper.
   "$PYTHON" "${test_dir}/bin/cri-call" "$sock" UpdatePodSandboxResources \
      "{\"pod_sandbox_id\": \"${pod}\", \"resources\": {\"memory_limit_in_bytes\": 314572800, \"cpu_shares\": 1024}, \"overhead\": {\"memory_limit_in_bytes\": 1048576, \"cpu_shares\": 10}}"
   [[ $(cat "${cg}/memory/ch-cri/${pod}/memory.limit_in_bytes") -eq 315621376 ]]
   [[ $(cat "${cg}/cpu/ch-cri/${pod}/cpu.shares") -eq 1034 ]]
   kpid=$(crictl inspectp "$pod" | jq -r .info.pid)
   ! grep -qx "$kpid" "${cg}/memory/ch-cri/${pod}/cgroup.procs"
   run "$PYTHON" "${test_dir}/bin/cri-call" "$sock" UpdatePodSandboxResources \
       '{"pod_sandbox_id": "0123456789ab"}'
   [[ $status -eq 1 && $output == NOT_FOUND:* ]]
   crictl stop -t 1 "$id" > /dev/null
   crictl rm "$id" > /dev/null
   [[ ! -e $m ]]
   crictl stopp "$pod" > /dev/null
   crictl rmp "$pod" > /dev/null
   [[ ! -e ${cg}/memory/ch-cri/${pod} ]]
}

@test 'resources: containers go in the cgroup_parent the kubelet gives (root)' {
   [[ -z ${CH_CRI_TEST_SERVER_USER:-} ]] || skip "cgroups need a root ch-cri"
   cg=/sys/fs/cgroup
   parent=ch-cri-test-kubepods/pod-${RANDOM}
   cat > "${work}/cp.json" <<EOF
{"metadata": {"name": "cp", "namespace": "ch-cri-test", "uid": "cp-uid"},
 "log_directory": "${work}/logs/cp", "labels": {"ch-cri-test": "sec"},
 "linux": {"cgroup_parent": "/${parent}"}}
EOF
   crictl runp "${work}/cp.json" > "${work}/cp.id"
   id=$(ctr_run cp c1 '{"resources": {"memory_limit_in_bytes": 104857600}}')
   pid=$(crictl inspect "$id" | jq -r .info.pid)
   grep -qx "$pid" "${cg}/memory/${parent}/${id}/cgroup.procs"
   [[ $(cat "${cg}/memory/${parent}/${id}/memory.limit_in_bytes") -eq 104857600 ]]
   crictl stopp "$(cat "${work}/cp.id")" > /dev/null
   crictl rmp "$(cat "${work}/cp.id")" > /dev/null
   # The container's cgroup goes; the kubelet's pod cgroup is its own.
   [[ ! -e ${cg}/memory/${parent}/${id} ]]
   [[ -d ${cg}/memory/${parent} ]]
   for c in memory cpu cpuacct pids cpuset; do
      rmdir "${cg}/${c}/${parent}" "${cg}/${c}/${parent%/*}"
   done
   # A malformed one is refused by name.
   sed -i 's|"cgroup_parent": "[^"]*"|"cgroup_parent": "/a/../b"|' "${work}/cp.json"
   run crictl runp "${work}/cp.json"
   [[ $status -ne 0 && $output == *config.linux.cgroup_parent* ]]
}

# Exec "sleep $2" (a number unique to the test) in container $1 in the
# background; set $epid to its host PID (empty if it never showed, in 5 s).
exec_pid () {
   local bg i
   crictl exec "$1" sleep "$2" 3>&- &
   bg=$!
   epid=
   for (( i = 0; i < 100; i++ )); do
      epid=$(pgrep -f -x "sleep $2" | head -n 1)
      [[ -n $epid ]] && break
      sleep 0.05
   done
   kill "$bg" 2>/dev/null || true
}

# The masked and read-only paths the kubelet sends by default (procMount
# Default); crictl and critest send none.
kubelet_paths='"masked_paths": ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"], "readonly_paths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]'

# Assert that container $1 can write none of the host's /sys, /proc/sys or
# cgroups. Each write that could succeed writes nothing (an open for
# writing alone tells) or the file's own value back (or moves the shell
# into a cgroup), so a failing run does no harm. (busybox's test -w is
# true for root whatever the mount; a failed redirection of ":" would end
# the shell, hence the subshell.)
host_unwritable () {
   run crictl exec "$1" sh -c '
      bad=
      (: > /sys/power/state) 2>/dev/null && bad="$bad /sys/power/state"
      for f in /sys/block/*/queue/read_ahead_kb; do
         v=$(cat "$f") && echo "$v" 2>/dev/null > "$f" && bad="$bad $f"
         break
      done
      for f in /sys/fs/cgroup/*/cgroup.procs /sys/fs/cgroup/cgroup.procs; do
         [ -e "$f" ] && echo $$ 2>/dev/null > "$f" && bad="$bad $f"
      done
      v=$(cat /proc/sys/kernel/core_pattern)
      echo "$v" 2>/dev/null > /proc/sys/kernel/core_pattern \
         && bad="$bad core_pattern"
      echo "writable:$bad"'
   echo "$1: $output"
   [[ $output == "writable:" ]]
}

@test 'no container can write the host: /sys, /proc/sys, cgroups' {
   pod_run hw > /dev/null
   nonroot='"run_as_user": {"value": 1000}, "capabilities": {"drop_capabilities": ["ALL"]}, "no_new_privs": true, "seccomp": {"profile_type": 0}'
   host_unwritable "$(ctr_run hw u-kubelet "{\"security_context\": {${nonroot}, ${kubelet_paths}}}")"
   host_unwritable "$(ctr_run hw u-none "{\"security_context\": {${nonroot}}}")"
   host_unwritable "$(ctr_run hw r-kubelet "{\"security_context\": {${kubelet_paths}}}")"
   c=$(ctr_run hw r-none)
   host_unwritable "$c"
   [[ $(crictl exec "$c" grep ' /sys sysfs ' /proc/self/mounts) \
      == *" ro,"* ]]
   # Its own cgroups are what it sees, read-only.
   c=$(ctr_run hw r-cg '{"resources": {"memory_limit_in_bytes": 104857600}}')
   if [[ -z ${CH_CRI_TEST_SERVER_USER:-} ]]; then
      [[ $(crictl exec "$c" cat /sys/fs/cgroup/memory/memory.limit_in_bytes) \
         -eq 104857600 ]]
      crictl exec "$c" grep -qx '[0-9]*:memory:/' /proc/self/cgroup
   fi
   # privileged: none of this applies.
   c=$(ctr_run hw r-priv '{"security_context": {"privileged": true}}')
   run crictl exec "$c" grep ' /sys sysfs ' /proc/self/mounts
   echo "privileged: $output"
   [[ $output == *" rw,"* ]]
}

@test 'a container user is that host user, groups included (root)' {
   [[ -z ${CH_CRI_TEST_SERVER_USER:-} ]] \
      || skip "an ordinary user's containers are that user"
   hp=${work}/hp
   mkdir "$hp"
   echo secret > "${hp}/secret"
   chmod 600 "${hp}/secret"
   echo mine > "${hp}/mine"
   chown 1000 "${hp}/mine"
   echo group > "${hp}/grp"
   chown 0:4321 "${hp}/grp"
   chmod 640 "${hp}/grp"
   mounts="[{\"container_path\": \"/hp\", \"host_path\": \"${hp}\"}]"
   pod_run ids > /dev/null
   u=$(ctr_run ids u1000 '{"security_context": {"run_as_user": {"value": 1000}}}' "$mounts")
   r=$(ctr_run ids u0 '{"security_context": {"run_as_user": {"value": 0}}}' "$mounts")
   g=$(ctr_run ids ug '{"security_context": {"run_as_user": {"value": 1000}, "supplemental_groups": [4321]}}' "$mounts")
   run crictl exec "$u" cat /hp/secret
   [[ $status -ne 0 && $output == *"Permission denied"* ]]
   [[ $(crictl exec "$r" cat /hp/secret) == secret ]]
   crictl exec "$u" sh -c 'echo more >> /hp/mine'
   [[ $(tail -n 1 "${hp}/mine") == more ]]
   run crictl exec "$u" cat /hp/grp
   [[ $status -ne 0 ]]
   [[ $(crictl exec "$g" cat /hp/grp) == group ]]
   # On the host, the main process is 1000 with its groups.
   pid=$(crictl inspect "$g" | jq -r .info.pid)
   grep -q '^Uid:[[:space:]]*1000[[:space:]]' "/proc/${pid}/status"
   grep -q '^Groups:.*4321' "/proc/${pid}/status"
   [[ $(crictl inspect "$g" | jq -c .status.user.linux.supplementalGroups) \
      == *4321* ]]
}

@test 'an exec joins the container cgroups (root)' {
   [[ -z ${CH_CRI_TEST_SERVER_USER:-} ]] || skip "cgroups need a root ch-cri"
   pod_run ex > /dev/null
   c=$(ctr_run ex e1 '{"resources": {"memory_limit_in_bytes": 104857600}}')
   pid=$(crictl inspect "$c" | jq -r .info.pid)
   exec_pid "$c" 7.125
   [[ -n $epid ]]
   [[ $(grep ':memory:' "/proc/${epid}/cgroup") \
      == "$(grep ':memory:' "/proc/${pid}/cgroup")" ]]
}

@test 'ExecSync output is cut to fit its reply' {
   pod_run big > /dev/null
   c=$(ctr_run big b1)
   n=$(crictl exec -s "$c" sh -c 'head -c 20971520 /dev/zero | tr "\0" x' \
       | tr -cd x | wc -c)
   echo "got ${n} bytes"
   [[ $n -eq $(( 16 * 1048576 - 65536 )) ]]
}

@test 'a log path that is a symbolic link or FIFO is refused, not followed' {
   pod_run lg > /dev/null
   logs=${work}/logs/lg
   echo before > "${work}/target"
   chmod 666 "${work}/target"
   mkdir -p "$logs"
   ln -s "${work}/target" "${logs}/l1.log"
   id=$(ctr_create lg l1)
   run crictl start "$id"
   echo "$output"
   [[ $status -ne 0 && $output == *l1.log* ]]
   [[ $(cat "${work}/target") == before ]]
   mkfifo -m 666 "${logs}/l2.log"
   id=$(ctr_create lg l2)
   run crictl start "$id"
   echo "$output"
   [[ $status -ne 0 && $output == *"not a regular file"* ]]
}

@test 'hostUsers: false: the pod gets its own user namespace' {
   ns='"namespace_options": {"userns_options": {"mode": 0, "uids": [{"container_id": 0, "host_id": 300000, "length": 65536}], "gids": [{"container_id": 0, "host_id": 300000, "length": 65536}]}}'
   cat > "${work}/un.json" <<EOF
{"metadata": {"name": "un", "namespace": "ch-cri-test", "uid": "un-uid"},
 "log_directory": "${work}/logs/un", "labels": {"ch-cri-test": "sec"},
 "linux": {"security_context": {${ns}}}}
EOF
   if [[ -n ${CH_CRI_TEST_SERVER_USER:-} ]]; then
      run crictl runp "${work}/un.json"
      [[ $status -ne 0 && $output == *FailedPrecondition* ]]
      [[ $output == *userns_options.mode* ]]
      return 0
   fi
   crictl runp "${work}/un.json" > "${work}/un.id"
   mkdir "${work}/ed"    # an emptyDir, root's as the kubelet makes it
   mounts="[{\"container_path\": \"/ed\", \"host_path\": \"${work}/ed\"}]"
   c=$(ctr_run un u1 "{\"security_context\": {${ns}}}" "$mounts")
   pid=$(crictl inspect "$c" | jq -r .info.pid)
   grep -q '^Uid:[[:space:]]*300000[[:space:]]' "/proc/${pid}/status"
   # Root inside writes the emptyDir (an ID-mapped mount: the file is host
   # root's) and its image (ID-mapped too, writes in its own layer).
   crictl exec "$c" sh -c 'echo hi > /ed/f && touch /etc/mine'
   [[ $(stat -c %u "${work}/ed/f") -eq 0 ]]
   # Its execs are in the namespace too.
   exec_pid "$c" 7.375
   grep -q '^Uid:[[:space:]]*300000[[:space:]]' "/proc/${epid}/status"
   # What the kubelet never sends is refused by field.
   f=config.linux.security_context.namespace_options.userns_options
   for bad in '{"mode": 1}' '{"mode": 3}' \
              '{"mode": 0, "uids": [{"container_id": 1, "host_id": 1000, "length": 10}], "gids": [{"container_id": 1, "host_id": 1000, "length": 10}]}' \
              '{"mode": 0, "uids": [{"host_id": 1000, "length": 10}, {"host_id": 2000, "length": 10}], "gids": [{"host_id": 1000, "length": 10}]}'; do
      sed "s|\"userns_options\": .*}}}}}|\"userns_options\": ${bad}}}}}|; s|\"un\"|\"un2\"|; s|un-uid|un2-uid|" \
         "${work}/un.json" > "${work}/un2.json"
      run crictl runp "${work}/un2.json"
      echo "$output"
      [[ $status -ne 0 && $output == *InvalidArgument* && $output == *"$f"* ]]
   done
}

@test 'the mount namespace recorded is the command own, 200 times (host PID)' {
   pod_run hp 2 > /dev/null
   # privileged and host PID: nothing to mask, as an ordinary user no
   # cgroups either, the path that once recorded the keeper's namespace.
   linux='{"security_context": {"privileged": true, "namespace_options": {"pid": 2}}}'
   for (( i = 0; i < 200; i++ )); do
      c=$(ctr_run hp "h${i}" "$linux")
      pid=$(crictl inspect "$c" | jq -r .info.pid)
      want=$(readlink "/proc/${pid}/ns/mnt")
      got=$(crictl inspect "$c" | jq -r .info.status.mntns)
      [[ $got == "$want" ]] || { echo "run ${i}: ${got} != ${want}"; false; }
      crictl rm -f "$c" > /dev/null
   done
}
