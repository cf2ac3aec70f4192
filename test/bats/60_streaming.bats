# Streaming through crictl (exec, exec -it, attach, port-forward) over SPDY
# and WebSocket, against the live ch-cri at $CH_CRI_TEST_SOCKET; and no
# leaks after many concurrent streams whose clients are killed.

load ../common

setup_file () {
   export work=$(mktemp -d /tmp/ch-cri-stream.XXXXXX)
   chmod 755 "$work"
   [[ -z ${CH_CRI_TEST_SERVER_USER:-} ]] \
      || chown "$CH_CRI_TEST_SERVER_USER" "$work"
}

teardown_file () {
   rm -rf "$work"
}

setup () {
   scope standard
   live_server_or_skip
   crictl pull registry.k8s.io/e2e-test-images/busybox:1.29-2 > /dev/null
   pod_config "s${BATS_TEST_NUMBER}" stream "$work" stream '{"linux": {}}' \
      > "${work}/pod.json"
   pod=$(crictl runp "${work}/pod.json")
}

teardown () {
   for p in $(crictl pods -q --label ch-cri-test=stream 2>/dev/null); do
      crictl rmp -f "$p" > /dev/null 2>&1 || true
   done
}

ctr_start () {  # name stdin(true|false) shell-command
   ctr_config "$1" stream "{\"stdin\": $2, \"linux\": {}}" sh -c "$3" \
      > "${work}/c.json"
   c=$(crictl create "$pod" "${work}/c.json" "${work}/pod.json")
   crictl start "$c" > /dev/null
   echo "$c"
}

