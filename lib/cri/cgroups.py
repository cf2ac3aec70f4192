# Container resources through cgroups, where ch-cri may write them: cgroup
# v1 (as root), or the unified cgroup v2 hierarchy (as root, or as an
# ordinary user in a subtree systemd delegated to it); OOM kills; usage.

import os
import time
import types

import misc
from cri.keeper.logio import oom_kills


## Constants ##

ROOT = "/sys/fs/cgroup"
CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "cpuset")
# cgroup v2 controllers ch-cri enables for its cgroups, where available.
CONTROLLERS_V2 = ("cpu", "cpuset", "memory", "pids", "io", "hugetlb")
PARENT = "ch-cri"
# What the cgroup v1 devices controller lets every (unprivileged) container
# use, as runc does: mknod of any node (the file system decides where),
# null, zero, full, random, urandom, tty, ptmx and the ptys; the devices it
# was given are added to these.
DEVICES_DEFAULT = (("c", "*", "*", "m"), ("b", "*", "*", "m"),
                   ("c", 1, 3, "rwm"), ("c", 1, 5, "rwm"),
                   ("c", 1, 7, "rwm"), ("c", 1, 8, "rwm"),
                   ("c", 1, 9, "rwm"), ("c", 5, 0, "rwm"),
                   ("c", 5, 2, "rwm"), ("c", 136, "*", "rwm"))
# In a delegated cgroup v2 subtree, where ch-cri itself moves: a cgroup
# with processes can't give its children controllers.
SELF_LEAF = "ch-cri-server"


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


def shares_weight(shares):
   """Return cgroup v2 cpu.weight for cgroup v1 cpu.shares, the mapping
      runc and the kubelet use (2..262144 onto 1..10000).

      >>> [shares_weight(s) for s in (2, 1024, 262144)]
      [1, 39, 10000]
   """
   shares = min(max(shares, 2), 262144)
   return 1 + ((shares - 2) * 9999) // 262142


def settings_v2(r):
   """Return [(file, value)] for CRI LinuxContainerResources r on the
      unified hierarchy, in the order to write them; raise Cgroup_Error
      for a bad unified key.

      >>> class R: pass
      >>> r = R(); r.cpu_period = 100000; r.cpu_quota = 50000
      >>> r.cpu_shares = 1024; r.memory_limit_in_bytes = 2**20
      >>> r.memory_swap_limit_in_bytes = 2**20
      >>> r.cpuset_cpus = "0"; r.cpuset_mems = ""
      >>> r.hugepage_limits = []; r.unified = {"pids.max": "10"}
      >>> settings_v2(r)  # doctest: +NORMALIZE_WHITESPACE
      [('cpu.max', '50000 100000'), ('cpu.weight', '39'),
       ('memory.max', '1048576'), ('memory.swap.max', '0'),
       ('cpuset.cpus', '0'), ('pids.max', '10')]
   """
   out = []
   period = r.cpu_period if r.cpu_period > 0 else 100000
   if (r.cpu_quota > 0):
      out.append(("cpu.max", "%d %d" % (r.cpu_quota, period)))
   elif (r.cpu_quota < 0 or r.cpu_period > 0):
      out.append(("cpu.max", "max %d" % period))
   if (r.cpu_shares > 0):
      out.append(("cpu.weight", str(shares_weight(r.cpu_shares))))
   if (r.memory_limit_in_bytes > 0):
      out.append(("memory.max", str(r.memory_limit_in_bytes)))
      # The CRI's swap limit is memory plus swap; v2's is swap alone.
      swap = getattr(r, "memory_swap_limit_in_bytes", 0)
      if (swap > 0):
         out.append(("memory.swap.max",
                     str(max(0, swap - r.memory_limit_in_bytes))))
   if (r.cpuset_cpus):
      out.append(("cpuset.cpus", r.cpuset_cpus))
   if (r.cpuset_mems):
      out.append(("cpuset.mems", r.cpuset_mems))
   for h in getattr(r, "hugepage_limits", None) or []:
      if (not h.page_size or "/" in h.page_size):
         raise Cgroup_Error("hugepage_limits: bad page size %r"
                            % h.page_size)
      out.append(("hugetlb.%s.max" % h.page_size, str(h.limit)))
   for (k, v) in sorted((getattr(r, "unified", None) or {}).items()):
      if ("/" in k or k.startswith(".") or "." not in k
          or k.startswith("cgroup.")):
         raise Cgroup_Error("unified: not a controller file: %r" % k)
      out.append((k, v))
   return out


def unified_p(root):
   "Return True if root is a cgroup v2 (unified) hierarchy."
   return os.path.isfile(os.path.join(root, "cgroup.controllers"))


def self_cgroup_v2(proc_cgroup="/proc/self/cgroup"):
   r"""Return our cgroup v2 path ("/..." from the "0::" line), or None.

      >>> import tempfile
      >>> with tempfile.NamedTemporaryFile("w") as fp:
      ...    _ = fp.write("1:name=systemd:/x\n0::/user.slice/u.service\n")
      ...    fp.flush()
      ...    self_cgroup_v2(fp.name)
      '/user.slice/u.service'
   """
   try:
      with open(proc_cgroup) as fp:
         for line in fp:
            if (line.startswith("0::")):
               return line[3:].rstrip("\n")
   except OSError:
      pass
   return None


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


