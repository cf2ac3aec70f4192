# Devices against the live ch-cri at $CH_CRI_TEST_SOCKET (root and
# unprivileged): each container's own /dev, the kubelet's files there
# (/dev/termination-log), the CRI devices field, and CDI devices from a
# vendor spec this test writes (its device nodes are ordinary ones of the
# host's, which any user may open: no GPU needed).

load ../common

setup () {
   scope standard
   live_server_or_skip
   work_make dev
   crictl pull registry.k8s.io/e2e-test-images/busybox:1.29-2 > /dev/null
   cdi=/var/run/cdi/ch-cri-test-${BATS_TEST_NUMBER}-$$.yaml
}

teardown () {
   rm -f "$cdi"
   work_remove dev
}

pod_run () {   # pod_run NAME: start pod NAME, its config in $work/NAME.json
   pod_config "$1" ch-cri-test "$work" dev > "${work}/$1.json"
   crictl runp "${work}/$1.json" > "${work}/$1.id"
}

# ctr_create POD NAME [EXTRA]: create container NAME (sleep 600) in pod
# POD, with EXTRA (JSON members) added to its config; print the output.
ctr_create () {
   ctr_sleep_create "$1" "$2" dev "${3:-}"
}

ctr_run () {
   ctr_started ctr_create "$@"
}

@test 'a container has a /dev of its own; privileged has the host one' {
   pod_run d1
   c=$(ctr_run d1 c1)
   devs=$(crictl exec "$c" ls /dev | tr '\n' ' ')
   echo "$devs"
   [[ $devs == "fd full null ptmx pts random shm stderr stdin stdout tty urandom zero " ]]
   # Its own ptys, /dev/shm shared in the pod, and no host block device.
   crictl exec "$c" sh -c 'echo hi > /dev/null && head -c 1 /dev/zero | wc -c'
   c2=$(ctr_run d1 c2)
   crictl exec "$c" sh -c 'echo shared > /dev/shm/x'
   [[ $(crictl exec "$c2" cat /dev/shm/x) == shared ]]
   [[ ! -e /dev/shm/x ]]
   host_blk=$(find /dev -maxdepth 1 -type b | head -n 1)
   [[ -n $host_blk ]]
   run crictl exec "$c" ls "$host_blk"
   [[ $status -ne 0 ]]
   p=$(ctr_run d1 p1 '"linux": {"security_context": {"privileged": true}}')
   crictl exec "$p" ls "$host_blk"
}

@test 'the kubelet termination log reaches the host; the devices field' {
   pod_run d2
   : > "${work}/tlog"
   chmod 666 "${work}/tlog"
   c=$(ctr_run d2 c1 "\"mounts\": [{\"container_path\": \"/dev/termination-log\", \"host_path\": \"${work}/tlog\"}], \"devices\": [{\"container_path\": \"/dev/xzero\", \"host_path\": \"/dev/zero\", \"permissions\": \"rw\"}]")
   crictl exec "$c" sh -c 'echo "it ended" > /dev/termination-log'
   [[ $(cat "${work}/tlog") == "it ended" ]]
   [[ $(crictl exec "$c" sh -c 'head -c 3 /dev/xzero | wc -c') -eq 3 ]]
   # A host path that is not a device node is refused by field.
   run ctr_create d2 c2 '"devices": [{"container_path": "/dev/x", "host_path": "/etc/hostname", "permissions": "r"}]'
   [[ $status -ne 0 && $output == *InvalidArgument* ]]
   [[ $output == *"config.devices[0].host_path"* ]]
   [[ $output == *"not a device node"* ]]
   run ctr_create d2 c3 '"devices": [{"container_path": "/opt/x", "host_path": "/dev/zero", "permissions": "r"}]'
   [[ $status -ne 0 && $output == *"config.devices[0].container_path"* ]]
   # Nothing given goes onto (or through) what /dev has of its own: a
   # bind at /dev/stdin would land on whatever the process's fd 0 is.
   run ctr_run d2 c4 '"devices": [{"container_path": "/dev/stdin", "host_path": "/dev/zero", "permissions": "r"}]'
   [[ $status -ne 0 && $output == *"not a free path below /dev"* ]]
}

