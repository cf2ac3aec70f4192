# Durability of the image service: ch-cri killed with SIGKILL during pulls
# restarts, serves, and leaves Charliecloud's storage intact.

load ../common

setup () {
   scope standard
   [[ -n ${CH_CRI_TEST_CONFIG:-} ]] && ok=yes || ok=no
   prereq_or_skip 'test registry config ($CH_CRI_TEST_CONFIG)' "$ok"
   d=${CH_CRI_TEST_OUT:-/tmp}/restart
   mkdir -p "$d"
   sock=${d}/ch-cri.sock
}

teardown () {
   server_stop "$d" KILL || true
}

img=registry.k8s.io/e2e-test-images/nginx:1.14-2

@test 'SIGKILL during pulls: restart serves, storage not corrupt' {
   for delay in 0.05 0.2 0.4 0.7 1.0; do
      server_start "$d"
      crictl rmi "$img" 2>/dev/null || true
      crictl pull "$img" > /dev/null 2>&1 &
      sleep "$delay"
      server_stop "$d" KILL
      wait || true
      # The killed server's Charliecloud worker and its pull die with it
      # (PR_SET_PDEATHSIG; setpriv --pdeathsig for ch-image).
      for (( i = 0; i < 50; i++ )); do
         pgrep -f "(chworker.py .*|ch-image -s )${d}/storage" >/dev/null \
            || break
         sleep 0.1
      done
      run ! pgrep -f "(chworker.py .*|ch-image -s )${d}/storage"
      server_start "$d"
      crictl images > /dev/null
      # No half image: either the pull finished (complete and listed) or
      # nothing of it is left.
      storage_clean "${d}/storage"
      for i in "${d}"/storage/img/ch-cri%*; do
         [[ -e $i ]] || continue
         [[ -f ${i}/ch/config.pulled.json ]]
      done
      server_stop "$d" TERM
   done
   # Charliecloud itself still reads the storage (ch-image, if installed:
   # ch-cri needs only Charliecloud's library).
   if command -v ch-image > /dev/null; then
      USER=$(id -un) "$PYTHON" "$(command -v ch-image)" -s "${d}/storage" list
   fi
   # And a pull after all that works and gives the right image.
   server_start "$d"
   crictl pull "$img"
   crictl inspecti "$img" | jq -e '.info.imageSpec.config.Cmd | index("daemon off;")'
}

@test 'SIGKILL after a pull: the image survives with the same ID' {
   server_start "$d"
   crictl pull registry.k8s.io/pause:3.9
   id=$(crictl inspecti registry.k8s.io/pause:3.9 | jq -r .status.id)
   server_stop "$d" KILL
   server_start "$d"
   [[ $(crictl inspecti registry.k8s.io/pause:3.9 | jq -r .status.id) == "$id" ]]
   [[ $(crictl inspecti "$id" | jq -r '.status.repoTags[0]') == registry.k8s.io/pause:3.9 ]]
}

# The PID of the server's Charliecloud worker.
worker_of () {
   pgrep -f "chworker.py .*${d}/storage" | head -n 1
}

# Pull $img in the background while the Charliecloud worker $worker runs
# it in a forked child, and, as soon as that child exists, SIGKILL $1
# ("child": the pull; "worker": the worker itself); retried (bounded) if
# the pull ended first. Its output goes to $d/pull.out; fails if nothing
# was killed.
pull_kill () {
   local try i kid
   for (( try = 0; try < 10; try++ )); do
      crictl rmi "$img" 2>/dev/null || true
      crictl pull "$img" > "${d}/pull.out" 2>&1 &
      for (( i = 0; i < 400; i++ )); do
         kid=$(pgrep -P "$worker" | head -n 1)
         if [[ -n $kid ]]; then
            [[ $1 == child ]] || kid=$worker
            kill -KILL "$kid"
            wait "$!" || true
            cat "${d}/pull.out"
            return 0
         fi
         sleep 0.005
      done
      wait "$!" || true
   done
   return 1
}

@test 'SIGKILL of a pull in the Charliecloud worker: an error, nothing left' {
   server_start "$d"
   worker=$(worker_of)
   [[ -n $worker ]]
   # The pull is a forked child of the worker: kill it once it runs.
   pull_kill child
   # A clean error, not INTERNAL; no half image; the same worker goes on.
   run ! grep -q Internal "${d}/pull.out"
   storage_clean "${d}/storage"
   [[ $(worker_of) == "$worker" ]]
   crictl pull "$img"
   # A killed worker is started again at the next pull.
   kill -KILL "$worker"
   crictl rmi "$img"
   crictl pull "$img"
   [[ $(worker_of) != "$worker" ]]
}

@test 'the Charliecloud worker killed during a pull: UNAVAILABLE, not INTERNAL' {
   server_start "$d"
   worker=$(worker_of)
   [[ -n $worker ]]
   pull_kill worker
   run ! grep -q Internal "${d}/pull.out"
   grep -q Unavailable "${d}/pull.out"
   storage_clean "${d}/storage"
   crictl pull "$img"
}
