# Container resources through cgroup v1 (cgroupfs), where ch-cri may write
# them (as root), and detection of OOM kills.

import os

import misc
from cri.keeper_io import oom_kills


## Constants ##

ROOT = "/sys/fs/cgroup"
CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "cpuset")
PARENT = "ch-cri"


## Globals ##

log = misc.log


## Exceptions ##

class Cgroup_Error(Exception):
   "A cgroup could not be made or written; the message names the file."


## Functions ##

def settings(r):
   """Return [(controller, file, value)] for CRI LinuxContainerResources r,
      in the order to write them (period before quota).

      >>> class R: pass
      >>> r = R(); r.cpu_period = 100000; r.cpu_quota = 50000
      >>> r.cpu_shares = 2; r.memory_limit_in_bytes = 0
      >>> r.cpuset_cpus = ""; r.cpuset_mems = ""
      >>> settings(r)[0]
      ('cpu', 'cpu.cfs_period_us', '100000')
      >>> len(settings(r))
      3
   """
   out = []
   if (r.cpu_period > 0):
      out.append(("cpu", "cpu.cfs_period_us", str(r.cpu_period)))
   if (r.cpu_quota != 0):
      out.append(("cpu", "cpu.cfs_quota_us", str(r.cpu_quota)))
   if (r.cpu_shares > 0):
      out.append(("cpu", "cpu.shares", str(max(2, r.cpu_shares))))
   if (r.memory_limit_in_bytes > 0):
      out.append(("memory", "memory.limit_in_bytes",
                  str(r.memory_limit_in_bytes)))
   if (r.cpuset_cpus):
      out.append(("cpuset", "cpuset.cpus", r.cpuset_cpus))
   if (r.cpuset_mems):
      out.append(("cpuset", "cpuset.mems", r.cpuset_mems))
   return out


def file_write(path, value):
   try:
      with open(path, "w") as fp:
         fp.write(value)
   except OSError as x:
      raise Cgroup_Error("can't write %r to %s: %s"
                         % (value, path, x.strerror))


## Classes ##

class Cgroups:
   """Per-container cgroups ROOT/CONTROLLER/ch-cri/ID. usable is False,
      with reason, where ch-cri cannot write them (not root, or no cgroup
      v1 hierarchy with these controllers)."""

   def __init__(self, root=ROOT):
      self.root = root
      self.reason = None
      if (os.geteuid() != 0):
         self.reason = "cgroups need root (cgroup v1 has no delegation)"
      else:
         missing = [c for c in CONTROLLERS
                    if not os.path.isfile(os.path.join(root, c,
                                                       "cgroup.procs"))]
         if (missing):
            self.reason = ("no cgroup v1 hierarchy for %s under %s"
                           % (", ".join(missing), root))
      self.usable = self.reason is None

   def dir_(self, controller, id_):
      return os.path.join(self.root, controller, PARENT, id_)

   def mkdir(self, controller, id_):
      "Make the cgroup (and its parent); cpusets start with the parent's."
      for d in (os.path.join(self.root, controller, PARENT),
                self.dir_(controller, id_)):
         try:
            os.mkdir(d, 0o755)
         except FileExistsError:
            continue
         except OSError as x:
            raise Cgroup_Error("can't make cgroup %s: %s" % (d, x.strerror))
         if (controller == "cpuset"):
            for f in ("cpuset.cpus", "cpuset.mems"):
               with open(os.path.join(os.path.dirname(d), f)) as fp:
                  file_write(os.path.join(d, f), fp.read().strip())

   def create(self, id_, resources):
      """Make container id_'s cgroups with resources (may be None); return
         the cgroup.procs files its process must join."""
      for c in CONTROLLERS:
         self.mkdir(c, id_)
      if (resources is not None):
         self.apply(id_, resources)
      return [os.path.join(self.dir_(c, id_), "cgroup.procs")
              for c in CONTROLLERS]

   def apply(self, id_, resources):
      for (c, f, v) in settings(resources):
         file_write(os.path.join(self.dir_(c, id_), f), v)

   def usage(self, id_):
      """Return (cpu ns, memory usage, working set, rss) of container
         id_'s cgroups, or None if it has none (or they can't be read).
         The working set is usage less inactive file pages, as cAdvisor
         counts it."""
      try:
         with open(os.path.join(self.dir_("cpuacct", id_),
                                "cpuacct.usage")) as fp:
            cpu = int(fp.read())
         m = self.dir_("memory", id_)
         with open(os.path.join(m, "memory.usage_in_bytes")) as fp:
            usage = int(fp.read())
         stat = dict()
         with open(os.path.join(m, "memory.stat")) as fp:
            for line in fp:
               (k, _, v) = line.partition(" ")
               stat[k] = int(v)
      except (OSError, ValueError):
         return None
      ws = max(0, usage - stat.get("total_inactive_file", 0))
      return (cpu, usage, ws, stat.get("total_rss", 0))

   def oom_killed_p(self, id_):
      return oom_kills(self.dir_("memory", id_)) > 0

   def remove(self, id_):
      "Remove container id_'s cgroups (empty by now); log what stays."
      for c in CONTROLLERS:
         d = self.dir_(c, id_)
         try:
            os.rmdir(d)
         except FileNotFoundError:
            pass
         except OSError as x:
            log.warning("can't remove cgroup %s: %s", d, x.strerror)
