# The image service through crictl, against the live ch-cri at
# $CH_CRI_TEST_SOCKET (test/run points it at a root and an unprivileged one).

load ../common

setup () {
   scope standard
   live_server_or_skip
}

@test 'crictl version' {
   run crictl version
   echo "$output"
   [[ $status -eq 0 ]]
   [[ $output == *'RuntimeName:  ch-cri'* ]]
   [[ $output == *'RuntimeApiVersion:  v1'* ]]
}

@test 'crictl info' {
   run crictl info
   echo "$output"
   [[ $status -eq 0 ]]
   [[ $(jq -r '.status.conditions[] | select(.type == "RuntimeReady") | .status' <<< "$output") == true ]]
   [[ $(jq -r '.info.charliecloud.version' <<< "$output") == 0.* ]]
}

@test 'crictl pull, images, inspecti, rmi' {
   crictl rmi docker.io/library/busybox:latest 2>/dev/null || true
   run crictl pull busybox
   echo "$output"
   [[ $status -eq 0 ]]
   [[ $output == 'Image is up to date for sha256:'* ]]
   id=${output##*for }
   run crictl images
   echo "$output"
   [[ $output == *'docker.io/library/busybox '*' latest '* ]]
   run crictl inspecti busybox
   echo "$output"
   [[ $(jq -r .status.id <<< "$output") == "$id" ]]
   [[ $(jq -r '.status.repoTags[0]' <<< "$output") == docker.io/library/busybox:latest ]]
   [[ $(jq -r '.status.repoDigests[0]' <<< "$output") == docker.io/library/busybox@sha256:* ]]
   [[ $(jq -r .status.size <<< "$output") -gt 1000000 ]]
   [[ $(jq -r '.info.imageSpec.config.Cmd[0]' <<< "$output") == sh ]]
   # by ID and by digest too
   digest=$(jq -r '.status.repoDigests[0]' <<< "$output")
   [[ $(crictl inspecti "$id" | jq -r .status.id) == "$id" ]]
   [[ $(crictl inspecti "$digest" | jq -r .status.id) == "$id" ]]
   run crictl rmi busybox
   [[ $status -eq 0 ]]
   run crictl images -q
   [[ $output != *"$id"* ]]
}

@test 'one image under two registries: one ID, tags removed one by one' {
   crictl pull registry.k8s.io/pause:3.9
   crictl pull k8s.gcr.io/pause:3.9
   id1=$(crictl inspecti registry.k8s.io/pause:3.9 | jq -r .status.id)
   id2=$(crictl inspecti k8s.gcr.io/pause:3.9 | jq -r .status.id)
   [[ $id1 == "$id2" ]]
   [[ $(crictl inspecti "$id1" | jq -r '.status.repoTags | length') -eq 2 ]]
   # RemoveImage by one tag keeps the other (by ID removes all).
   crictl rmi k8s.gcr.io/pause:3.9
   run crictl inspecti registry.k8s.io/pause:3.9
   [[ $status -eq 0 ]]
   [[ $(jq -r '.status.repoTags | join(" ")' <<< "$output") == registry.k8s.io/pause:3.9 ]]
   crictl rmi "$id1"
   run crictl inspecti registry.k8s.io/pause:3.9
   [[ $status -ne 0 ]]
}

@test 'uid and username from the image USER' {
   p=gcr.io/k8s-staging-cri-tools
   for i in "test-image-user-uid 1002 null" \
            "test-image-user-username null www-data" \
            "test-image-user-uid-group 1003 null" \
            "test-image-user-username-group null www-data"; do
      read -r img uid user <<< "$i"
      crictl pull "${p}/${img}"
      out=$(crictl inspecti "${p}/${img}")
      [[ $(jq -r .status.uid.value <<< "$out") == "$uid" ]]
      [[ $(jq -r '.status.username // "null"' <<< "$out" | sed 's/^$/null/') == "$user" ]]
      crictl rmi "${p}/${img}"
   done
}

@test 'pull errors: missing image, bad reference' {
   run crictl pull registry.k8s.io/no-such/image:1
   echo "$output"
   [[ $status -ne 0 ]]
   [[ $output == *'code = NotFound'* ]]
   run crictl pull 'Bad Ref'
   echo "$output"
   [[ $status -ne 0 ]]
   [[ $output == *'code = InvalidArgument'*'image.image'* ]]
}

@test 'crictl imagefsinfo' {
   crictl pull registry.k8s.io/pause:3.9
   run crictl imagefsinfo
   echo "$output"
   [[ $status -eq 0 ]]
   [[ $(jq -r '.status.imageFilesystems[0].usedBytes.value' <<< "$output") -gt 0 ]]
   crictl rmi registry.k8s.io/pause:3.9
}

@test '1,000 random and malformed image requests: never INTERNAL' {
   run "$PYTHON" "${top}/test/bin/fuzz-images" "$sock" 1000
   echo "$output"
   [[ $status -eq 0 ]]
   [[ $output == *'1000 requests'*'0 bad'* ]]
   crictl version
}

@test 'an image the user made with ch-image in its storage: ch-image.local/NAME' {
   # ch-image's layout, written by hand (ch-image itself is optional):
   # img/NAME+TAG with ch/metadata.json, beside ch-cri's own images.
   st=$(dirname "$sock")/storage
   crictl pull registry.k8s.io/e2e-test-images/busybox:1.29-2 > /dev/null
   bb=$(crictl inspecti registry.k8s.io/e2e-test-images/busybox:1.29-2 \
        | jq -r .status.id)
   mine="${st}/img/ch-cri-test%local+1"
   rm -rf "$mine"
   cp -a "${st}/img/ch-cri%${bb#sha256:}" "$mine"
   rm -f "${mine}/ch/config.pulled.json"
   cat > "${mine}/ch/metadata.json" <<'EOF'
{"arch": "amd64", "cwd": "/tmp", "env": {"GREETING": "built here"},
 "labels": {"made-by": "ch-image"}, "shell": ["/bin/sh", "-c"]}
EOF
   [[ -z ${CH_CRI_TEST_SERVER_USER:-} ]] \
      || chown -R "${CH_CRI_TEST_SERVER_USER}:" "$mine"
   ref=ch-image.local/ch-cri-test/local:1
   id=$(crictl pull "$ref" | grep -o 'sha256:[0-9a-f]*')
   crictl inspecti "$ref" \
      | jq -e '.info.imageSpec.config.Env == ["GREETING=built here"]
               and .info.imageSpec.config.WorkingDir == "/tmp"
               and .status.repoTags == ["ch-image.local/ch-cri-test/local:1"]'
   # Taken again: the same image; changed ("rebuilt"): a new one.
   [[ $(crictl pull "$ref" | grep -o 'sha256:[0-9a-f]*') == "$id" ]]
   echo more > "${mine}/rebuilt"
   [[ $(crictl pull "$ref" | grep -o 'sha256:[0-9a-f]*') != "$id" ]]
   # ch-cri's copy is its own: the user's image stays.
   [[ -d $mine ]]
   run crictl pull ch-image.local/ch-cri-test/no-such:1
   [[ $status -ne 0 && $output == *'code = NotFound'* ]]
   crictl rmi "$ref" "$id" > /dev/null 2>&1 || true
   rm -rf "$mine"
}
