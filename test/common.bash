# Shell helpers shared by test/run and the bats files (source it).
# shellcheck shell=bash

test_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "${test_dir}/.." && pwd)
: "${CH_CRI_BIN:=${top}/bin/ch-cri}"
: "${CH_CRI_TEST_CACHE:=/var/cache/ch-cri-test}"
: "${CH_CRI_TEST_USER:=chcri-test}"
: "${CRICTL:=${CH_CRI_TEST_CACHE}/bin/crictl}"
: "${CRITEST:=${CH_CRI_TEST_CACHE}/bin/critest}"
export CH_CRI_BIN CH_CRI_TEST_CACHE CH_CRI_TEST_USER CRICTL CRITEST

# Loaded by bats: "run ! CMD" (a bare "! CMD" never fails a bats test).
if declare -F bats_require_minimum_version > /dev/null; then
   bats_require_minimum_version 1.5.0
fi

# crictl against the server whose socket is $1, with both endpoints named
# (a missing one would silently come from some crictl.yaml).
crictl_ () {
   local sock=$1; shift
   "$CRICTL" --runtime-endpoint "unix://${sock}" \
             --image-endpoint "unix://${sock}" "$@" 2> >(grep -v 'level=warn' 1>&2)
}

# crictl against the server at $sock, which each bats file's setup sets
# (70_kubelet, with servers of its own, has its own crictl).
crictl () {
   crictl_ "$sock" "$@"
}

# Print the PodSandboxConfig (JSON) of pod $1: namespace $2, log directory
# $3/logs/$1, label ch-cri-test=$4, and the members of JSON object $5.
pod_config () {
   local x=${5:-}
   [[ -n $x ]] || x='{}'
   jq -n --arg n "$1" --arg ns "$2" --arg l "$3/logs/$1" --arg t "$4" \
         --argjson x "$x" \
      '{metadata: {name: $n, namespace: $ns, uid: ($n + "-uid")},
        log_directory: $l, labels: {"ch-cri-test": $t}} + $x'
}

# Print the ContainerConfig (JSON) of container $1: busybox, log $1.log,
# label ch-cri-test=$2, the members of JSON object $3 (an "image" member
# replaces busybox), and the command that follows ($4 ...), if any.
ctr_config () {
   local n=$1 t=$2 x=${3:-} cmd='[]'
   shift 3
   [[ -n $x ]] || x='{}'
   # The command as a JSON list, from NUL-separated words: jq would take
   # words such as -c, even after --args, as its own options.
   [[ $# -eq 0 ]] || cmd=$(printf '%s\0' "$@" \
      | jq -Rs 'split("\u0000") | if (.[-1] == "") then .[:-1] else . end')
   jq -n --arg n "$n" --arg t "$t" --argjson x "$x" --argjson cmd "$cmd" \
      '{metadata: {name: $n},
        image: {image: "registry.k8s.io/e2e-test-images/busybox:1.29-2"},
        log_path: ($n + ".log"), labels: {"ch-cri-test": $t}}
       + (if ($cmd | length) > 0 then {command: $cmd} else {} end) + $x'
}

# Write the config of container $2 (busybox, "sleep 600", labelled
# ch-cri-test=$3) in pod $1 (its ID in $work/$1.id, its config in
# $work/$1.json) with JSON members $4 added, create it, and print what
# crictl printed (its ID, or the error).
ctr_sleep_create () {
   ctr_config "$2" "$3" "{${4:-}}" sleep 600 > "${work}/$2.json"
   crictl create "$(cat "${work}/$1.id")" "${work}/$2.json" \
          "${work}/$1.json" 2>&1
}

# Run "$@" (a ctr_*create command), then start the container it made;
# print its ID, or the creation's error (and fail).
ctr_started () {
   local id
   id=$("$@") || { echo "$id"; return 1; }
   crictl start "$id" > /dev/null || return 1
   echo "$id"
}

