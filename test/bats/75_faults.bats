# Storage faults against a ch-cri of the test's own: a full state
# directory, and corrupt state files.

load ../common

setup () {
   scope standard
   [[ -n ${CH_CRI_TEST_CONFIG:-} ]] && ok=yes || ok=no
   prereq_or_skip 'test registry config ($CH_CRI_TEST_CONFIG)' "$ok"
   d=$(mktemp -d /tmp/ch-cri-faults.XXXXXX)
   sock=${d}/ch-cri.sock
}

teardown () {
   if [[ -S ${sock} ]]; then
      for p in $(crictl pods -q 2>/dev/null); do
         crictl rmp -f "$p" > /dev/null 2>&1 || true
      done
   fi
   server_stop "$d" KILL || true
   # Keepers of quarantined pods must be gone; never leave one running.
   for p in $(pgrep -f "keeper.py ${d}/state/"); do
      kill -KILL "$p" 2>/dev/null || true
   done
   mountpoint -q "${d}/state" && umount "${d}/state"
   rm -rf "$d"
}

pod_json () {
   pod_config "$1" faults "$d" faults \
      '{"linux": {"security_context": {"namespace_options": {"network": 2}}}}'
}

ctr_json () {
   ctr_config "$1" faults '{"linux": {}}' sleep 1000
}

@test 'state directory full: RESOURCE_EXHAUSTED, then recovery when space returns' {
   [[ $(id -u) -eq 0 ]] && ok=yes || ok=no
   prereq_or_skip 'root (to mount a tmpfs)' "$ok"
   mkdir -p "${d}/state"
   mount -t tmpfs -o size=2m tmpfs "${d}/state"
   server_start "$d"
   crictl pull registry.k8s.io/e2e-test-images/busybox:1.29-2 > /dev/null
   pod_json p1 > "${d}/p1.json"
   pod_json p2 > "${d}/p2.json"
   ctr_json c1 > "${d}/c1.json"
   p1=$(crictl runp "${d}/p1.json")
   # Fill the state directory to the last byte.
   dd if=/dev/zero of="${d}/state/filler" bs=64k 2> /dev/null || true
   run crictl runp "${d}/p2.json"
   echo "$output"
   [[ $status -ne 0 ]]
   [[ $output == *ResourceExhausted* ]]
   run crictl create "$p1" "${d}/c1.json" "${d}/p1.json"
   echo "$output"
   [[ $status -ne 0 ]]
   [[ $output == *ResourceExhausted* ]]
   # No half-made pod or container is listed.
   [[ $(crictl pods -q | wc -l) -eq 1 ]]
   [[ -z $(crictl ps -aq) ]]
   grep -q 'disk full' "${d}/log"
   # Space returns: everything works again, without a restart.
   rm "${d}/state/filler"
   p2=$(crictl runp "${d}/p2.json")
   c1=$(crictl create "$p1" "${d}/c1.json" "${d}/p1.json")
   crictl start "$c1"
   [[ $(crictl exec -s "$c1" echo ok) == ok ]]
   crictl stopp "$p1" "$p2"
   crictl rmp "$p1" "$p2"
   [[ -z $(ls "${d}/state/pods") ]]
}

@test 'corrupt state files are quarantined with a log line; the rest works' {
   server_start "$d"
   crictl pull registry.k8s.io/e2e-test-images/busybox:1.29-2 > /dev/null
   for n in good badpod badctr; do
      pod_json "$n" > "${d}/${n}.json"
      ctr_json "c-${n}" > "${d}/c-${n}.json"
      eval "${n}=\$(crictl runp \"\${d}/\${n}.json\")"
      eval "c_${n}=\$(crictl create \"\$${n}\" \"\${d}/c-${n}.json\" \"\${d}/\${n}.json\")"
      eval "crictl start \"\$c_${n}\""
   done
   # shellcheck disable=SC2154
   kpid=$(crictl inspectp "$badpod" | jq -r .info.pid)
   [[ $kpid =~ ^[0-9]+$ ]]
   kill -0 "$kpid"
   server_stop "$d"
   # shellcheck disable=SC2154
   printf '{"version": 1, "config": {' > "${d}/state/pods/${badpod}/config.json"
   # shellcheck disable=SC2154
   printf 'garbage\0' > "${d}/state/containers/${c_badctr}/config.json"
   server_start "$d"
   grep -q "unreadable pod ${badpod} .*moved to ${d}/state/quarantine/" "${d}/log"
   grep -q "unreadable container ${c_badctr} .*moved to ${d}/state/quarantine/" "${d}/log"
   [[ $(ls "${d}/state/quarantine" | wc -l) -eq 2 ]]
   # The quarantined pod's keeper and container are not left running.
   for (( i = 0; i < 50; i++ )); do
      kill -0 "$kpid" 2>/dev/null || break
      sleep 0.1
   done
   run kill -0 "$kpid"
   [[ $status -ne 0 ]]
   [[ -z $(pgrep -f "keeper.py ${d}/state/pods/${badpod}") ]]
   # The rest is listed and works.
   run crictl pods -q
   [[ $output != *"$badpod"* ]]
   # shellcheck disable=SC2154
   [[ $output == *"$good"* && $output == *"$badctr"* ]]
   run crictl ps -aq
   # shellcheck disable=SC2154
   [[ $output == *"$c_good"* && $output != *"$c_badctr"* ]]
   [[ $(crictl exec -s "$c_good" echo ok) == ok ]]
   ctr_json c2 > "${d}/c2.json"
   c2=$(crictl create "$badctr" "${d}/c2.json" "${d}/badctr.json")
   crictl start "$c2"
   crictl stopp "$good" "$badctr"
   crictl rmp "$good" "$badctr"
   [[ -z $(crictl pods -q) ]]
   [[ -z $(ls "${d}/state/pods") ]]
}
