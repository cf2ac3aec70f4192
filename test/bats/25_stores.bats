# Read-only image stores (issue 17): a store filled by "ch-cri store add",
# shared by a root ch-cri and an unprivileged one, each with its own empty
# storage; neither downloads a stored image nor may remove it, and a store
# that goes away takes its images with it but not the containers running.
# Starts its own servers (the store is in their configuration).

load ../common

setup_file () {
   [[ $(id -u) -eq 0 ]] || return 0
   export store_work
   store_work=$(mktemp -d /tmp/ch-cri-stores.XXXXXX)
   chmod 755 "$store_work"
}

teardown_file () {
   [[ -n ${store_work:-} ]] || return 0
   local d
   for d in root user; do
      [[ -S ${store_work}/${d}/ch-cri.sock ]] || continue
      sock=${store_work}/${d}/ch-cri.sock pods_remove
      server_stop "${store_work}/${d}"
   done
   rm -rf "$store_work"
}

setup () {
   scope standard
   [[ $(id -u) -eq 0 ]] || skip "the test runs a root and a user's ch-cri"
   [[ -n ${CH_CRI_TEST_CONFIG:-} ]] || skip "needs the test registry config"
   st=${store_work}/store
   bb=registry.k8s.io/e2e-test-images/busybox:1.29-2
}

# Start server $1 (root or user) with the store in its configuration.
store_server () {
   local d=${store_work}/$1
   [[ -S ${d}/ch-cri.sock ]] && return 0
   # image_stores is a top-level key: it must come before any table.
   { printf 'image_stores = ["%s"]\n' "$st"; cat "$CH_CRI_TEST_CONFIG"; } \
      > "${store_work}/config-$1.toml"
   chmod 644 "${store_work}/config-$1.toml"
   local user=
   [[ $1 == user ]] && user=$CH_CRI_TEST_USER
   CH_CRI_TEST_CONFIG=${store_work}/config-$1.toml server_start "$d" $user
}

# A sleeping busybox from the store in a new pod on server $1; print its
# container ID.
store_ctr () {
   sock=${store_work}/$1/ch-cri.sock
   local w=${store_work}/$1-$2
   mkdir -p "$w"
   chmod 777 "$w"
   pod_config "$2" ch-cri-test "$w" stores > "${w}/pod.json"
   ctr_config "$2" stores '' sleep 600 > "${w}/ctr.json"
   local p c
   p=$(crictl_ "$sock" runp "${w}/pod.json") || return 1
   c=$(crictl_ "$sock" create "$p" "${w}/ctr.json" "${w}/pod.json") \
      || return 1
   crictl_ "$sock" start "$c" > /dev/null || return 1
   echo "$c"
}

@test 'stores: ch-cri store add fills a store; list shows it' {
   "$CH_CRI_BIN" --config "$CH_CRI_TEST_CONFIG" store add "$st" "$bb"
   run "$CH_CRI_BIN" store list "$st"
   echo "$output"
   [[ $status -eq 0 && $output == *"$bb"* ]]
   # Downloads are not kept in a store; everyone may read it.
   [[ -z $(ls -A "${st}/storage/dlcache") ]]
   [[ $(stat -c %a "$st" "${st}/images.json") == $'755\n644' ]]
   run "$CH_CRI_BIN" store bogus "$st"
   [[ $status -ne 0 ]]
}