# Print the shell files git tracks under $top: *.bash and *.sh, and any
# other whose first line is a sh or bash #! (bats files are left to bats).
shell_files () {
   local f line
   git -C "$top" ls-files -z | while IFS= read -r -d '' f; do
      [[ -f ${top}/${f} ]] || continue
      case $f in
         *.bats) continue ;;
         *.bash|*.sh) echo "$f"; continue ;;
      esac
      IFS= read -r line < "${top}/${f}" 2>/dev/null || continue
      [[ $line =~ ^\#!.*[/\ ](ba)?sh([[:space:]]|$) ]] && echo "$f"
   done
}

# Start a ch-cri whose files live in directory $1 (socket $1/ch-cri.sock,
# state $1/state, storage $1/storage, log $1/log, pid $1/pid), optionally as
# user $2, with the test config $CH_CRI_TEST_CONFIG if set. Extra ch-cri
# arguments may follow "--". Waits (bounded) until the socket answers. As
# a user it sees a /dev/net/tun it may open (test/bin/with-tun), as on
# most hosts, unless CH_CRI_TEST_TUN=0.
server_start () {
   local dir=$1 user=${2:-}
   shift 2 || shift $#
   [[ ${1:-} == -- ]] && shift
   local -a cmd=("$CH_CRI_BIN" --socket "${dir}/ch-cri.sock"
                 --state-dir "${dir}/state" --storage "${dir}/storage"
                 --log-level verbose)
   [[ -n ${CH_CRI_TEST_CONFIG:-} ]] && cmd+=(--config "$CH_CRI_TEST_CONFIG")
   cmd+=("$@")
   mkdir -p "$dir"
   if [[ -n $user ]]; then
      chown "$user" "$dir"
      cmd=(setpriv --reuid="$user" --regid="$user" --init-groups
           --reset-env "${cmd[@]}")
      [[ ${CH_CRI_TEST_TUN:-1} == 0 ]] \
         || cmd=("${test_dir}/bin/with-tun" "${dir}/tun" "${cmd[@]}")
   fi
   setsid "${cmd[@]}" >> "${dir}/log" 2>&1 < /dev/null &
   echo $! > "${dir}/pid"
   local i
   for (( i = 0; i < 300; i++ )); do
      # ch-cri logs "serving on" once the socket has its final mode.
      if grep -q "serving on ${dir}/ch-cri.sock (pid $(cat "${dir}/pid"))" \
              "${dir}/log" 2>/dev/null; then
         return 0
      fi
      kill -0 "$(cat "${dir}/pid")" 2>/dev/null || break
      sleep 0.1
   done
   echo "ch-cri did not start; log:" 1>&2
   tail -n 20 "${dir}/log" 1>&2
   return 1
}

# Stop the ch-cri started by server_start in $1 with signal $2 (default
# TERM) and wait (bounded) for it to exit.
# Succeed once storage DIR holds no pull's scratch storage and no trash
# (ch-cri deletes a pull's scratch storage in a thread after the pull
# answers): waits up to 5 s.
storage_clean () {
   local i p left
   for (( i = 0; i < 50; i++ )); do
      left=()
      for p in "$1"/img/ch-cri%pull-* "$1"/img/ch-cri%trash-*; do
         [[ -e $p ]] && left+=("$p")
      done
      (( ${#left[@]} == 0 )) && return 0
      sleep 0.1
   done
   printf 'left in storage: %s\n' "${left[@]}" 1>&2
   return 1
}

server_stop () {
   local dir=$1 sig=${2:-TERM} pid i
   [[ -f ${dir}/pid ]] || return 0
   pid=$(cat "${dir}/pid")
   kill "-${sig}" "$pid" 2>/dev/null || true
   for (( i = 0; i < 100; i++ )); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
   done
   rm -f "${dir}/pid"
   ! kill -0 "$pid" 2>/dev/null
}

# Skip the current bats test when a prerequisite is missing, but fail in
# CI: there a missing prerequisite is a bug in .ci/run, not a reason to pass.
prereq_or_skip () {
   local what=$1 ok=$2
   if [[ $ok != yes ]]; then
      if [[ -n ${CI:-} ]]; then
         echo "prerequisite missing in CI: ${what}" 1>&2
         return 1
      fi
      skip "prerequisite missing: ${what}"
   fi
}

# Point $sock at the live ch-cri of $CH_CRI_TEST_SOCKET, or skip (fail in
# CI) if there is none.
live_server_or_skip () {
   local ok=no
   [[ -S ${CH_CRI_TEST_SOCKET:-} ]] && ok=yes
   prereq_or_skip "live ch-cri (\$CH_CRI_TEST_SOCKET)" "$ok" || return 1
   sock=$CH_CRI_TEST_SOCKET
}

# The bats scope mechanism: skip tests wider than $CH_CRI_TEST_SCOPE.
scope () {
   local want=$1 have=${CH_CRI_TEST_SCOPE:-full}
   local -A rank=([quick]=1 [standard]=2 [full]=3)
   if (( ${rank[$want]} > ${rank[$have]} )); then
      skip "scope ${want} > ${have}"
   fi
}

# Make a scratch directory $work (/tmp/ch-cri-$1.*) that the server's user
# may write: pod log directories and host paths go there.
work_make () {
   work=$(mktemp -d "/tmp/ch-cri-${1}.XXXXXX")
   chmod 755 "$work"
   [[ -z ${CH_CRI_TEST_SERVER_USER:-} ]] \
      || chown "$CH_CRI_TEST_SERVER_USER" "$work"
}

# Stop and remove every pod of the server at $sock (servers of a bats
# file's own, in its teardown).
pods_remove () {
   local p
   for p in $(crictl_ "$sock" pods -q 2>/dev/null); do
      crictl_ "$sock" stopp "$p" > /dev/null 2>&1
      crictl_ "$sock" rmp "$p" > /dev/null 2>&1
   done
}

# Stop and remove the pods labelled ch-cri-test=$1 on the server at $sock,
# then remove $work.
work_remove () {
   local p
   for p in $(crictl_ "$sock" pods -q --label "ch-cri-test=$1" 2>/dev/null); do
      crictl_ "$sock" stopp "$p" > /dev/null 2>&1 || true
      crictl_ "$sock" rmp "$p" > /dev/null 2>&1 || true
   done
   rm -rf "$work"
}