def kv_read(path):
   "Return the \"KEY VALUE\" lines of file path as {KEY: int}."
   out = dict()
   with open(path) as fp:
      for line in fp:
         (k, _, v) = line.partition(" ")
         try:
            out[k] = int(v)
         except ValueError:
            pass
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
   """Container cgroups at ROOT/CONTROLLER/POD/ID (cgroup v1) or ROOT/POD/ID
      (cgroup v2, v2 True), where POD is the pod's cgroup_parent (the
      kubelet's pod cgroup) or, if it has none, one ch-cri makes and
      owns: ch-cri/POD_ID. usable is False, with reason, where ch-cri
      cannot write them. Keys below are paths relative to each
      controller's root (v2: to ROOT, or to the delegated subtree base).

      As an ordinary user on cgroup v2, the subtree systemd delegated to
      us (our own cgroup, when we may write it) becomes the root: we move
      into a leaf of it (SELF_LEAF), and our cgroups go below, with the
      controllers our cgroup was given. On cgroup v1 (or v2 without
      delegation) an ordinary user has none."""

   def __init__(self, root=ROOT, driver="cgroupfs",
                proc_cgroup="/proc/self/cgroup", euid=None):
      self.root = root
      self.driver = driver
      self.reason = None
      self.v2 = unified_p(root)
      self.controllers = CONTROLLERS
      self.delegated = None       # our delegated v2 cgroup, as a user
      euid = os.geteuid() if euid is None else euid
      if (self.v2):
         if (euid != 0):
            self.delegation_find(proc_cgroup)
         if (self.reason is None):
            self.controllers = tuple(c for c in CONTROLLERS_V2
                                     if c in self.available())
            if ("memory" not in self.controllers):
               self.reason = ("cgroup v2 memory controller not available "
                              "at %s" % self.root)
      elif (euid != 0):
         self.reason = ("cgroups need root here (cgroup v1 has no "
                        "delegation)")
      else:
         missing = [c for c in CONTROLLERS
                    if not os.path.isfile(os.path.join(root, c,
                                                       "cgroup.procs"))]
         if (missing):
            self.reason = ("no cgroup v1 hierarchy for %s under %s"
                           % (", ".join(missing), root))
         elif (os.path.isfile(os.path.join(root, "devices",
                                           "cgroup.procs"))):
            self.controllers = CONTROLLERS + ("devices",)
      self.usable = self.reason is None

   def delegation_find(self, proc_cgroup):
      """As an ordinary user on cgroup v2: take our own cgroup as the root
         of ours if it was delegated to us (we may write it and its
         cgroup.subtree_control), moving ourselves into a leaf below it;
         else set reason."""
      mine = self_cgroup_v2(proc_cgroup)
      d = os.path.join(self.root, (mine or "/").lstrip("/"))
      if (os.path.basename(d) == SELF_LEAF):
         d = os.path.dirname(d)      # restarted in our leaf already
      if (mine is None or mine == "/"
          or not os.access(os.path.join(d, "cgroup.subtree_control"),
                           os.W_OK)
          or not os.access(d, os.W_OK)):
         self.reason = ("no cgroup v2 subtree delegated to uid %d (our "
                        "cgroup %s; systemd's user@.service with "
                        "Delegate=yes gives one)" % (os.geteuid(), mine))
         return
      leaf = os.path.join(d, SELF_LEAF)
      try:
         os.makedirs(leaf, exist_ok=True)
         file_write(os.path.join(leaf, "cgroup.procs"), str(os.getpid()))
      except (OSError, Cgroup_Error) as x:
         self.reason = "delegated cgroup %s: %s" % (d, x)
         return
      self.delegated = d
      self.root = self.delegated

   def available(self):
      "Return the v2 controllers our root may hand to its children."
      try:
         with open(os.path.join(self.root, "cgroup.controllers")) as fp:
            return fp.read().split()
      except OSError:
         return []

   def pod_key(self, parent, pod_id):
      """Return the key of a pod's cgroup (parent is its cgroup_parent)
         and whether ch-cri owns it. A kubelet without pod cgroups
         (cgroupsPerQOS false) gives the root, "/": ch-cri makes one.

         >>> Cgroups().pod_key("/", "p1")
         ('ch-cri/p1', True)
      """
      path = parent_path(parent, self.driver) if parent else ""
      if (not path or self.delegated is not None):
         # A user's cgroups all live in the subtree delegated to it.
         return (PARENT + "/" + pod_id, True)
      return (path, False)

   def dir_(self, controller, key):
      if (self.v2):
         return os.path.join(self.root, key)
      return os.path.join(self.root, controller, key)

   def ctrl_dirs(self):
      "Return the hierarchy roots: one per controller (v1), or ours (v2)."
      if (self.v2):
         return [self.root]
      return [os.path.join(self.root, c) for c in self.controllers]

   def mkdir(self, controller, key):
      """Make the cgroup and any missing parents; a new cpuset (v1)
         starts with its parent's CPUs and memory nodes; on v2 each
         parent hands our controllers down (cgroup.subtree_control)."""
      d = self.root if self.v2 else os.path.join(self.root, controller)
      enable = " ".join("+" + c for c in self.controllers)
      for comp in key.split("/"):
         if (self.v2):
            self.subtree_enable(d, enable)
         (parent, d) = (d, os.path.join(d, comp))
         try:
            os.mkdir(d, 0o755)
         except FileExistsError:
            continue
         except OSError as x:
            raise Cgroup_Error("can't make cgroup %s: %s" % (d, x.strerror))
         if (controller == "cpuset" and not self.v2):
            for f in ("cpuset.cpus", "cpuset.mems"):
               with open(os.path.join(parent, f)) as fp:
                  file_write(os.path.join(d, f), fp.read().strip())

   def subtree_enable(self, d, enable):
      "Let cgroup d's children use our controllers, if not done yet."
      p = os.path.join(d, "cgroup.subtree_control")
      try:
         with open(p) as fp:
            have = set(fp.read().split())
      except FileNotFoundError:
         have = set()         # (only in a test's fake tree)
      except OSError as x:
         raise Cgroup_Error("can't read %s: %s" % (p, x.strerror))
      if (not set(self.controllers) <= have):
         file_write(p, enable)

   def create(self, key, resources, devices=None):
      """Make cgroup key with resources (may be None); return the
         cgroup.procs files a process must join. With devices (a list of
         [type, major, minor, access]), a container's cgroup may use only
         those and DEVICES_DEFAULT, where the cgroup v1 devices controller
         is ours (v2 does this with eBPF programs: not done)."""
      for c in (["unified"] if self.v2 else self.controllers):
         self.mkdir(c, key)
      if (resources is not None):
         self.apply(key, resources)
      if (devices is not None and "devices" in self.controllers):
         self.devices_limit(key, devices)
      return [os.path.join(d, key, "cgroup.procs") for d in self.ctrl_dirs()]

   def devices_limit(self, key, devices):
      "Let cgroup key use only DEVICES_DEFAULT and devices (cgroup v1)."
      d = self.dir_("devices", key)
      file_write(os.path.join(d, "devices.deny"), "a")
      for (type_, major, minor, access) in (list(DEVICES_DEFAULT)
                                            + list(devices)):
         file_write(os.path.join(d, "devices.allow"),
                    "%s %s:%s %s" % (type_, major, minor, access))

   def apply(self, key, resources):
      if (self.v2):
         for (f, v) in settings_v2(resources):
            file_write(os.path.join(self.root, key, f), v)
         return
      for (c, f, v) in settings(resources):
         file_write(os.path.join(self.dir_(c, key), f), v)

   def usage(self, key):
      """Return (cpu ns, memory usage, working set, rss) of cgroup key,
         or None if it has none (or they can't be read). The working set
         is usage less inactive file pages, as cAdvisor counts it."""
      try:
         if (self.v2):
            d = os.path.join(self.root, key)
            cpu = int(kv_read(os.path.join(d, "cpu.stat"))["usage_usec"]) \
                  * 1000
            with open(os.path.join(d, "memory.current")) as fp:
               usage = int(fp.read())
            stat = kv_read(os.path.join(d, "memory.stat"))
            (inactive, rss) = ("inactive_file", "anon")
         else:
            with open(os.path.join(self.dir_("cpuacct", key),
                                   "cpuacct.usage")) as fp:
               cpu = int(fp.read())
            m = self.dir_("memory", key)
            with open(os.path.join(m, "memory.usage_in_bytes")) as fp:
               usage = int(fp.read())
            stat = kv_read(os.path.join(m, "memory.stat"))
            (inactive, rss) = ("total_inactive_file", "total_rss")
      except (OSError, ValueError, KeyError):
         return None
      ws = max(0, usage - stat.get(inactive, 0))
      return (cpu, usage, ws, stat.get(rss, 0))

   def psi(self, key):
      """Return {"cpu"|"memory"|"io": {"some"|"full": {"avg10", "avg60",
         "avg300", "total"}}} from cgroup key's *.pressure files (v2;
         empty on v1 or where the kernel has no PSI)."""
      out = dict()
      if (not self.v2):
         return out
      for res in ("cpu", "memory", "io"):
         try:
            with open(os.path.join(self.root, key,
                                   res + ".pressure")) as fp:
               lines = fp.read().splitlines()
         except OSError:
            continue
         out[res] = dict()
         for line in lines:
            (kind, _, rest) = line.partition(" ")
            out[res][kind] = { k: float(v) for (k, _, v) in
                               (f.partition("=") for f in rest.split()) }
      return out

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
      for cd in self.ctrl_dirs():
         top = os.path.join(cd, PARENT)
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
      for cd in self.ctrl_dirs():
         d = os.path.join(cd, key)
         try:
            os.rmdir(d)
         except FileNotFoundError:
            pass
         except OSError as x:
            log.warning("can't remove cgroup %s: %s", d, x.strerror)
