# Container resources through cgroup v1 (cgroupfs), where ch-cri may write
# them (as root), and detection of OOM kills.

import os
import time
import types

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


def parent_path(parent, driver):
   """Return the cgroup path, relative to each controller's root, of the
      CRI cgroup_parent parent (the kubelet's pod cgroup) for cgroup
      driver driver; raise Cgroup_Error if it is malformed.

      >>> parent_path("/kubepods/burstable/pod1", "cgroupfs")
      'kubepods/burstable/pod1'
      >>> parent_path("kubepods-burstable-pod1.slice", "systemd")
      'kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice'
      >>> try:
      ...    parent_path("/a/../b", "cgroupfs")
      ... except Cgroup_Error as x:
      ...    print(x)
      cgroup_parent: bad component '..' in '/a/../b'
   """
   if (driver == "systemd"):
      # A slice's cgroup nests in those of its name's dash-prefixes.
      if (not parent.endswith(".slice") or "/" in parent):
         raise Cgroup_Error("cgroup_parent: %r is not a systemd slice name"
                            % parent)
      name = parent[:-len(".slice")]
      if (name == "-"):
         return ""
      parts = name.split("-")
      if (not all(parts)):
         raise Cgroup_Error("cgroup_parent: bad slice name %r" % parent)
      return "/".join("-".join(parts[:i + 1]) + ".slice"
                      for i in range(len(parts)))
   comps = [c for c in parent.split("/") if c]
   for c in comps:
      if (c in (".", "..") or "\0" in c or "\n" in c):
         raise Cgroup_Error("cgroup_parent: bad component %r in %r"
                            % (c, parent))
   return "/".join(comps)


def sum_resources(r, o):
   """Return the settings() pairs for a pod cgroup: pod resources r plus
      overhead o (either may be None), with r's period.

      >>> class R: pass
      >>> r = R(); r.cpu_period = 100000; r.cpu_quota = 50000
      >>> r.cpu_shares = 512; r.memory_limit_in_bytes = 2**20
      >>> r.cpuset_cpus = ""; r.cpuset_mems = ""
      >>> s = sum_resources(r, r)
      >>> (s.cpu_quota, s.cpu_shares, s.memory_limit_in_bytes)
      (100000, 1024, 2097152)
   """
   out = types.SimpleNamespace()
   for f in ("cpu_period", "cpu_quota", "cpu_shares",
             "memory_limit_in_bytes"):
      a = getattr(r, f, 0) if r is not None else 0
      b = getattr(o, f, 0) if o is not None else 0
      setattr(out, f, a + b if a > 0 and f != "cpu_period" else a)
   out.cpuset_cpus = getattr(r, "cpuset_cpus", "") if r is not None else ""
   out.cpuset_mems = getattr(r, "cpuset_mems", "") if r is not None else ""
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
   """Container cgroups at ROOT/CONTROLLER/POD/ID, where POD is the pod's
      cgroup_parent (the kubelet's pod cgroup) or, if it has none, one
      ch-cri makes and owns: ch-cri/POD_ID. usable is False, with reason,
      where ch-cri cannot write them (not root, or no cgroup v1 hierarchy
      with these controllers). Keys below are paths relative to each
      controller's root."""

   def __init__(self, root=ROOT, driver="cgroupfs"):
      self.root = root
      self.driver = driver
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

   def pod_key(self, parent, pod_id):
      """Return the key of a pod's cgroup (parent is its cgroup_parent)
         and whether ch-cri owns it. A kubelet without pod cgroups
         (cgroupsPerQOS false) gives the root, "/": ch-cri makes one.

         >>> Cgroups().pod_key("/", "p1")
         ('ch-cri/p1', True)
      """
      path = parent_path(parent, self.driver) if parent else ""
      if (not path):
         return (PARENT + "/" + pod_id, True)
      return (path, False)

   def dir_(self, controller, key):
      return os.path.join(self.root, controller, key)

   def mkdir(self, controller, key):
      """Make the cgroup and any missing parents; a new cpuset starts with
         its parent's CPUs and memory nodes."""
      d = os.path.join(self.root, controller)
      for comp in key.split("/"):
         (parent, d) = (d, os.path.join(d, comp))
         try:
            os.mkdir(d, 0o755)
         except FileExistsError:
            continue
         except OSError as x:
            raise Cgroup_Error("can't make cgroup %s: %s" % (d, x.strerror))
         if (controller == "cpuset"):
            for f in ("cpuset.cpus", "cpuset.mems"):
               with open(os.path.join(parent, f)) as fp:
                  file_write(os.path.join(d, f), fp.read().strip())

   def create(self, key, resources):
      """Make cgroup key with resources (may be None); return the
         cgroup.procs files a process must join."""
      for c in CONTROLLERS:
         self.mkdir(c, key)
      if (resources is not None):
         self.apply(key, resources)
      return [os.path.join(self.dir_(c, key), "cgroup.procs")
              for c in CONTROLLERS]

   def apply(self, key, resources):
      for (c, f, v) in settings(resources):
         file_write(os.path.join(self.dir_(c, key), f), v)

   def usage(self, key):
      """Return (cpu ns, memory usage, working set, rss) of cgroup key,
         or None if it has none (or they can't be read). The working set
         is usage less inactive file pages, as cAdvisor counts it."""
      try:
         with open(os.path.join(self.dir_("cpuacct", key),
                                "cpuacct.usage")) as fp:
            cpu = int(fp.read())
         m = self.dir_("memory", key)
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

   def oom_killed_p(self, key):
      return oom_kills(self.dir_("memory", key)) > 0

   def sweep(self, known, age=60):
      """Remove the cgroups under ch-cri's own (ROOT/*/ch-cri) that name
         no pod or container in known, are empty, and are older than age
         seconds (another ch-cri on this host may be making one): what a
         ch-cri killed mid-removal, or a state directory deleted with its
         containers, left. Return how many were removed."""
      ct = 0
      now = time.time()
      for c in CONTROLLERS:
         top = self.dir_(c, PARENT)
         try:
            names = os.listdir(top)
         except OSError:
            continue
         for name in names:
            d = os.path.join(top, name)
            try:
               if (name in known or not os.path.isdir(d)
                   or now - os.stat(d).st_mtime < age):
                  continue
               for (dp, dns, _) in os.walk(d, topdown=False):
                  for n in dns:
                     os.rmdir(os.path.join(dp, n))
               os.rmdir(d)
               ct += 1
            except OSError:
               pass     # busy (processes in it) or gone meanwhile
      return ct

   def remove(self, key):
      "Remove cgroup key (empty by now); log what stays."
      for c in CONTROLLERS:
         d = self.dir_(c, key)
         try:
            os.rmdir(d)
         except FileNotFoundError:
            pass
         except OSError as x:
            log.warning("can't remove cgroup %s: %s", d, x.strerror)
