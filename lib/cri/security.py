# A container's security context made concrete: the capabilities it keeps,
# its seccomp filter (compiled with libseccomp), no_new_privs, and masked
# and read-only paths. ch-cri-init applies the first three inside the
# container; the keeper applies the paths before ch-run.

import errno
import json
import os
import tempfile

import pyseccomp

import misc
import cri.errors as err

from cri_api.v1 import api_pb2 as pb


## Constants ##

# Linux capability numbers (linux/capability.h).
CAPS = ("CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID",
        "KILL", "SETGID", "SETUID", "SETPCAP", "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
        "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT",
        "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
        "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE",
        "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE",
        "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ",
        "PERFMON", "BPF", "CHECKPOINT_RESTORE")
# What a container keeps unless its security context says otherwise: the
# set Kubernetes runtimes customarily grant.
CAPS_DEFAULT = ("CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD",
                "NET_RAW", "SETGID", "SETUID", "SETFCAP", "SETPCAP",
                "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE")
# ch-cri's RuntimeDefault seccomp profile: allow everything except these
# system calls, which fail with EPERM. They administer the kernel or the
# host (modules, clocks, swap, reboot, accounting, keyrings), inspect or
# modify other processes' memory, or make namespaces and mounts (which a
# container needs only through its runtime).
DEFAULT_DENY = ("acct", "add_key", "bpf", "clock_adjtime", "clock_settime",
                "create_module", "delete_module", "finit_module",
                "fsconfig", "fsmount", "fsopen", "fspick", "get_kernel_syms",
                "init_module", "ioperm", "iopl", "kcmp", "kexec_file_load",
                "kexec_load", "keyctl", "lookup_dcookie", "mount",
                "mount_setattr", "move_mount", "name_to_handle_at",
                "nfsservctl", "open_by_handle_at", "open_tree",
                "perf_event_open", "pivot_root", "process_vm_readv",
                "process_vm_writev", "ptrace", "query_module", "quotactl",
                "quotactl_fd", "reboot", "request_key", "setns",
                "settimeofday", "swapoff", "swapon", "sysfs", "_sysctl",
                "umount", "umount2", "unshare", "uselib", "userfaultfd",
                "ustat", "vm86", "vm86old")
ACTIONS = { "SCMP_ACT_ALLOW": lambda r: pyseccomp.ALLOW,
            "SCMP_ACT_ERRNO": lambda r: pyseccomp.ERRNO(r or errno.EPERM),
            "SCMP_ACT_KILL": lambda r: pyseccomp.KILL,
            "SCMP_ACT_KILL_THREAD": lambda r: pyseccomp.KILL_THREAD,
            "SCMP_ACT_KILL_PROCESS": lambda r: pyseccomp.KILL_PROCESS,
            "SCMP_ACT_TRAP": lambda r: pyseccomp.TRAP,
            "SCMP_ACT_LOG": lambda r: pyseccomp.LOG,
            "SCMP_ACT_TRACE": lambda r: pyseccomp.TRACE(r or 0) }
OPS = { "SCMP_CMP_NE": pyseccomp.NE, "SCMP_CMP_LT": pyseccomp.LT,
        "SCMP_CMP_LE": pyseccomp.LE, "SCMP_CMP_EQ": pyseccomp.EQ,
        "SCMP_CMP_GE": pyseccomp.GE, "SCMP_CMP_GT": pyseccomp.GT,
        "SCMP_CMP_MASKED_EQ": pyseccomp.MASKED_EQ }
# Masked and read-only paths every container gets whatever the request
# says (clients such as crictl send none), unless privileged: the OCI
# runtime spec's defaults, as containerd and CRI-O apply them. /sys as a
# whole is made read-only as well (see premount_ops in keeper/lifecycle.py).
MASKED_DEFAULT = ("/proc/acpi", "/proc/asound", "/proc/interrupts",
                  "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                  "/proc/sched_debug", "/proc/scsi", "/proc/timer_list",
                  "/proc/timer_stats", "/sys/devices/virtual/powercap",
                  "/sys/firmware")
READONLY_DEFAULT = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                    "/proc/sysrq-trigger")
PROFILE_MAX = 1 << 20
SC = "config.linux.security_context"


## Globals ##

log = misc.log


## Functions ##

def caps_mask(sc):
   """Return the hex mask of the capabilities the container keeps.

      >>> caps_mask(pb.LinuxContainerSecurityContext())
      'a80425fb'
      >>> sc = pb.LinuxContainerSecurityContext()
      >>> sc.capabilities.drop_capabilities.append("ALL")
      >>> sc.capabilities.add_capabilities.append("CAP_NET_ADMIN")
      >>> caps_mask(sc)
      '1000'
   """
   if (sc.privileged):
      return "%x" % ((1 << len(CAPS)) - 1)
   keep = set(CAPS_DEFAULT)
   for (verb, names) in (("drop", sc.capabilities.drop_capabilities),
                         ("add", sc.capabilities.add_capabilities)):
      for n in names:
         n = n.upper().removeprefix("CAP_")
         if (n == "ALL"):
            keep = set() if verb == "drop" else set(CAPS)
         elif (n not in CAPS):
            raise err.Invalid_Argument("%s.capabilities.%s_capabilities: "
                                       "unknown capability %r"
                                       % (SC, verb, n))
         elif (verb == "drop"):
            keep.discard(n)
         else:
            keep.add(n)
   return "%x" % sum(1 << CAPS.index(n) for n in keep)


