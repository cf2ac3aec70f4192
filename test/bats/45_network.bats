# Pod networking against the live ch-cri at $CH_CRI_TEST_SOCKET: as root,
# CNI (bridge, host-local, portmap) gives each pod an IP and host ports; an
# unprivileged ch-cri does the same with slirp4netns where /dev/net/tun is
# usable (test/bin/with-tun makes it so, as on most hosts), and says in
# Status why not where it is not.

load ../common

setup () {
   scope standard
   live_server_or_skip
   work_make net
   crictl pull registry.k8s.io/e2e-test-images/nginx:1.14-2 > /dev/null
   crictl pull registry.k8s.io/e2e-test-images/busybox:1.29-2 > /dev/null
}

teardown () {
   if [[ -f ${work}/s1/pid ]]; then   # the kill -9 test's own server
      crictl_ "${work}/s1/ch-cri.sock" rmp -fa > /dev/null 2>&1 || true
      server_stop "${work}/s1"
   fi
   work_remove net
}

root_server_or_skip () {
   if [[ -n ${CH_CRI_TEST_SERVER_USER:-} ]]; then
      skip "pod networks need a root ch-cri"
   fi
}

pod_json () {  # name [host port]
   local pm='{}'
   [[ -n ${2:-} ]] && pm="{\"port_mappings\": [{\"container_port\": 80, \"host_port\": $2}]}"
   pod_config "$1" ch-cri-test "$work" net "$pm"
}

ctr_json () {  # name image command...
   local name=$1 image=$2; shift 2
   ctr_config "$name" net "{\"image\": {\"image\": \"$image\"}}" "$@"
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
   [[ $ready == true ]]
}

@test 'unprivileged: no usable /dev/net/tun: NetworkReady false, and why' {
   [[ -n ${CH_CRI_TEST_SERVER_USER:-} ]] || skip "root uses CNI"
   [[ ! -r /dev/net/tun || $(stat -c %a /dev/net/tun) == 600 ]] \
      || skip "this host's /dev/net/tun is usable by anyone"
   CH_CRI_TEST_TUN=0 server_start "${work}/s0" "$CH_CRI_TEST_SERVER_USER"
   run crictl_ "${work}/s0/ch-cri.sock" info
   server_stop "${work}/s0"
   echo "$output" | jq -e '.status.conditions[]
                           | select(.type == "NetworkReady")
                           | .status == false and .reason == "NoPodNetwork"
                             and (.message | test("/dev/net/tun"))'
}

# Start a pod (name $1) serving nginx on container port 80, host port $2;
# print its ID.
web_pod () {
   pod_json "$1" "$2" > "${work}/$1.json"
   ctr_json web registry.k8s.io/e2e-test-images/nginx:1.14-2 \
      > "${work}/$1-c.json"
   pod=$(crictl runp "${work}/$1.json")
   crictl start "$(crictl create "$pod" "${work}/$1-c.json" "${work}/$1.json")" \
      > /dev/null
   echo "$pod"
}

@test 'unprivileged: slirp4netns gives a pod eth0 with its address, and host ports' {
   [[ -n ${CH_CRI_TEST_SERVER_USER:-} ]] || skip "root uses CNI"
   pod=$(web_pod n0 12091)
   # No IP is reported (10.0.2.100 is every such pod's, and on the host
   # it is some other machine's); it is on eth0 inside.
   [[ $(crictl inspectp "$pod" | jq -r '.status.network.ip // ""') == "" ]]
   http_get 127.0.0.1:12091 | grep -q nginx
   ctr=$(crictl ps -q --pod "$pod")
   crictl exec "$ctr" cat /proc/net/route | grep -q '^eth0'
   crictl exec "$ctr" cat /proc/net/fib_trie | grep -q 10.0.2.100
   # One slirp4netns per pod, and it goes with the pod.
   pgrep -u "$CH_CRI_TEST_SERVER_USER" -f "slirp4netns.*/${pod:0:16} " > /dev/null
   crictl stopp "$pod" > /dev/null
   for (( i = 0; i < 50; i++ )); do
      pgrep -f "slirp4netns.*/${pod:0:16} " > /dev/null || break
      sleep 0.1
   done
   ! pgrep -f "slirp4netns.*/${pod:0:16} "
   ! curl -sf -m 2 http://127.0.0.1:12091/
   crictl rmp "$pod" > /dev/null
}

@test 'unprivileged: loopback name servers become the slirp4netns forwarder' {
   [[ -n ${CH_CRI_TEST_SERVER_USER:-} ]] || skip "root uses CNI"
   cat > "${work}/d1.json" <<EOF
{"metadata": {"name": "d1", "namespace": "ch-cri-test", "uid": "d1-uid"},
 "dns_config": {"servers": ["127.0.0.53", "192.0.2.53"]},
 "log_directory": "${work}/logs/d1", "labels": {"ch-cri-test": "net"}}
EOF
   ctr_json c registry.k8s.io/e2e-test-images/busybox:1.29-2 sleep 600 \
      > "${work}/d1-c.json"
   pod=$(crictl runp "${work}/d1.json")
   ctr=$(crictl create "$pod" "${work}/d1-c.json" "${work}/d1.json")
   crictl start "$ctr" > /dev/null
   run crictl exec "$ctr" cat /etc/resolv.conf
   echo "$output"
   [[ $output == *"nameserver 10.0.2.3"* ]]
   [[ $output == *"nameserver 192.0.2.53"* ]]
   [[ $output != *127.0.0.53* ]]
}

@test 'unprivileged: a host port that is taken fails the pod, naming it' {
   [[ -n ${CH_CRI_TEST_SERVER_USER:-} ]] || skip "root uses CNI"
   pod=$(web_pod n1 12092)
   pod_json n2 12092 > "${work}/n2.json"
   run crictl runp "${work}/n2.json"
   [[ $status -ne 0 ]]
   [[ $output == *"host port tcp/12092"* ]]
   # Nothing of the failed pod stays.
   [[ $(crictl pods -q --name n2 --label ch-cri-test=net) == "" ]]
   http_get 127.0.0.1:12092 | grep -q nginx
}

@test 'unprivileged: the pod network survives kill -9 of ch-cri' {
   [[ -n ${CH_CRI_TEST_SERVER_USER:-} ]] || skip "root's CNI state is tested in 30_restart"
   local d=${work}/s1 s
   s=${d}/ch-cri.sock
   server_start "$d" "$CH_CRI_TEST_SERVER_USER"
   crictl_ "$s" pull registry.k8s.io/e2e-test-images/nginx:1.14-2 > /dev/null
   pod_json n3 12093 > "${work}/n3.json"
   ctr_json web registry.k8s.io/e2e-test-images/nginx:1.14-2 > "${work}/n3-c.json"
   pod=$(crictl_ "$s" runp "${work}/n3.json")
   crictl_ "$s" start "$(crictl_ "$s" create "$pod" "${work}/n3-c.json" "${work}/n3.json")"
   http_get 127.0.0.1:12093 | grep -q nginx
   server_stop "$d" KILL
   http_get 127.0.0.1:12093 | grep -q nginx
   server_start "$d" "$CH_CRI_TEST_SERVER_USER"
   http_get 127.0.0.1:12093 | grep -q nginx
   crictl_ "$s" stopp "$pod" > /dev/null
   crictl_ "$s" rmp "$pod" > /dev/null
   server_stop "$d"
   ! curl -sf -m 2 http://127.0.0.1:12093/
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
