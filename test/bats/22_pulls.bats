# Pulls in Charliecloud's library, in ch-cri's worker (issue 17): several
# at once, each in a storage of its own sharing downloaded layers, and a
# pull that makes no progress killed. A ch-cri of its own (its config sets
# a short progress timeout).

load ../common

setup () {
   scope standard
   [[ -n ${CH_CRI_TEST_CONFIG:-} ]] && ok=yes || ok=no
   prereq_or_skip 'test registry config ($CH_CRI_TEST_CONFIG)' "$ok"
   d=${CH_CRI_TEST_OUT:-/tmp}/pulls
   rm -rf "$d"
   mkdir -p "$d"
   chmod 755 "$d"
   sock=${d}/ch-cri.sock
   { echo 'pull_progress_timeout = 3'; cat "$CH_CRI_TEST_CONFIG"; } \
      > "${d}/config.toml"
   CH_CRI_TEST_CONFIG=${d}/config.toml server_start "$d"
}

teardown () {
   [[ -z ${stall_pid:-} ]] || kill "$stall_pid" 2>/dev/null || true
   [[ -z ${bad_pid:-} ]] || kill "$bad_pid" 2>/dev/null || true
   server_stop "$d" KILL || true
}

imgs=(registry.k8s.io/e2e-test-images/busybox:1.29-2
      registry.k8s.io/e2e-test-images/httpd:2.4.39-4
      registry.k8s.io/e2e-test-images/nginx:1.14-2
      registry.k8s.io/pause:3.9
      docker.io/library/busybox:latest)

@test 'pulls: five images at once, and one image by five at once' {
   pids=()
   for i in "${imgs[@]}"; do
      crictl pull "$i" > "${d}/$(basename "$i").out" 2>&1 &
      pids+=($!)
   done
   for p in "${pids[@]}"; do wait "$p"; done
   [[ $(crictl images -q | wc -l) -eq 5 ]]
   # They ran at once: their log lines interleave with no storage lock
   # retry; each left its scratch storage nowhere.
   run ! grep -q "locked by another process" "${d}/log"
   storage_clean "${d}/storage"
   # Layers downloaded are shared: the next pull of one finds them.
   ls "${d}/storage/dlcache" | grep -q '\.tar\.gz$'
   # One image by five callers: one download, one image.
   crictl rmi "${imgs[1]}"
   pids=()
   for i in 1 2 3 4 5; do
      crictl pull "${imgs[1]}" > "${d}/same-${i}.out" 2>&1 &
      pids+=($!)
   done
   for p in "${pids[@]}"; do wait "$p"; done
   [[ $(sort -u "${d}"/same-*.out | wc -l) -eq 1 ]]
   [[ $(grep -c "pulled ${imgs[1]} " "${d}/log") -eq 2 ]]
   for i in "${imgs[@]}"; do
      crictl inspecti "$i" > /dev/null
   done
}

@test 'pulls: a registry that never answers is given up after the progress timeout' {
   # A TCP listener that accepts and never says a word (no TLS either).
   "$PYTHON" -c '
import socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(16)
print(s.getsockname()[1], flush=True)
held = []
s.settimeout(1)
t0 = time.time()
while time.time() - t0 < 60:
   try:
      held.append(s.accept()[0])
   except socket.timeout:
      pass
' > "${d}/stall.port" &
   stall_pid=$!
   for (( i = 0; i < 50; i++ )); do
      [[ -s ${d}/stall.port ]] && break
      sleep 0.1
   done
   port=$(cat "${d}/stall.port")
   t0=$SECONDS
   run crictl pull "127.0.0.1:${port}/stall/x:1"
   echo "$output"
   [[ $status -ne 0 && $output == *"made no progress for 3 s"* ]]
   (( SECONDS - t0 < 30 ))
   storage_clean "${d}/storage"
   # The worker goes on.
   crictl pull registry.k8s.io/pause:3.9
}

