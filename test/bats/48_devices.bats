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

@test 'CDI: a vendor device by annotation, its env, nodes and mounts' {
   [[ -w /var/run/cdi || ! -e /var/run/cdi ]] && [[ $(id -u) -eq 0 ]] \
      || skip "the test writes its vendor spec to /var/run/cdi as root"
   mkdir -p /var/run/cdi "${work}/vlib"
   echo lib > "${work}/vlib/libvendor.so"
   chmod -R a+rX "${work}/vlib"
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
   # A name no spec defines fails CreateContainer, named.
   run ctr_create d3 cx '"annotations": {"cdi.k8s.io/test": "ch-cri-test.example/dev=nope"}'
   [[ $status -ne 0 && $output == *InvalidArgument* ]]
   [[ $output == *"unresolvable CDI device ch-cri-test.example/dev=nope"* ]]
}
