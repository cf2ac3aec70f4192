# systemd units: what "make install" puts in place, checked with
# systemd-analyze verify. Needs no registry and no running systemd.

load ../common

setup () {
   scratch=$(mktemp -d /tmp/ch-cri-units.XXXXXX)
}

teardown () {
   rm -rf "$scratch"
}

# Install into $scratch/inst and set $sys and $usr to the units installed
# there; skip a unit configure was told to leave out (--with-...=no).
units_install () {
   make -s -C "$top" install DESTDIR="${scratch}/inst" > /dev/null
   sys=$(find "${scratch}/inst" -path '*/systemd/system/ch-cri.service')
   usr=$(find "${scratch}/inst" -path '*/systemd/user/ch-cri.service')
}

unit_or_skip () {
   local kind=$1
   if grep -qx "systemd${kind}unitdir = no" "${top}/Makefile"; then
      skip "configured with --with-systemd${kind}unitdir=no"
   fi
}

systemd_analyze_or_skip () {
   local ok=no
   command -v systemd-analyze > /dev/null && ok=yes
   prereq_or_skip "systemd-analyze (Debian: systemd)" "$ok"
}

# Print unit $1 with its ExecStart under $scratch/inst, where make install
# put ch-cri: verify then finds the command exactly where the unit says.
unit_staged () {
   sed -e "s|^ExecStart=|ExecStart=${scratch}/inst|" "$1"
}

@test 'units: installed, naming the installed ch-cri' {
   scope quick
   units_install
   for kind in system user; do
      unit_or_skip "$kind"
      f=$sys
      [[ $kind == user ]] && f=$usr
      echo "${kind}: ${f}"
      [[ -f $f ]]
      cmd=$(sed -n 's/^ExecStart=\(.*\) serve$/\1/p' "$f")
      echo "ExecStart: ${cmd}"
      [[ $cmd == /*/ch-cri ]]
      [[ -x ${scratch}/inst${cmd} ]]
      # Keepers outlive a restart of ch-cri, which finds them again.
      grep -qx 'KillMode=process' "$f"
      grep -qx 'Restart=always' "$f"
      grep -qx 'Before=kubelet.service' "$f"
   done
   grep -qx 'WantedBy=multi-user.target' "$sys"
   grep -qx 'WantedBy=default.target' "$usr"
}

@test 'units: systemd-analyze verify, unit for root' {
   scope quick
   unit_or_skip system
   systemd_analyze_or_skip
   units_install
   mkdir "${scratch}/v"
   unit_staged "$sys" > "${scratch}/v/ch-cri.service"
   # --man=no: the man page is installed only where rst2man is.
   run systemd-analyze verify --man=no "${scratch}/v/ch-cri.service"
   echo "$output"
   [[ $status -eq 0 ]]
   [[ -z $output ]]   # unknown keys and bad values are only warnings
}

@test 'units: systemd-analyze verify --user, user unit' {
   scope quick
   unit_or_skip user
   systemd_analyze_or_skip
   units_install
   mkdir "${scratch}/v"
   unit_staged "$usr" > "${scratch}/v/ch-cri.service"
   # A user manager needs a runtime directory, even just to verify.
   mkdir -m 700 "${scratch}/run"
   XDG_RUNTIME_DIR=${scratch}/run \
      run systemd-analyze verify --user --man=no \
                                 "${scratch}/v/ch-cri.service"
   echo "$output"
   [[ $status -eq 0 ]]
   [[ -z $output ]]
}