def profile(sc):
   """Return the container's seccomp profile: None (unconfined), "default"
      or the path of a localhost profile. The deprecated
      seccomp_profile_path is honoured when seccomp is unset."""
   if (sc.privileged):
      return None
   if (sc.HasField("seccomp")):
      s = sc.seccomp
      f = SC + ".seccomp"
      if (s.profile_type == pb.SecurityProfile.ProfileType.RuntimeDefault):
         return "default"
      if (s.profile_type == pb.SecurityProfile.ProfileType.Unconfined):
         return None
      if (not os.path.isabs(s.localhost_ref)):
         raise err.Invalid_Argument("%s.localhost_ref: not an absolute "
                                    "path: %r" % (f, s.localhost_ref))
      return s.localhost_ref
   p = sc.seccomp_profile_path
   if (p in ("", "unconfined")):
      return None
   if (p in ("runtime/default", "docker/default")):
      return "default"
   if (p.startswith("localhost/") and os.path.isabs(p[10:])):
      return p[10:]
   raise err.Invalid_Argument("%s.seccomp_profile_path: %r: expected "
                              "runtime/default, unconfined or "
                              "localhost/ABSOLUTE-PATH" % (SC, p))


def filter_default():
   f = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
   for name in DEFAULT_DENY:
      try:
         f.add_rule(pyseccomp.ERRNO(errno.EPERM), name)
      except (ValueError, OSError):
         pass   # not a system call on this architecture
   return f


def filter_localhost(path, field):
   """Return the filter of the OCI seccomp profile (JSON) at path; raise
      Invalid_Argument naming field."""
   try:
      with open(path, "rb") as fp:
         d = json.loads(fp.read(PROFILE_MAX))
   except (OSError, ValueError) as x:
      raise err.Invalid_Argument("%s: can't read seccomp profile %s: %s"
                                 % (field, path, x))
   def action(name, ret):
      if (name not in ACTIONS):
         raise err.Invalid_Argument("%s: %s: unknown action %r"
                                    % (field, path, name))
      return ACTIONS[name](ret)
   if (not isinstance(d, dict) or not isinstance(d.get("syscalls", []),
                                                 list)):
      raise err.Invalid_Argument("%s: %s: not a seccomp profile"
                                 % (field, path))
   f = pyseccomp.SyscallFilter(action(d.get("defaultAction"),
                                      d.get("defaultErrnoRet")))
   for rule in d.get("syscalls", []):
      names = rule.get("names") or ([rule["name"]] if rule.get("name")
                                    else [])
      act = action(rule.get("action"), rule.get("errnoRet"))
      try:
         args = [pyseccomp.Arg(a["index"], OPS[a["op"]], a.get("value", 0),
                               a.get("valueTwo", 0))
                 for a in rule.get("args") or []]
      except (KeyError, TypeError) as x:
         raise err.Invalid_Argument("%s: %s: bad args in rule for %s: %s"
                                    % (field, path, names, x))
      for n in names:
         try:
            f.add_rule(act, n, *args)
         except (ValueError, OSError) as x:
            # A name this kernel or libseccomp does not know can't be
            # called either; runtimes skip it too.
            log.info("%s: %s: rule for %s skipped: %s", field, path, n, x)
   return f


def filter_hex(prof):
   "Return the BPF of profile prof (see profile()) in hex, or None."
   if (prof is None):
      return None
   f = (filter_default() if prof == "default"
        else filter_localhost(prof, SC + ".seccomp.localhost_ref"))
   with tempfile.TemporaryFile() as fp:
      f.export_bpf(fp)
      fp.seek(0)
      return fp.read().hex()


def paths_check(paths, field):
   "Return paths, refusing any that is relative or has .. components."
   for (i, p) in enumerate(paths):
      if (not os.path.isabs(p) or ".." in p.split("/") or "\0" in p):
         raise err.Invalid_Argument("%s[%d]: must be absolute without "
                                    "..: %r" % (field, i, p))
   return list(paths)


def make(config):
   """Return the security part of a container's run spec: init options
      (for ch-cri-init) and the paths the keeper masks or makes
      read-only."""
   sc = config.linux.security_context
   masked = paths_check(sc.masked_paths, SC + ".masked_paths")
   ro = paths_check(sc.readonly_paths, SC + ".readonly_paths")
   if (sc.privileged):
      (masked, ro) = ([], [])
   else:
      masked += [p for p in MASKED_DEFAULT if p not in masked]
      ro += [p for p in READONLY_DEFAULT if p not in ro]
   # ch-run mounts /tmp itself, after the keeper's work: ch-cri-init makes
   # it read-only inside.
   ro_init = [p for p in ro if p == "/tmp" or p.startswith("/tmp/")]
   return { "caps": caps_mask(sc), "nnp": sc.no_new_privs,
            "seccomp": filter_hex(profile(sc)), "masked": masked,
            "readonly": [p for p in ro if p not in ro_init],
            "readonly_init": ro_init, "sys_ro": not sc.privileged }


def init_argv(init_path, sec, exec_p=False):
   """Return the argv prefix running ch-cri-init (at init_path inside the
      container) for security spec sec (None: no prefix, for containers
      made before ch-cri had it). An exec (exec_p) joins the container's
      mounts as they are.

      >>> init_argv("/.i", {"caps": "ff", "nnp": True, "seccomp": None,
      ...                   "readonly_init": ["/tmp"]})
      ['/.i', '-r', '/tmp', '-c', 'ff', '-n', '--']
   """
   if (sec is None):
      return []
   a = [init_path]
   for p in ([] if exec_p else sec.get("readonly_init", [])):
      a += ["-r", p]
   a += ["-c", sec["caps"]]
   a += ["-n"] if sec.get("nnp") else []
   a += ["-s", sec["seccomp"]] if sec.get("seccomp") else []
   return a + ["--"]