@test 'crictl exec, exec -i, exec -it: SPDY and WebSocket' {
   c=$(ctr_start c false 'sleep 1000')
   for t in spdy websocket; do
      run crictl exec -r "$t" "$c" sh -c 'echo out; echo err >&2'
      [[ $output == *out* && $output == *err* ]]
      run crictl exec -r "$t" "$c" sh -c 'exit 5'
      [[ $output == *'exit code 5'* ]]
      run bash -c "head -c 300000 /dev/zero | tr '\\0' x | $(printf '%q ' "$CRICTL") --runtime-endpoint unix://${sock} --image-endpoint unix://${sock} exec -r ${t} -i ${c} wc -c 2>/dev/null"
      [[ ${output##* } == 300000 ]]
      run script -qec "$(printf '%q ' "$CRICTL") --runtime-endpoint unix://${sock} --image-endpoint unix://${sock} exec -r ${t} -it ${c} sh -c 'tty; stty size'" /dev/null
      echo "$output"
      [[ $output == */dev/pts/* ]]
   done
}

@test 'crictl attach: output and stdin; detaching leaves the container running' {
   c=$(ctr_start a true 'while read l; do echo got $l; done')
   for t in spdy websocket; do
      # crictl stays attached while the container runs: timeout ends it.
      run bash -c "(echo hello-${t}; sleep 2) | timeout -s KILL 4 $(printf '%q ' "$CRICTL") --runtime-endpoint unix://${sock} --image-endpoint unix://${sock} attach -r ${t} -i ${c} 2>/dev/null"
      echo "$output"
      [[ $output == *"got hello-${t}"* ]]
      [[ $(crictl inspect "$c" | jq -r .status.state) == CONTAINER_RUNNING ]]
   done
   # both attaches went to the log too
   [[ $(crictl logs "$c" | grep -c '^got hello') -eq 2 ]]
}

@test 'crictl port-forward to a pod port: SPDY and WebSocket; closed port errs' {
   c=$(ctr_start w false 'mkdir -p /tmp/www && echo pf-ok > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www')
   for t in spdy websocket; do
      port=$(( 18100 + RANDOM % 100 ))
      "$CRICTL" --runtime-endpoint "unix://${sock}" \
                --image-endpoint "unix://${sock}" \
                port-forward -r "$t" "$pod" "${port}:8080" \
                > "${work}/pf.log" 2>&1 &
      pf=$!
      for (( i = 0; i < 50; i++ )); do
         curl -s "http://127.0.0.1:${port}/" > "${work}/got" 2>/dev/null && break
         sleep 0.1
      done
      kill "$pf" || true
      wait "$pf" || true
      [[ $(cat "${work}/got") == pf-ok ]]
   done
   port=$(( 18200 + RANDOM % 100 ))
   "$CRICTL" --runtime-endpoint "unix://${sock}" \
             --image-endpoint "unix://${sock}" \
             port-forward "$pod" "${port}:9" > "${work}/pf.log" 2>&1 &
   pf=$!
   sleep 1
   curl -s "http://127.0.0.1:${port}/" || true
   sleep 0.5
   kill "$pf" || true
   wait "$pf" || true
   cat "${work}/pf.log"
   grep -q "port 9" "${work}/pf.log"
}

@test '20 execs and 5 port-forwards killed mid-stream: nothing leaks' {
   c=$(ctr_start l false 'mkdir -p /tmp/www && echo x > /tmp/www/i && exec httpd -f -p 8080 -h /tmp/www')
   spid=$(pgrep -f "ch-cri.*--socket ${sock}" | head -n 1)
   kpid=$(crictl inspectp "$pod" | jq -r .info.pid)
   # gRPC's worker pool grows on demand and keeps idle workers: grow it
   # first (as many concurrent calls as the streams below make), so that
   # only threads the streams leave behind count.
   for (( i = 0; i < 30; i++ )); do
      "$CRICTL" --runtime-endpoint "unix://${sock}" \
                --image-endpoint "unix://${sock}" exec -s "$c" sleep 1 \
                > /dev/null 2>&1 &
   done
   wait
   sleep 1
   threads0=$(ls "/proc/${spid}/task" | wc -l)
   fds0=$(ls "/proc/${spid}/fd" | wc -l)
   kfds0=$(ls "/proc/${kpid}/fd" | wc -l)
   pids=()
   # The binary itself, not the crictl function: $! must be its PID.
   ep=(--runtime-endpoint "unix://${sock}" --image-endpoint "unix://${sock}")
   for (( i = 0; i < 20; i++ )); do
      "$CRICTL" "${ep[@]}" exec "$c" sh -c 'echo started; sleep 300' \
                > /dev/null 2>&1 &
      pids+=($!)
   done
   for (( i = 0; i < 5; i++ )); do
      "$CRICTL" "${ep[@]}" port-forward "$pod" "$(( 18300 + i )):8080" \
                > /dev/null 2>&1 &
      pids+=($!)
   done
   sleep 3
   for (( i = 0; i < 5; i++ )); do
      curl -s "http://127.0.0.1:$(( 18300 + i ))/i" > /dev/null || true
   done
   [[ $(pgrep -fc 'sleep 300') -ge 20 ]]
   kill -KILL "${pids[@]}"
   wait "${pids[@]}" 2> /dev/null || true
   # bounded wait for everything to wind down
   for (( i = 0; i < 100; i++ )); do
      threads=$(ls "/proc/${spid}/task" | wc -l)
      fds=$(ls "/proc/${spid}/fd" | wc -l)
      if (( threads <= threads0 + 1 && fds <= fds0 + 1 )) \
         && ! pgrep -f 'sleep 300' > /dev/null; then
         break
      fi
      sleep 0.1
   done
   echo "threads ${threads0} -> ${threads}, fds ${fds0} -> ${fds}"
   (( threads <= threads0 + 1 ))
   (( fds <= fds0 + 1 ))
   ! pgrep -f 'sleep 300'
   kfds=$(ls "/proc/${kpid}/fd" | wc -l)
   echo "keeper fds ${kfds0} -> ${kfds}"
   (( kfds <= kfds0 + 1 ))
   [[ $(crictl inspect "$c" | jq -r .status.state) == CONTAINER_RUNNING ]]
}
