# The keeper's namespace and mount helpers: mount(2) and the mount API
# through libc, a container's premounts (masked and read-only paths, its
# own cgroups), user namespaces and their ID maps, and joining namespaces.
#
# Standard library only (the keeper's rule). Imported both by the keeper
# (a top-level module beside keeper.py) and by ch-cri (cri.keeper.nsmount,
# for copies of mount trees).

import ctypes
import os
import re
import struct


## Constants ##

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 1 << 14
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
# Mount propagation by CRI name (cri.spec.PROPAGATION), applied recursively.
PROPAGATION = { "private": MS_PRIVATE, "slave": MS_SLAVE }
# statvfs f_flag bits that mount(2) takes back, same values (ST_* = MS_*):
# a remount must repeat the locked ones (nosuid, nodev, noexec, atime).
ST_KEEP = 2 | 4 | 8 | 1024 | 2048 | 4096
PR_SET_CHILD_SUBREAPER = 36
# The mount API (Linux 5.2): same numbers on every architecture.
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
SYS_MOUNT_SETATTR = 442
AT_EMPTY_PATH = 0x1000
MOUNT_ATTR_IDMAP = 0x00100000
MOVE_MOUNT_F_EMPTY_PATH = 4


## Globals ##

libc = None


## Functions ##

def libc_call(name, *args):
   "Call libc function name; raise OSError with errno if it fails."
   global libc
   if (libc is None):
      libc = ctypes.CDLL(None, use_errno=True)
   if (getattr(libc, name)(*args) != 0):
      e = ctypes.get_errno()
      raise OSError(e, "%s: %s" % (name, os.strerror(e)))


def mount(src, dst, fstype, flags, data):
   "mount(2) (src, fstype and data may be None); raise OSError naming dst."
   try:
      libc_call("mount", *(None if a is None else a.encode()
                           for a in (src, dst, fstype)), flags,
                data.encode() if data is not None else None)
   except OSError as x:
      raise OSError(x.errno, "mount %s: %s" % (dst, os.strerror(x.errno)))


def umount_detach(path):
   "Detach the mount at path and those below it (lazily); raise OSError."
   try:
      libc_call("umount2", path.encode(), MNT_DETACH)
   except OSError as x:
      raise OSError(x.errno, "umount %s: %s" % (path, os.strerror(x.errno)))


def bind_ro(path):
   "Make the bind mount at path read-only."
   bind_flags(path, MS_RDONLY)


def bind_flags(path, flags):
   """Add flags (MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC) to the bind
      mount at path. A remount must repeat the flags it has, those locked
      by a less privileged mount namespace among them (ST_KEEP), and
      read-only stays read-only."""
   mount(None, path, None, MS_BIND | MS_REMOUNT | flags
                           | (os.statvfs(path).f_flag
                              & (ST_KEEP | MS_RDONLY)), None)


def tree_clone(path):
   """Return a file descriptor holding a detached copy of the mount tree
      at path, as we see it (submounts included); raise OSError. Needs
      CAP_SYS_ADMIN over our mount namespace (so ch-cri as root)."""
   global libc
   if (libc is None):
      libc = ctypes.CDLL(None, use_errno=True)
   fd = libc.syscall(SYS_OPEN_TREE, AT_FDCWD, path.encode(),
                     OPEN_TREE_CLONE | os.O_CLOEXEC | AT_RECURSIVE)
   if (fd < 0):
      e = ctypes.get_errno()
      raise OSError(e, "open_tree %s: %s" % (path, os.strerror(e)))
   return fd


def tree_idmap(fd, userns_fd):
   """ID-map the detached mount tree fd (from tree_clone()), submounts
      included, through user namespace userns_fd: its files then belong
      to the IDs they have there (a pod's root owns what host root owns).
      Needs CAP_SYS_ADMIN over the filesystems' own user namespace (ch-cri
      as root); raise OSError, e.g. where a filesystem cannot be mapped."""
   global libc
   if (libc is None):
      libc = ctypes.CDLL(None, use_errno=True)
   attr = ctypes.create_string_buffer(
      struct.pack("QQQQ", MOUNT_ATTR_IDMAP, 0, 0, userns_fd))
   if (libc.syscall(SYS_MOUNT_SETATTR, fd, b"", AT_EMPTY_PATH | AT_RECURSIVE,
                    attr, 32) != 0):
      e = ctypes.get_errno()
      raise OSError(e, "ID-mapped mount: %s" % os.strerror(e))


