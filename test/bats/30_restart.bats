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
      # The killed server's ch-image dies with it (setpriv --pdeathsig).
      for (( i = 0; i < 50; i++ )); do
         pgrep -f "ch-image -s ${d}/storage" >/dev/null || break
         sleep 0.1
      done
      ! pgrep -f "ch-image -s ${d}/storage"
      server_start "$d"
      crictl images > /dev/null
      # No half image: either the pull finished (complete and listed) or
      # nothing of it is left.
      ! ls "${d}/storage/img" | grep -E 'ch-cri%(pull|trash)-'
      for i in "${d}"/storage/img/ch-cri%*; do
         [[ -e $i ]] || continue
         [[ -f ${i}/ch/config.pulled.json ]]
      done
      server_stop "$d" TERM
   done
   # Charliecloud itself still reads the storage.
   USER=$(id -un) "$PYTHON" "$(command -v ch-image)" -s "${d}/storage" list
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
