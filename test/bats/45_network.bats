# Pod networking against the live ch-cri at $CH_CRI_TEST_SOCKET: as root,
# CNI (bridge, host-local, portmap) gives each pod an IP and host ports; an
# unprivileged ch-cri says in Status that it has no pod network.

load ../common

setup () {
   scope standard
   live_server_or_skip
   work_make net
   crictl pull registry.k8s.io/e2e-test-images/nginx:1.14-2 > /dev/null
   crictl pull registry.k8s.io/e2e-test-images/busybox:1.29-2 > /dev/null
}

teardown () {
   work_remove net
}

crictl () {
   crictl_ "$sock" "$@"
}

root_server_or_skip () {
   if [[ -n ${CH_CRI_TEST_SERVER_USER:-} ]]; then
      skip "pod networks need a root ch-cri"
   fi
}

pod_json () {  # name [host port]
   local pm=""
   [[ -n ${2:-} ]] && pm="\"port_mappings\": [{\"container_port\": 80, \"host_port\": $2}],"
   cat <<EOF
{"metadata": {"name": "$1", "namespace": "ch-cri-test", "uid": "$1-uid"},
 ${pm} "log_directory": "${work}/logs/$1", "labels": {"ch-cri-test": "net"}}
EOF
}

ctr_json () {  # name image command...
   local name=$1 image=$2; shift 2
   local cmd=""
   [[ $# -gt 0 ]] && cmd="\"command\": [$(printf '"%s",' "$@" | sed 's/,$//')],"
   cat <<EOF
{"metadata": {"name": "$name"}, "image": {"image": "$image"}, ${cmd}
 "log_path": "${name}.log", "labels": {"ch-cri-test": "net"}}
EOF
}

# Print the body of http://$1/ once it answers (bounded: 10 s).
http_get () {
   local i
   for (( i = 0; i < 50; i++ )); do
      curl -sf -m 2 "http://$1/" && return 0
      sleep 0.2
   done
   return 1
}

@test 'Status NetworkReady tells the truth' {
   ready=$(crictl info | jq -r '.status.conditions[] | select(.type == "NetworkReady") | .status')
   if [[ -n ${CH_CRI_TEST_SERVER_USER:-} ]]; then
      [[ $ready == false ]]
      crictl info | jq -r '.status.conditions[] | select(.type == "NetworkReady") | .reason' \
         | grep -qx NoPodNetwork
   else
      [[ $ready == true ]]
   fi
}

@test 'unprivileged: a pod gets loopback only and no IP' {
   [[ -n ${CH_CRI_TEST_SERVER_USER:-} ]] || skip "root has a pod network"
   pod_json n0 > "${work}/pod.json"
   pod=$(crictl runp "${work}/pod.json")
   [[ $(crictl inspectp "$pod" | jq -r ".status.network.ip // \"\"") == "" ]]
}

@test 'pod IP reachable from the host and from another pod; host port' {
   root_server_or_skip
   pod_json n1 12081 > "${work}/p1.json"
   ctr_json web registry.k8s.io/e2e-test-images/nginx:1.14-2 > "${work}/c1.json"
   pod1=$(crictl runp "${work}/p1.json")
   crictl start "$(crictl create "$pod1" "${work}/c1.json" "${work}/p1.json")"
   ip1=$(crictl inspectp "$pod1" | jq -r .status.network.ip)
   [[ $ip1 =~ ^10\.85\. ]]
   http_get "$ip1" | grep -q nginx
   http_get 127.0.0.1:12081 | grep -q nginx

   pod_json n2 > "${work}/p2.json"
   ctr_json cli registry.k8s.io/e2e-test-images/busybox:1.29-2 sleep 600 \
      > "${work}/c2.json"
   pod2=$(crictl runp "${work}/p2.json")
   ctr2=$(crictl create "$pod2" "${work}/c2.json" "${work}/p2.json")
   crictl start "$ctr2"
   ip2=$(crictl inspectp "$pod2" | jq -r .status.network.ip)
   [[ -n $ip2 && $ip2 != "$ip1" ]]
   crictl exec "$ctr2" wget -q -O - "http://${ip1}/" | grep -q nginx
   # The pod's own address is on eth0 inside it.
   crictl exec "$ctr2" ip addr show eth0 | grep -q "inet ${ip2}/"

   # Removing the pods frees their addresses, host port and interfaces.
   crictl stopp "$pod1" "$pod2" > /dev/null
   crictl rmp "$pod1" "$pod2" > /dev/null
   ! curl -sf -m 2 http://127.0.0.1:12081/
   ! iptables-save | grep -q -- "--dport 12081"
   run grep -rl "$pod1" "$(crictl info | jq -r .info.state_dir)/cni"
   [[ -z $output ]]
}