@test 'CDI: a vendor device by annotation, its env, nodes, mounts and hook' {
   [[ -w /var/run/cdi || ! -e /var/run/cdi ]] && [[ $(id -u) -eq 0 ]] \
      || skip "the test writes its vendor spec to /var/run/cdi as root"
   mkdir -p /var/run/cdi "${work}/vlib" "${work}/hook" "${work}/rec"
   echo lib > "${work}/vlib/libvendor.so"
   chmod -R a+rX "${work}/vlib"
   # A hook that records its arguments, environment and the state on its
   # stdin (root's, in a directory root owns: ch-cri runs only those).
   cat > "${work}/hook/record" <<EOF
#!/bin/sh
{ echo "args: \$*"; echo "env: \$VENDOR_HOOK"; cat; echo; } >> ${work}/rec/log
EOF
   chmod 755 "${work}/hook" "${work}/hook/record"
   chmod 1777 "${work}/rec"
   cat > "$cdi" <<EOF
cdiVersion: "0.6.0"
kind: ch-cri-test.example/dev
containerEdits:
  env: ["VENDOR_ALL=yes"]
devices:
  - name: a
    containerEdits:
      env: ["VENDOR_DEV=a"]
      deviceNodes:
        - path: /dev/vendor-a
          hostPath: /dev/zero
      mounts:
        - hostPath: ${work}/vlib
          containerPath: /opt/vendor
          options: [ro, nosuid, nodev, bind]
      hooks:
        - hookName: createContainer
          path: ${work}/hook/record
          args: [record, createContainer, a]
          env: [VENDOR_HOOK=yes]
  - name: b
    containerEdits:
      deviceNodes:
        - path: /dev/vendor-b
          hostPath: /dev/full
EOF
   pod_run d3
   a=$(ctr_run d3 ca '"annotations": {"cdi.k8s.io/test": "ch-cri-test.example/dev=a"}')
   n=$(ctr_run d3 cn)
   # The one given vendor device a sees it, its mount and env; b is not
   # there; the other container sees none of it.
   [[ $(crictl exec "$a" sh -c 'head -c 2 /dev/vendor-a | wc -c') -eq 2 ]]
   run crictl exec "$a" ls /dev/vendor-b
   [[ $status -ne 0 ]]
   [[ $(crictl exec "$a" cat /opt/vendor/libvendor.so) == lib ]]
   run crictl exec "$a" touch /opt/vendor/x
   [[ $output == *"Read-only file system"* ]]
   crictl exec "$a" env | grep -qx VENDOR_DEV=a
   crictl exec "$a" env | grep -qx VENDOR_ALL=yes
   run crictl exec "$n" ls /dev/vendor-a
   [[ $status -ne 0 ]]
   run crictl exec "$n" ls /opt/vendor
   [[ $status -ne 0 ]]
   # The hook ran once, for the container given the device, as an OCI
   # hook; and nosuid, nodev as the mount's options say.
   cat "${work}/rec/log"
   [[ $(grep -c '^args: ' "${work}/rec/log") -eq 1 ]]
   grep -qx 'args: createContainer a' "${work}/rec/log"
   grep -qx 'env: yes' "${work}/rec/log"
   grep -F "\"id\": \"${a}\"" "${work}/rec/log" | grep -q '"status": "creating"'
   crictl exec "$a" grep ' /opt/vendor ' /proc/mounts | grep -q 'ro,nosuid,nodev'
   # A name no spec defines fails CreateContainer, named.
   run ctr_create d3 cx '"annotations": {"cdi.k8s.io/test": "ch-cri-test.example/dev=nope"}'
   [[ $status -ne 0 && $output == *InvalidArgument* ]]
   [[ $output == *"unresolvable CDI device ch-cri-test.example/dev=nope"* ]]
}

