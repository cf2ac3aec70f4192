# SquashFS images (issue 17): an image kept as one SquashFS file, mounted
# once per node for all its containers, as root (the kernel's squashfs, or
# squashfuse) and as an ordinary user (squashfuse in ch-cri's namespace,
# where /dev/fuse may be opened); kill -9 of ch-cri and of squashfuse; a
# store's SquashFS images. Starts its own servers.

load ../common

setup_file () {
   [[ $(id -u) -eq 0 ]] || return 0
   export sq_work
   sq_work=$(mktemp -d /tmp/ch-cri-squash.XXXXXX)
   chmod 755 "$sq_work"
}

teardown_file () {
   [[ -n ${sq_work:-} ]] || return 0
   local d
   for d in "$sq_work"/*/; do
      d=${d%/}
      [[ -S ${d}/ch-cri.sock ]] || continue
      sock=${d}/ch-cri.sock pods_remove
      server_stop "$d"
   done
   # Left by a failed test: squashfuse of ours, and the users' holders.
   pkill -9 -f "squashfuse .*${sq_work}" || true
   pkill -9 -f "squashns.py ${sq_work}" || true
   grep -o " ${sq_work}/[^ ]*" /proc/self/mountinfo | sort -r \
      | xargs -r -n1 umount -l 2>/dev/null || true
   rm -rf "$sq_work"
}

setup () {
   scope standard
   [[ $(id -u) -eq 0 ]] || skip "the test runs root and user servers"
   [[ -n ${CH_CRI_TEST_CONFIG:-} ]] || skip "needs the test registry config"
   prereq_or_skip "mksquashfs (squashfs-tools)" \
      "$(command -v mksquashfs > /dev/null && echo yes)"
   prereq_or_skip "squashfuse" \
      "$(command -v squashfuse > /dev/null && echo yes)"
   bb=registry.k8s.io/e2e-test-images/busybox:1.29-2
   bb2=docker.io/library/busybox:latest
   ann='{"annotations": {"ch-cri.charliecloud.io/image-format": "squash"}}'
}

# Start server $1 (a name) as user $2 (empty: root) with the top-level
# settings $3 (TOML lines) before the test configuration; sock is its
# socket. With CH_CRI_TEST_FUSE=1 in the environment, a user's ch-cri gets
# a /dev/fuse it may open (see test/bin/with-tun).
sq_server () {
   local d=${sq_work}/$1
   sock=${d}/ch-cri.sock
   [[ -f ${d}/pid ]] && return 0   # running (server_stop removes it)
   { printf '%s\n' "${3:-}"; cat "$CH_CRI_TEST_CONFIG"; } \
      > "${sq_work}/config-$1.toml"
   chmod 644 "${sq_work}/config-$1.toml"
   CH_CRI_TEST_CONFIG=${sq_work}/config-$1.toml server_start "$d" ${2:-}
}

# A new pod $1 (annotations: JSON members $2) on server dir $d; print its ID.
sq_pod () {
   local w=${sq_work}/w-$1
   mkdir -p "$w"
   chmod 777 "$w"
   pod_config "$1" ch-cri-test "$w" squash "${2:-}" > "${w}/pod.json"
   crictl_ "$sock" runp "${w}/pod.json"
}

# Start a sleeping container $2 (image $3, default busybox) in pod $1 (made
# by sq_pod); print its ID.
sq_ctr () {
   local w=${sq_work}/w-$1 x='' c
   [[ -n ${3:-} ]] && x="{\"image\": {\"image\": \"$3\"}}"
   ctr_config "$2" squash "$x" sleep 600 > "${w}/$2.json"
   c=$(crictl_ "$sock" create "$(crictl_ "$sock" pods -q --name "$1")" \
          "${w}/$2.json" "${w}/pod.json") || return 1
   crictl_ "$sock" start "$c" > /dev/null || return 1
   echo "$c"
}

# Print the number of SquashFS mounts of server $1 that process $2 (default:
# us) sees.
sq_mounts () {
   grep -c " ${sq_work}/$1/state/squash/[0-9a-f]* " \
      "/proc/${2:-self}/mountinfo" || true
}

# Remove container $1 of the current server.
ctr_gone () {
   crictl_ "$sock" stop -t 0 "$1" > /dev/null
   crictl_ "$sock" rm "$1" > /dev/null
}

@test 'squash: a pod annotation pulls the image as one SquashFS file' {
   sq_server root
   w=${sq_work}/w-a
   mkdir -p "$w"
   pod_config a ch-cri-test "$w" squash "$ann" > "${w}/pod.json"
   crictl_ "$sock" pull --pod-config "${w}/pod.json" "$bb"
   id=$(crictl_ "$sock" images -q "$bb")
   id=${id#sha256:}
   # Only the file and its config: no directory tree.
   run ls "${sq_work}/root/storage/img"
   echo "$output"
   [[ $output == "ch-cri%${id}.sqfs"$'\n'"ch-cri%${id}.sqfs.json" ]]
   crictl_ "$sock" inspecti "$bb" | jq -e '.info.forms == ["squash"]'
   # Status says SquashFS images can be mounted, and how.
   crictl_ "$sock" info \
      | jq -e '.info.squashfs | .mountable and .mounter == "kernel"'
}

@test 'squash: containers of an image share one mount, not its writes' {
   sq_server root
   sq_pod b "$ann" > /dev/null
   c1=$(sq_ctr b c1)
   c2=$(sq_ctr b c2)
   [[ $(sq_mounts root) -eq 1 ]]
   crictl_ "$sock" exec "$c1" sh -c 'echo one > /etc/mine; echo x > /tmp/x'
   [[ $(crictl_ "$sock" exec "$c1" cat /etc/mine) == one ]]
   run crictl_ "$sock" exec "$c2" cat /etc/mine
   [[ $status -ne 0 ]]
   # The root file system is the container's overlay over the mount.
   crictl_ "$sock" exec "$c1" grep -q ' / / .* overlay ' /proc/self/mountinfo
   ctr_gone "$c1"
   [[ $(sq_mounts root) -eq 1 ]]
   ctr_gone "$c2"
   # The last container gone, so is the mount.
   [[ $(sq_mounts root) -eq 0 ]]
   grep -q "detached SquashFS mount" "${sq_work}/root/log"
}

@test 'squash: a directory image runs from SquashFS in a SquashFS pod' {
   sq_server root
   crictl_ "$sock" pull "$bb2"
   sq_pod c "$ann" > /dev/null
   c=$(sq_ctr c c1 "$bb2")
   [[ $(crictl_ "$sock" exec "$c" echo ok) == ok ]]
   [[ $(sq_mounts root) -eq 1 ]]
   # The directory stays, for the pods that use it.
   crictl_ "$sock" inspecti "$bb2" | jq -e '.info.forms == ["dir", "squash"]'
   ctr_gone "$c"
}

@test 'squash: containers survive kill -9 of ch-cri; the mount is found again' {
   sq_server root
   sq_pod d "$ann" > /dev/null
   c=$(sq_ctr d c1)
   server_stop "${sq_work}/root" KILL
   [[ $(sq_mounts root) -eq 1 ]]
   sq_server root
   grep -q "SquashFS images: 1 mounted, for 1 containers" \
      "${sq_work}/root/log"
   [[ $(crictl_ "$sock" inspect "$c" | jq -r .status.state) \
         == CONTAINER_RUNNING ]]
   [[ $(crictl_ "$sock" exec "$c" echo ok) == ok ]]
   ctr_gone "$c"
   [[ $(sq_mounts root) -eq 0 ]]
}

@test 'squash: kill -9 of squashfuse: the container is reported, not hung' {
   # Root with squashfuse, and SquashFS the default for every pull.
   sq_server rootfuse '' $'squash_mounter = "fuse"\nimage_format = "squash"'
   crictl_ "$sock" pull "$bb"
   crictl_ "$sock" inspecti "$bb" | jq -e '.info.forms == ["squash"]'
   sq_pod e > /dev/null
   c1=$(sq_ctr e c1)
   [[ $(sq_mounts rootfuse) -eq 1 ]]
   pkill -9 -f "squashfuse .* ${sq_work}/rootfuse/state/squash/"
   # The container is reported (its files are gone: it may die of it).
   timeout 10 "$CRICTL" --runtime-endpoint "unix://${sock}" inspect "$c1" \
      | jq -e '.status.state | test("CONTAINER_(RUNNING|EXITED)")'
   # The next container finds the mount dead and mounts again.
   c2=$(sq_ctr e c2)
   [[ $(crictl_ "$sock" exec "$c2" echo ok) == ok ]]
   grep -q "is dead (Transport endpoint is not connected); mounting again" \
      "${sq_work}/rootfuse/log"
   [[ $(sq_mounts rootfuse) -eq 1 ]]
   ctr_gone "$c1"
   ctr_gone "$c2"
   [[ $(sq_mounts rootfuse) -eq 0 ]]
}

@test 'squash: an ordinary user without /dev/fuse gets a clear error' {
   [[ $(stat -c %a /dev/fuse) == 600 ]] || skip "/dev/fuse is open here"
   sq_server usernofuse "$CH_CRI_TEST_USER"
   crictl_ "$sock" info | jq -e '.info.squashfs.mountable == false'
   w=${sq_work}/w-f
   mkdir -p "$w"
   chmod 777 "$w"
   pod_config f ch-cri-test "$w" squash "$ann" > "${w}/pod.json"
   run crictl_ "$sock" pull --pod-config "${w}/pod.json" "$bb"
   echo "$output"
   [[ $status -ne 0 && $output == *FailedPrecondition* ]]
   [[ $output == *"/dev/fuse can't be opened by this user (mode 600)"* ]]
}

@test 'squash: an ordinary user: one squashfuse for all containers, kill -9' {
   CH_CRI_TEST_FUSE=1 sq_server user "$CH_CRI_TEST_USER"
   crictl_ "$sock" info \
      | jq -e '.info.squashfs | .mountable and .mounter == "fuse"'
   sq_pod g "$ann" > /dev/null
   crictl_ "$sock" pull --pod-config "${sq_work}/w-g/pod.json" "$bb"
   crictl_ "$sock" inspecti "$bb" | jq -e '.info.forms == ["squash"]'

   c1=$(sq_ctr g c1)
   c2=$(sq_ctr g c2)
   [[ $(pgrep -c -u "$CH_CRI_TEST_USER" squashfuse) -eq 1 ]]
   # Mounted in ch-cri's namespace, not the host's.
   [[ $(sq_mounts user) -eq 0 ]]
   holder=$(jq .pid "${sq_work}/user/state/squash-holder.json")
   [[ $(sq_mounts user "$holder") -eq 1 ]]
   crictl_ "$sock" exec "$c1" sh -c 'echo x > /tmp/x; ls /bin/sh'
   server_stop "${sq_work}/user" KILL
   CH_CRI_TEST_FUSE=1 sq_server user "$CH_CRI_TEST_USER"
   grep -q "SquashFS images: 1 mounted, for 2 containers" \
      "${sq_work}/user/log"
   [[ $(crictl_ "$sock" exec "$c2" echo ok) == ok ]]
   ctr_gone "$c1"
   ctr_gone "$c2"
   [[ $(sq_mounts user "$holder") -eq 0 ]]
   for (( i = 0; i < 50; i++ )); do
      pgrep -u "$CH_CRI_TEST_USER" -x squashfuse > /dev/null || break
      sleep 0.1
   done
   run ! pgrep -u "$CH_CRI_TEST_USER" -x squashfuse
}

@test 'squash: a store of SquashFS files serves root and a user, uncopied' {
   st=${sq_work}/store
   "$CH_CRI_BIN" --config "$CH_CRI_TEST_CONFIG" store add --squash "$st" "$bb"
   "$CH_CRI_BIN" store list "$st" | grep -q " squash .*${bb}"
   [[ -z $(find "${st}/storage/img" -mindepth 1 -type d) ]]
   for who in storeroot storeuser; do
      u=
      [[ $who == storeuser ]] && u=$CH_CRI_TEST_USER
      CH_CRI_TEST_FUSE=1 sq_server "$who" "$u" "image_stores = [\"${st}\"]"
      sq_pod "h-${who}" "$ann" > /dev/null
      c=$(sq_ctr "h-${who}" c1)
      [[ $(crictl_ "$sock" exec "$c" echo ok) == ok ]]
      # Nothing of the image in the server's own storage.
      [[ -z $(ls -A "${sq_work}/${who}/storage/img") ]]
      ctr_gone "$c"
   done
}
