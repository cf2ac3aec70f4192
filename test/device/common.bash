# Shared by the device checks (cgroup2-check, gpu-check): what "prepare"
# carries to the device machine (Debian 12's Charliecloud unpacked, wheels
# for its Python, crictl, a busybox image in a ch-cri storage) and what
# "run" does there with it (install, start ch-cri as root or a user, count
# checks). The sourcing script sets: name, here, top, carry, base, img,
# debs; prepare_extra (a function, optional) adds its own files to carry/.
# shellcheck shell=bash disable=SC2154  # set by the sourcing script

die () { echo "${name}: $*" 1>&2; exit 1; }

## prepare ##

prepare () {
   [[ $(id -u) -eq 0 ]] || die "prepare runs as root"
   rm -rf "$carry"
   mkdir -p "${carry}/wheels"
   export DEBIAN_FRONTEND=noninteractive
   command -v patchelf > /dev/null \
      || apt-get install -y -q --no-install-recommends patchelf > /dev/null \
      || die "patchelf"
   # Debian 12's Charliecloud, unpacked here, ch-run's library path made
   # relative to itself (the device has no patchelf, nor these libraries).
   local tmp=${base}/prep-debs
   rm -rf "$tmp"
   mkdir -p "${tmp}/root"
   (cd "$tmp" && apt-get download "${debs[@]}" > /dev/null) \
      || die "apt-get download ${debs[*]}"
   local deb
   for deb in "$tmp"/*.deb; do
      dpkg -x "$deb" "${tmp}/root" || die "dpkg -x ${deb}"
   done
   # shellcheck disable=SC2016  # $ORIGIN is ld.so's, not ours
   patchelf --set-rpath \
      '$ORIGIN/../lib/x86_64-linux-gnu:$ORIGIN/../../lib/x86_64-linux-gnu' \
      "${tmp}/root/usr/bin/ch-run" || die "patchelf"
   tar -C "${tmp}/root" -cJf "${carry}/charliecloud.tar.xz" . || die "tar"
   rm -rf "$tmp"
   local pyv=${CHECK_PY_VERSION:-3.12}
   "${PYTHON:-/opt/ch-cri/venv/bin/python3}" -m pip download -q \
      --disable-pip-version-check --only-binary=:all: \
      --python-version "$pyv" --platform manylinux2014_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
      --platform linux_x86_64 -d "${carry}/wheels" \
      -r "${top}/requirements.txt" || die "pip download"
   # crictl, stripped and compressed: the CRI client the checks use.
   local cache=${CH_CRI_TOOLS_CACHE:-/var/cache/ch-cri-test}
   [[ -x ${cache}/bin/crictl ]] || "${top}/test/bin/go-tools" crictl > /dev/null
   strip -o "${carry}/crictl" "$(readlink -f "${cache}/bin/crictl")" \
      || cp "${cache}/bin/crictl" "${carry}/crictl"
   xz -T2 -6 "${carry}/crictl" || die "xz"
   image_prepare || die "image"
   if declare -F prepare_extra > /dev/null; then
      prepare_extra || die "prepare_extra"
   fi
   du -sh "$carry"
   local kib
   kib=$(du -sk "$carry" | cut -f1)
   (( kib < 60 * 1024 )) || die "carry/ is ${kib} KiB, over the limit"
   echo "${name}: prepared ${carry}"
}

# Pull the busybox image through a ch-cri of this checkout into a storage
# and index at $base's layout, and pack both (for root and for the user:
# an ordinary user's ch-cri uses images it owns).
image_prepare () {
   local d=${base}/prep reg
   rm -rf "$d"
   mkdir -p "$d"
   reg=$("${top}/test/bin/registry" start /var/cache/ch-cri-test/registry) \
      || return 1
   # shellcheck source=test/common.bash
   . "${top}/test/common.bash"
   local cfg=${d}/config.toml r
   for r in registry.k8s.io docker.io; do
      printf '[registry."%s"]\nmirrors = ["https://%s"]\nupstream = false\n\n' \
             "$r" "$reg"
   done > "$cfg"
   printf '[registry."%s"]\nca = "%s"\n' "$reg" \
          /var/cache/ch-cri-test/registry/ca.pem >> "$cfg"
   CH_CRI_BIN=${top}/bin/ch-cri CH_CRI_TEST_CONFIG=$cfg \
      server_start "${d}/srv" || return 1
   crictl_ "${d}/srv/ch-cri.sock" pull "$img" > /dev/null || return 1
   server_stop "${d}/srv"
   # The whole storage: ch-image checks its layout at start-up.
   tar -C "${d}/srv" -cJf "${carry}/image.tar.xz" --exclude='storage/dlcache/*' \
       state/images.json storage || return 1
   rm -rf "$d"
}

## run ##

passed=0
failed=0
check () {   # check NAME COMMAND...: run a check, count and print it
   local name=$1; shift
   if "$@"; then
      passed=$(( passed + 1 )); echo "ok      ${name}"
   else
      failed=$(( failed + 1 )); echo "FAILED  ${name}"
   fi
}

# Unpack Charliecloud, the venv and crictl under $base.
install_ () {
   [[ -d $carry ]] || die "no ${carry}: run prepare first and carry it"
   rm -rf "${base:?}/root" "${base:?}/bin"
   mkdir -p "${base}/root" "${base}/bin"
   local r=${base}/root
   tar -C "$r" -xJf "${carry}/charliecloud.tar.xz" || die "charliecloud"
   "${CHECK_PY:-python3}" -m venv "${base}/venv" || die "venv"
   "${base}/venv/bin/pip" install -q --no-index --find-links "${carry}/wheels" \
      -r "${top}/requirements.txt" || die "pip install"
   xz -dc "${carry}/crictl.xz" > "${base}/bin/crictl" || die "crictl"
   chmod 755 "${base}/bin/crictl"
   chmod -R a+rX "$base"
}

# Start a ch-cri as user $2 (or root) with files in $1 (made anew); wait
# for it. It is stopped, and its pods' keepers killed, at exit.
serve () {
   local d=$1 user=${2:-} i
   rm -rf "$d"
   mkdir -p "$d"
   tar -C "$d" -xJf "${carry}/image.tar.xz" || return 1
   # ch-run and ch-image from the unpacked tree (ch-image finds its
   # library relative to itself; ch-cri runs it with its own python).
   local cmd=(env PATH="${base}/root/usr/bin:/usr/sbin:/usr/bin:/sbin:/bin"
              "${base}/venv/bin/python3" "${top}/bin/ch-cri" serve
              --socket "${d}/ch-cri.sock" --state-dir "${d}/state"
              --storage "${d}/storage" --log-level verbose)
   local cg=/sys/fs/cgroup/cgroup.procs
   [[ -f $cg ]] || cg=""      # cgroup v1: stay where we are
   if [[ -n $user ]]; then
      chown -R "${user}:" "$d"   # its group too: gid 0 is unmapped there
      cmd=(setpriv --reuid="$user" --regid="$user" --init-groups
           env USER="$user" HOME="$d" "${cmd[@]}")
      cg=${cg_user:+${cg_user}/cgroup.procs}
   fi
   # ch-cri alone goes into its (delegated) cgroup, as systemd would start
   # it: a cgroup with this script in it could give its children nothing.
   ( if [[ -n $cg ]]; then echo "$BASHPID" > "$cg" || exit 1; fi
     exec "${cmd[@]}" ) > "${d}/log" 2>&1 &
   echo $! > "${d}/pid"
   for (( i = 0; i < 100; i++ )); do
      grep -q "serving on" "${d}/log" && return 0
      sleep 0.2
   done
   tail -n 20 "${d}/log"
   return 1
}

cri () { "${base}/bin/crictl" --runtime-endpoint "unix://${sock}" \
                              --image-endpoint "unix://${sock}" "$@" \
                              2> >(grep -v level=warn 1>&2); }

jget () {   # jget EXPR: print EXPR (Python, on d) of the JSON on stdin
   "${base}/venv/bin/python3" -c "import json, sys; d = json.load(sys.stdin); print($1)"
}


servers_stop () {
   local d
   for d in "${base}"/srv-*; do
      [[ -f ${d}/pid ]] && kill "$(cat "${d}/pid")" 2> /dev/null
      pkill -KILL -f "keeper.py ${d}/" 2> /dev/null
   done
   return 0
}