# The GPU node's real CDI spec (see ../shared/fixtures/cdi), its host paths
# moved into a tree this test makes: what the spec asks for lands where it
# says, for the device named, by NVIDIA_VISIBLE_DEVICES, and for no other.
@test 'CDI: the H200 spec: 36 mounts, 4 nodes, env, emulated hooks' {
   [[ $(id -u) -eq 0 ]] || skip "mknod of the spec's device nodes needs root"
   command -v gcc > /dev/null || skip "gcc makes libcuda for ldconfig"
   fixture=${BATS_TEST_DIRNAME}/../../../shared/fixtures/cdi/nvidia-h200.yaml
   [[ -f $fixture ]] || fixture=/work/shared/fixtures/cdi/nvidia-h200.yaml
   [[ -f $fixture ]] || skip "no CDI fixture (../shared/fixtures/cdi)"
   mkdir -p /var/run/cdi
   cdi=${cdi%.yaml}.json
   "$PYTHON" "${BATS_TEST_DIRNAME}/../bin/cdi-fixture" "$fixture" \
             "${work}/gpu" "$cdi" > "${work}/want"
   chmod -R a+rX "${work}/gpu"
   [[ $(grep -c '^mount ' "${work}/want") -eq 36 ]]
   [[ $(grep -c '^node ' "${work}/want") -eq 4 ]]
   pod_run d4
   g=$(ctr_run d4 g '"annotations": {"cdi.k8s.io/gpu": "nvidia.com/gpu=0"}')
   e=$(ctr_run d4 e '"envs": [{"key": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]')
   n=$(ctr_run d4 n '"envs": [{"key": "NVIDIA_VISIBLE_DEVICES", "value": "void"}]')
   # Every mount, at its container path, with its content; nosuid, nodev
   # and read-only as the spec's options say.
   mapfile -t mounts < <(sed -n 's/^mount //p' "${work}/want")
   crictl exec "$g" ls -d "${mounts[@]}"
   [[ $(crictl exec "$g" cat /usr/local/nvidia/bin/nvidia-smi) \
      == "# /usr/local/nvidia/bin/nvidia-smi" ]]
   crictl exec "$g" grep ' /usr/local/nvidia/bin/nvidia-smi ' /proc/mounts \
      | grep -E ' ro,nosuid,nodev[, ]'
   # The four device nodes, with the spec's numbers (stat prints hex).
   while read -r _ path major minor; do
      [[ $(crictl exec "$g" stat -c '%F %t:%T' "$path") \
         == "$(printf 'character special file %x:%x' "$major" "$minor")" ]]
   done < <(grep '^node ' "${work}/want")
   crictl exec "$g" env | grep -qx NVIDIA_CTK_LIBCUDA_DIR=/usr/local/nvidia/lib64
   crictl exec "$g" env | grep -qx NVIDIA_VISIBLE_DEVICES=void
   # create-symlinks: every link; update-ldcache: libcuda's SONAME link
   # and the container's cache naming it, its folder in ld.so.conf.d.
   while read -r _ link target; do
      [[ $(crictl exec "$g" readlink "$link") == "$target" ]]
   done < <(grep '^link ' "${work}/want")
   [[ $(crictl exec "$g" readlink /usr/local/nvidia/lib64/libcuda.so.1) \
      == libcuda.so.580.159.04 ]]
   crictl exec "$g" grep -q /usr/local/nvidia/lib64/libcuda.so.1 /etc/ld.so.cache
   [[ $(crictl exec "$g" cat /etc/ld.so.conf.d/00-ch-cri-cdi.conf) \
      == /usr/local/nvidia/lib64 ]]
   # NVIDIA_VISIBLE_DEVICES=all (the device plugin's env strategy) gives
   # the GPU too; "void" gives nothing, as no request does.
   crictl exec "$e" stat -c %F /dev/nvidia0
   run crictl exec "$n" ls /dev/nvidia0
   [[ $status -ne 0 ]]
   run crictl exec "$n" ls /usr/local/nvidia
   [[ $status -ne 0 ]]
}

@test 'a host device reached through a volume is refused by the devices cgroup' {
   [[ -z ${CH_CRI_TEST_SERVER_USER:-} ]] \
      || skip "the devices cgroup needs a root ch-cri (cgroup v1)"
   [[ -f /sys/fs/cgroup/devices/devices.allow ]] \
      || skip "no cgroup v1 devices controller"
   # FUSE's device (10:229): anyone may open it, unless the cgroup says no.
   mknod "${work}/fuse" c 10 229
   chmod 666 "${work}/fuse"
   sh -c ": < ${work}/fuse"
   pod_run d5
   c=$(ctr_run d5 c "\"mounts\": [{\"container_path\": \"/mnt/fuse\", \"host_path\": \"${work}/fuse\"}]")
   run crictl exec "$c" sh -c ': < /mnt/fuse'
   echo "$output"
   [[ $status -ne 0 && $output == *"Operation not permitted"* ]]
   # Given as a device, it may be opened.
   d=$(ctr_run d5 d "\"devices\": [{\"container_path\": \"/dev/fuse\", \"host_path\": \"${work}/fuse\", \"permissions\": \"rw\"}]")
   crictl exec "$d" sh -c ': < /dev/fuse'
}