@test 'stores: a root and a user ch-cri use the stored image, never pull it' {
   id=$("$CH_CRI_BIN" store list "$st" | awk -v r="$bb" '$0 ~ r {print $1}')
   [[ -n $id ]]
   for who in root user; do
      store_server "$who"
      sock=${store_work}/${who}/ch-cri.sock
      # Listed with its real ID and digest, from an empty storage.
      crictl_ "$sock" images -o json \
         | jq -e --arg id "$id" '.images[] | select(.id == $id)
                                 | .repoDigests | length == 1'
      [[ -z $(ls -A "${store_work}/${who}/storage/img") ]]
      # PullImage answers from the store: no pull in the log.
      [[ $(crictl_ "$sock" pull "$bb") == *"$id"* ]]
      run ! grep -q "pulled ${bb}" "${store_work}/${who}/log"
      grep -q "pull ${bb}: in ${st}, not downloaded" "${store_work}/${who}/log"
      c=$(store_ctr "$who" "s-${who}")
      crictl_ "$sock" exec "$c" true
      # The store is never written: the container writes its own layer.
      # An unprivileged ch-cri's container writes only where ch-cri made
      # that layer its own (/tmp, /var/tmp, /etc's files): the image's
      # other directories are root's, which its namespace cannot map.
      crictl_ "$sock" exec "$c" sh -c 'echo x > /tmp/new-file'
      if [[ $who == root ]]; then
         crictl_ "$sock" exec "$c" sh -c 'echo x > /bin/new-file'
      else
         run crictl_ "$sock" exec "$c" sh -c 'echo x > /bin/new-file'
         [[ $status -ne 0 && $output == *"Permission denied"* ]]
      fi
      [[ ! -e ${st}/storage/img/ch-cri%${id#sha256:}/bin/new-file ]]
      [[ ! -e ${st}/storage/img/ch-cri%${id#sha256:}/tmp/new-file ]]
      # RemoveImage of a store image is refused, naming the store.
      run crictl_ "$sock" rmi "$bb"
      [[ $status -ne 0 && $output == *FailedPrecondition* ]]
      [[ $output == *"read-only image store ${st}"* ]]
   done
}

@test 'stores: a store that goes away takes its images, not the containers' {
   for who in root user; do
      store_server "$who"
   done
   mv "$st" "${st}.away"
   sleep 1.2      # the index is looked at again after a second
   for who in root user; do
      sock=${store_work}/${who}/ch-cri.sock
      [[ -z $(crictl_ "$sock" images -q) ]]
      for c in $(crictl_ "$sock" ps -q); do
         [[ $(crictl_ "$sock" inspect "$c" | jq -r .status.state) \
            == CONTAINER_RUNNING ]]
         crictl_ "$sock" exec "$c" true
      done
      grep -q "image store ${st}: no images from it" \
           "${store_work}/${who}/log"
   done
   mv "${st}.away" "$st"
   sleep 1.2
   for who in root user; do
      sock=${store_work}/${who}/ch-cri.sock
      [[ -n $(crictl_ "$sock" images -q) ]]
   done
}

@test 'stores: a tag that moved in the registry is pulled anew; the store is kept' {
   certs=${store_work}/certs
   mkdir -p "$certs"
   cp "${CH_CRI_TEST_CACHE}/registry/ca.pem" "${certs}/ca.crt"
   reg=127.0.0.1:5443
   retag () {   # retag SRC: point ch-cri-test/moving:1 at repository SRC
      skopeo copy -q --src-cert-dir="$certs" --dest-cert-dir="$certs" \
             "docker://${reg}/$1" "docker://${reg}/ch-cri-test/moving:1"
   }
   mv_ref=docker.io/ch-cri-test/moving:1
   retag e2e-test-images/busybox:1.29-2
   "$CH_CRI_BIN" --config "$CH_CRI_TEST_CONFIG" store add "$st" "$mv_ref"
   stored=$("$CH_CRI_BIN" store list "$st" | awk '/moving:1/ {print $1}')
   store_server root
   sock=${store_work}/root/ch-cri.sock
   # Unmoved: the store's image, nothing pulled.
   [[ $(crictl_ "$sock" pull "$mv_ref") == *"$stored"* ]]
   run ! grep -q "pulled ${mv_ref}" "${store_work}/root/log"
   # Moved: pulled here, now the tag's image; the store's kept by ID.
   retag ch-cri-test/umoci-insert:1
   new=$(crictl_ "$sock" pull "$mv_ref" | grep -o 'sha256:[0-9a-f]*')
   [[ $new != "$stored" ]]
   grep -q "pulled ${mv_ref}" "${store_work}/root/log"
   [[ $(crictl_ "$sock" inspecti "$mv_ref" | jq -r .status.id) == "$new" ]]
   crictl_ "$sock" inspecti "$stored" > /dev/null
   retag e2e-test-images/busybox:1.29-2
}
