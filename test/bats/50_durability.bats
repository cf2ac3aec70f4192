# Durability: ch-cri killed with SIGKILL at any moment, and pod keepers
# killed, lose no container, exit code or log line.

load ../common

setup () {
   scope standard
   [[ -n ${CH_CRI_TEST_CONFIG:-} ]] && ok=yes || ok=no
   prereq_or_skip 'test registry config ($CH_CRI_TEST_CONFIG)' "$ok"
   d=${CH_CRI_TEST_OUT:-/tmp}/durability
   rm -rf "$d"
   mkdir -p "$d"
   sock=${d}/ch-cri.sock
   server_start "$d"
   crictl pull registry.k8s.io/e2e-test-images/busybox:1.29-2 > /dev/null
}

teardown () {
   for p in $(crictl pods -q 2>/dev/null); do
      crictl rmp -f "$p" > /dev/null 2>&1 || true
   done
   server_stop "$d" KILL || true
}

pod_json () {
   pod_config "$1" dur "$d" dur '{"linux": {}}'
}

ctr_json () {  # name shell-command
   ctr_config "$1" dur '{"linux": {}}' sh -c "$2"
}

wait_state () {  # container state
   for (( i = 0; i < 100; i++ )); do
      [[ $(crictl inspect "$1" | jq -r .status.state) == "$2" ]] && return 0
      sleep 0.1
   done
   return 1
}

@test 'SIGKILL ch-cri: running containers keep running and logging; exits while down are recorded' {
   pod_json p1 > "${d}/p1.json"
   ctr_json logger 'i=0; while :; do echo line $i; i=$((i+1)); sleep 0.1; done' > "${d}/a.json"
   ctr_json quitter 'sleep 2; exit 7' > "${d}/b.json"
   pod=$(crictl runp "${d}/p1.json")
   a=$(crictl create "$pod" "${d}/a.json" "${d}/p1.json")
   b=$(crictl create "$pod" "${d}/b.json" "${d}/p1.json")
   crictl start "$a"
   crictl start "$b"
   pid_a=$(crictl inspect "$a" | jq -r .info.status.pid)
   server_stop "$d" KILL
   sleep 3          # the quitter exits while nobody serves
   server_start "$d"
   [[ $(crictl inspectp "$pod" | jq -r .status.state) == SANDBOX_READY ]]
   run crictl inspect "$a"
   [[ $(jq -r .status.state <<< "$output") == CONTAINER_RUNNING ]]
   [[ $(jq -r .info.status.pid <<< "$output") == "$pid_a" ]]
   run crictl inspect "$b"
   [[ $(jq -r .status.state <<< "$output") == CONTAINER_EXITED ]]
   [[ $(jq -r .status.exitCode <<< "$output") == 7 ]]
   [[ $(jq -r .status.finishedAt <<< "$output") != 1970* ]]
   # The log has every line, in order, across the restart (read it once:
   # it keeps growing).
   sleep 0.5
   crictl logs "$a" > "${d}/a.log"
   n=$(wc -l < "${d}/a.log")
   [[ $n -gt 30 ]]
   [[ $(awk '{print $2}' "${d}/a.log" | sort -n | uniq | wc -l) -eq $n ]]
   [[ $(tail -n 1 "${d}/a.log" | awk '{print $2}') -eq $(( n - 1 )) ]]
   # exec still works
   [[ $(crictl exec -s "$a" echo ok) == ok ]]
}

@test 'SIGKILL ch-cri during lifecycle operations, repeatedly: state stays consistent' {
   for (( r = 0; r < 6; r++ )); do
      pod_json "k${r}" > "${d}/k.json"
      ctr_json "c${r}" 'sleep 1000' > "${d}/c.json"
      (  pod=$(crictl runp "${d}/k.json") \
         && c=$(crictl create "$pod" "${d}/c.json" "${d}/k.json") \
         && crictl start "$c" && crictl stop "$c" && crictl rm "$c" \
         && crictl stopp "$pod" && crictl rmp "$pod" ) > /dev/null 2>&1 &
      sleep "0.$(( (r * 37) % 10 ))"
      server_stop "$d" KILL
      wait || true
      server_start "$d"
      # Every pod and container listed can be inspected.
      for p in $(crictl pods -q); do crictl inspectp "$p" > /dev/null; done
      for c in $(crictl ps -aq); do crictl inspect "$c" > /dev/null; done
   done
   # Clean everything up through the API: nothing may be left behind.
   for p in $(crictl pods -q); do
      crictl stopp "$p"
      crictl rmp "$p"
   done
   [[ -z $(crictl pods -q) ]]
   [[ -z $(crictl ps -aq) ]]
   [[ -z $(ls "${d}/state/pods") ]]
   [[ -z $(ls "${d}/state/containers") ]]
   ! pgrep -f "keeper.py ${d}/state"
   ! pgrep -f 'sleep 1000'
}

@test 'a keeper that dies marks its containers exited, with the reason' {
   pod_json p2 > "${d}/p2.json"
   ctr_json victim 'sleep 2000' > "${d}/v.json"
   pod=$(crictl runp "${d}/p2.json")
   c=$(crictl create "$pod" "${d}/v.json" "${d}/p2.json")
   crictl start "$c"
   kpid=$(crictl inspectp "$pod" | jq -r .info.pid)
   kill -KILL "$kpid"
   wait_state "$c" CONTAINER_EXITED
   run crictl inspect "$c"
   [[ $(jq -r .status.message <<< "$output") == *'keeper of pod'*'died'* ]]
   [[ $(crictl inspectp "$pod" | jq -r .status.state) == SANDBOX_NOTREADY ]]
   ! pgrep -f 'sleep 2000'
   crictl rmp -f "$pod"
}