@test 'pulls: a layer whose tar ends early (umoci insert) is mended' {
   img=docker.io/ch-cri-test/umoci-insert:1
   crictl pull "$img"
   id=$(crictl inspecti "$img" | jq -r .status.id)
   [[ $(cat "${d}/storage/img/ch-cri%${id#sha256:}/hello.txt") \
      == "inserted by umoci" ]]
   # The busybox underneath is whole too.
   [[ -x ${d}/storage/img/ch-cri%${id#sha256:}/bin/busybox ]]
}

@test 'pulls: the layers of one image are fetched at once' {
   img=registry.k8s.io/e2e-test-images/nginx:1.14-2
   rlog=${CH_CRI_TEST_CACHE}/registry/registry.log
   [[ -f $rlog ]] || skip "no registry log at ${rlog}"
   crictl rmi "$img" > /dev/null 2>&1 || true
   rm -f "${d}"/storage/dlcache/*
   n0=$(wc -l < "$rlog")
   crictl pull "$img"
   # Each fetching thread has a connection of its own; Charliecloud alone
   # uses one for the whole image.
   addrs=$(tail -n +"$(( n0 + 1 ))" "$rlog" \
           | grep 'uri="/v2/e2e-test-images/nginx/blobs/' \
           | grep -o 'remoteaddr="[^"]*"' | sort -u | wc -l)
   echo "connections: ${addrs}"
   (( addrs >= 3 ))
   crictl inspecti "$img" | jq -e '.info.imageSpec.config.Cmd | index("daemon off;")'
}

@test 'pulls: a layer whose bytes are not its digest is refused' {
   # A registry (or mirror) that serves other bytes for a layer than the
   # manifest names: Charliecloud 0.31 would unpack them.
   reg=${CH_CRI_TEST_CACHE}/registry
   "$PYTHON" "${BATS_TEST_DIRNAME}/../bin/bad-registry" "${reg}/ca.pem" \
      "${reg}/key.pem" "${d}/bad.port" &
   bad_pid=$!
   for (( i = 0; i < 50; i++ )); do
      [[ -s ${d}/bad.port ]] && break
      sleep 0.1
   done
   port=$(cat "${d}/bad.port")
   server_stop "$d"
   printf '[registry."127.0.0.1:%s"]\nca = "%s/ca.pem"\n' "$port" "$reg" \
      >> "${d}/config.toml"
   CH_CRI_TEST_CONFIG=${d}/config.toml server_start "$d"
   run crictl pull "127.0.0.1:${port}/bad/layer:1"
   echo "$output"
   [[ $status -ne 0 && $output == *"not to its digest"* ]]
   # Nothing of it kept: no image, no scratch storage, no layer.
   [[ -z $(crictl images -q) ]]
   storage_clean "${d}/storage"
   run ! ls "${d}/storage/dlcache/"*.tar.gz
}

@test 'pulls: removing an image deletes its layers, not those another uses' {
   dl=${d}/storage/dlcache
   blobs () { ls "$dl" | grep -E '^[0-9a-f]{64}\.(tar\.gz|json)$' || true; }
   bb=registry.k8s.io/e2e-test-images/busybox:1.29-2
   crictl pull "$bb"
   s1=$(blobs)
   [[ -n $s1 ]]
   crictl pull registry.k8s.io/e2e-test-images/nginx:1.14-2
   [[ $(blobs | wc -l) -gt $(echo "$s1" | wc -l) ]]
   crictl rmi registry.k8s.io/e2e-test-images/nginx:1.14-2
   [[ $(blobs) == "$s1" ]]
   # docker.io/library/busybox shares its layer with ${bb}: kept.
   crictl pull docker.io/library/busybox:latest
   crictl rmi docker.io/library/busybox:latest
   layer=$(echo "$s1" | grep 'tar\.gz$')
   [[ -f ${dl}/${layer} ]]
   crictl rmi "$bb"
   [[ -z $(blobs) ]]
   # What is left: nothing of the pulls either.
   storage_clean "${d}/storage"
}