def tree_attach(fd, dst):
   "Mount the tree that tree_clone() returned at dst; raise OSError."
   global libc
   if (libc is None):
      libc = ctypes.CDLL(None, use_errno=True)
   if (libc.syscall(SYS_MOVE_MOUNT, fd, b"", AT_FDCWD, dst.encode(),
                    MOVE_MOUNT_F_EMPTY_PATH) != 0):
      e = ctypes.get_errno()
      raise OSError(e, "move_mount to %s: %s" % (dst, os.strerror(e)))


def subreaper_set():
   "Become the parent of orphans among our descendants."
   libc_call("prctl", PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def premounts_apply(ops):
   """In B's own mount namespace: for ("mask", path) hide path (/dev/null
      over a file, an empty read-only tmpfs over a directory); for ("ro",
      path) make it read-only; for ("rro", path) make it and every mount
      below it read-only; for ("cgroup", path) show, at each cgroup
      hierarchy mounted below path, only our own cgroup (read-only); for
      ("dev", args) make the container's own /dev (devfs.dev_make(**args));
      for ("hooks", args) run CDI hooks (cdihooks.run(**args)). Paths that
      do not exist are skipped."""
   for (kind, path) in ops:
      if (kind == "dev"):
         # The keeper's own module (it imports us): keeper side only.
         import devfs   # noqa: E402
         devfs.dev_make(**path)
         continue
      if (kind == "hooks"):
         import cdihooks   # noqa: E402
         cdihooks.run(**path)
         continue
      if (not os.path.lexists(path)):
         continue
      if (kind == "mask"):
         if (os.path.isdir(path)):
            mount("tmpfs", path, "tmpfs", MS_RDONLY, "size=0")
         else:
            mount("/dev/null", path, None, MS_BIND, None)
      elif (kind == "cgroup"):
         cgroups_own(path)
      else:
         mount(path, path, None, MS_BIND | MS_REC, None)
         bind_ro(path)
         if (kind == "rro"):
            for sub in submounts(path):
               try:
                  bind_ro(sub)
               except OSError as x:
                  # Gone (an autofs, a racing unmount) or already locked
                  # read-only: only a mount still writable is an error.
                  if (os.path.lexists(sub)
                      and not os.statvfs(sub).f_flag & MS_RDONLY):
                     raise


def mountinfo():
   """Return [(root, mount point, fstype, super options)] of our mounts,
      in mount order."""
   out = []
   with open("/proc/self/mountinfo") as fp:
      for line in fp:
         (a, _, b) = line.rstrip("\n").partition(" - ")
         f = a.split(" ")
         g = b.split(" ")
         # Mount points escape space, tab, newline and backslash in octal.
         (root, mp) = (re.sub(r"\\([0-7]{3})",
                              lambda m: chr(int(m.group(1), 8)), x)
                       for x in (f[3], f[4]))
         out.append((root, mp, g[0], g[2] if len(g) > 2 else ""))
   return out


def submounts(top):
   "Return the mount points below top, outermost first."
   pre = top.rstrip("/") + "/"
   return sorted({ mp for (_, mp, _, _) in mountinfo()
                   if mp.startswith(pre) }, key=len)


def cgroups_own(top):
   """Over each cgroup (v1 or v2) hierarchy mounted below top, bind our
      own cgroup there, read-only: a container sees and can change none
      of the host's or its neighbours' cgroups (as with runc's cgroup
      namespace). A hierarchy where our cgroup is not below the mount's
      root is left read-only as it is."""
   mine = dict()        # controllers ("" for v2) -> our path
   with open("/proc/self/cgroup") as fp:
      for line in fp:
         (_, ctrls, path) = line.rstrip("\n").split(":", 2)
         mine[ctrls] = path
   for (root, mp, fstype, opts) in mountinfo():
      if (not mp.startswith(top.rstrip("/") + "/")):
         continue
      if (fstype == "cgroup2"):
         path = mine.get("")
      elif (fstype == "cgroup"):
         want = set(opts.split(","))
         path = next((p for (c, p) in mine.items()
                      if c and set(c.split(",")) <= want), None)
      else:
         continue
      if (path is None or path == root):
         continue
      rel = os.path.relpath(path, root)
      if (rel.startswith("..")):
         continue
      src = os.path.join(mp, rel)
      if (os.path.isdir(src)):
         mount(src, mp, None, MS_BIND, None)
         bind_ro(mp)


def user_drop(user):
   """Become user {"uid", "gid", "groups"} (IDs in our user namespace, or
      with "userns", a descriptor of the pod's, in that one): the
      container's process is then that host user to every file and sysfs
      check, as with runc, before ch-run maps it into a namespace of its
      own."""
   if (user.get("userns") is not None):
      libc_call("setns", user["userns"], CLONE_NEWUSER)
   os.setgroups(user.get("groups") or [])
   os.setresgid(user["gid"], user["gid"], user["gid"])
   os.setresuid(user["uid"], user["uid"], user["uid"])


def maps_write(pid, maps):
   "Write user namespace ID maps {\"uid_map\", ...} of process pid."
   for name in ("setgroups", "uid_map", "gid_map"):
      if (maps.get(name)):
         with open("/proc/%d/%s" % (pid, name), "w") as fp:
            fp.write(maps[name])


def userns_hold(maps):
   """Make a user namespace with ID maps maps (a pod's, for hostUsers:
      false), held by a child that lives as long as we do. Return (the
      child's PID, a descriptor of the namespace); raise OSError."""
   (r, w) = os.pipe()
   (r2, w2) = os.pipe()
   kid = os.fork()
   if (kid == 0):
      try:
         os.close(w)
         os.close(r2)
         libc_call("unshare", CLONE_NEWUSER)
         os.close(w2)            # tells the parent the namespace is made
         os.read(r, 1)           # end of file once the parent is gone
      finally:
         os._exit(0)
   os.close(r)
   os.close(w2)
   os.read(r2, 1)
   os.close(r2)
   try:
      maps_write(kid, maps)
      fd = os.open("/proc/%d/ns/user" % kid, os.O_RDONLY | os.O_CLOEXEC)
   except OSError:
      os.kill(kid, 9)
      os.waitpid(kid, 0)
      raise
   # w stays open, never inheritable, for our lifetime.
   return (kid, fd)


def userns_enter(maps, net_p, uts_p, ipc_p):
   """Make a user namespace with ID maps maps {"uid_map", "gid_map",
      "setgroups"} (written by a helper child still outside it: a process
      can map only itself into a namespace it made), then mount, and if
      asked network, UTS and IPC namespaces owned by it; make every mount
      a slave (host mounts made later reach us, ours never the host).
      Raise OSError naming what failed."""
   (r, w) = os.pipe()
   (r2, w2) = os.pipe()
   parent = os.getpid()
   kid = os.fork()
   if (kid == 0):
      os.close(w)
      os.close(r2)
      code = 1
      try:
         if (os.read(r, 1) == b"u"):
            maps_write(parent, maps)
            code = 0
      except OSError as x:
         os.write(w2, str(x).encode(errors="replace"))
      os._exit(code)
   os.close(r)
   os.close(w2)
   try:
      libc_call("unshare", CLONE_NEWUSER)
      os.write(w, b"u")
   finally:
      os.close(w)
      why = os.read(r2, 4096)
      os.close(r2)
      (_, st) = os.waitpid(kid, 0)
   if (st != 0):
      raise OSError("user namespace ID maps: %s"
                    % (why.decode(errors="replace") or "failed"))
   flags = CLONE_NEWNS
   flags |= CLONE_NEWNET if net_p else 0
   flags |= CLONE_NEWUTS if uts_p else 0
   flags |= CLONE_NEWIPC if ipc_p else 0
   libc_call("unshare", flags)
   mount(None, "/", None, MS_REC | MS_SLAVE, None)


def ns_join(pid, name, flag):
   "Join namespace name (e.g. \"pid\", flag CLONE_NEWPID) of process pid."
   fd = os.open("/proc/%d/ns/%s" % (pid, name), os.O_RDONLY | os.O_CLOEXEC)
   try:
      libc_call("setns", fd, flag)
   finally:
      os.close(fd)
