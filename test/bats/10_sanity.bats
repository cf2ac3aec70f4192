# Sanity: the command line, the socket, shutdown, and shell style. Needs no
# registry.

load ../common

setup () {
   scratch=$(mktemp -d /tmp/ch-cri-sanity.XXXXXX)
}

teardown () {
   server_stop "${scratch}/s" KILL || true
   rm -rf "$scratch"
}

@test 'ch-cri --help' {
   scope quick
   run "$CH_CRI_BIN" --help
   [[ $status -eq 0 ]]
   [[ $output == *'usage: ch-cri'* ]]
   [[ $output == *'--socket PATH'* ]]
   [[ $output == *'CH_CRI_SOCKET'* ]]
}

@test 'ch-cri --version' {
   scope quick
   run "$CH_CRI_BIN" --version
   [[ $status -eq 0 ]]
   [[ $output == "$(cat "${top}/VERSION")" ]]
}

@test 'ch-cri --dependencies' {
   scope quick
   run "$CH_CRI_BIN" --dependencies
   echo "$output"
   [[ $status -eq 0 ]]
   [[ $output == *'ch-run '*' ok 0.'* ]]
   [[ $output == *'container-runtime-interface-api  ok 2.0.1'* ]]
}

@test 'ch-cri: unknown subcommand prints usage' {
   scope quick
   run "$CH_CRI_BIN" frobnicate
   [[ $status -eq 2 ]]
   [[ $output == *'usage: ch-cri'* ]]
   [[ $output == *"invalid choice: 'frobnicate'"* ]]
}

@test 'ch-cri: bad config is refused by key' {
   scope quick
   printf 'socket_mode = "0999"\n' > "${scratch}/c.toml"
   run "$CH_CRI_BIN" --config "${scratch}/c.toml"
   [[ $status -eq 1 ]]
   [[ $output == *'socket_mode: not an octal mode'* ]]
   printf '[registry."x.io"]\nmirrors = ["http://127.0.0.1:1"]\n' \
          > "${scratch}/c.toml"
   run "$CH_CRI_BIN" --config "${scratch}/c.toml"
   [[ $status -eq 1 ]]
   [[ $output == *'registry.x.io.mirrors[0]: Charliecloud pulls over HTTPS only'* ]]
   run "$CH_CRI_BIN" --config "${scratch}/missing.toml"
   [[ $status -eq 1 ]]
   [[ $output == *'config file not found'* ]]
}

@test 'ch-cri with no arguments serves; socket mode; SIGTERM stops cleanly' {
   scope quick
   d=${scratch}/s
   mkdir -p "$d"
   # No arguments at all: everything from the environment.
   CH_CRI_SOCKET=${d}/ch-cri.sock CH_CRI_STATE_DIR=${d}/state \
   CH_CRI_STORAGE=${d}/storage setsid "$CH_CRI_BIN" \
      > "${d}/log" 2>&1 < /dev/null &
   echo $! > "${d}/pid"
   for (( i = 0; i < 300; i++ )); do
      grep -q 'serving on' "${d}/log" && break
      sleep 0.1
   done
   cat "${d}/log"
   [[ $(stat -c %a "${d}/ch-cri.sock") == 660 ]]
   server_stop "$d" TERM
   grep -q 'got SIGTERM; shutting down' "${d}/log"
   grep -q 'stopped' "${d}/log"
   [[ ! -e ${d}/ch-cri.sock ]]
}

@test 'ch-cri: --socket-mode; stale socket replaced; live socket refused' {
   scope quick
   d=${scratch}/s
   mkdir -p "$d"
   # A stale socket (nobody listening) is replaced.
   python3 -c 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' \
           "${d}/ch-cri.sock"
   server_start "$d" '' -- --socket-mode 0600
   [[ $(stat -c %a "${d}/ch-cri.sock") == 600 ]]
   grep -q 'removing stale socket' "${d}/log"
   # A second server on the same live socket is refused.
   run "$CH_CRI_BIN" --socket "${d}/ch-cri.sock" --state-dir "${d}/state2" \
                     --storage "${d}/storage2"
   echo "$output"
   [[ $status -eq 1 ]]
   [[ $output == *'another server is listening'* ]]
   # A non-socket file is never removed.
   touch "${scratch}/plain"
   run "$CH_CRI_BIN" --socket "${scratch}/plain" --state-dir "${d}/state2" \
                     --storage "${d}/storage2"
   [[ $status -eq 1 ]]
   [[ $output == *'not a socket'* ]]
   [[ -f ${scratch}/plain ]]
}

@test 'Makefile.am installs every library module' {
   scope quick
   cd "$top"
   for f in lib/*.py lib/cri/*.py; do
      grep -qF "$f" Makefile.am || { echo "not in Makefile.am: ${f}"; false; }
   done
}

@test 'shellcheck' {
   scope quick
   command -v shellcheck >/dev/null && ok=yes || ok=no
   prereq_or_skip shellcheck "$ok"
   cd "$top"
   mapfile -t files < <(shell_files)
   echo "${files[@]}"
   [[ ${#files[@]} -ge 10 ]]   # the search finds them at all
   shellcheck -x "${files[@]}"
}

@test 'the set-up installs no container daemon (Docker, containerd, Buildah)' {
   command -v apt-cache > /dev/null || skip "not a Debian system"
   mapfile -t pkgs < <("${top}/misc/install-deps" --print-packages)
   [[ ${#pkgs[@]} -gt 5 ]]
   closure () {
      apt-cache depends --recurse --no-recommends --no-suggests \
                --no-conflicts --no-breaks --no-replaces --no-enhances "$@" \
         | grep -v '^ ' | sort -u
   }
   deps=$(closure "${pkgs[@]}")
   grep -qx charliecloud-runtime <<< "$deps"
   for p in docker.io containerd runc buildah podman charliecloud-builders; do
      ! grep -qx "$p" <<< "$deps"
   done
   # The check sees them where they are: ch-image's package brings them.
   grep -qx docker.io <<< "$(closure charliecloud-builders)"
}
