# SquashFS images: an image kept as one SquashFS file, mounted once per node
# and shared read-only by all its containers (each has its own overlay).
#
# Where the mounts live:
#
#   - root: in the host's mount namespace, at STATE/squash/NAME, by the
#     kernel's squashfs (a loop device) or, failing that, squashfuse.
#     Containers get a copy of the mount (open_tree), so they never depend
#     on propagation reaching their pod.
#
#   - an ordinary user: squashfuse, in a mount namespace of ours (the
#     "holder", a small detached process in a user namespace mapping us to
#     root, with a shared tmpfs at STATE/squash). Pods' keepers start
#     inside the holder's namespaces, so its mounts propagate into every
#     pod, made before or after the pod. Needs a /dev/fuse we may open.
#
# A mount is made when the first container of an image is created and
# detached when the last is removed; mounts outlive ch-cri (kill -9 or
# upgrade) and are found again at start-up.

import hashlib
import os
import shutil
import stat
import sys
import threading
import time

import fsutil
import misc
import cri.errors as err
import cri.keeper.nsmount as nsmount
import cri.keeper.proc as proc


## Constants ##

# Pod annotation choosing the form of the images pulled for the pod (and so
# of its containers' roots): "dir" or "squash".
ANNOTATION = "ch-cri.charliecloud.io/image-format"
FORMATS = ("dir", "squash")
MOUNTERS = ("auto", "kernel", "fuse")

SUFFIX = ".sqfs"

# How long mksquashfs may take (s): gigabytes of image on a slow disk.
MAKE_TIMEOUT = 3600
# How long a mount or unmount may take (s).
MOUNT_TIMEOUT = 30

HOLDER_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                         "keeper", "squashns.py")


## Globals ##

log = misc.log


## Functions ##

def format_of(annotations, default, field):
   """Return the image form that annotations (a pod's) ask for, else
      default. Raise Invalid_Argument naming field if the value is bad.

      >>> format_of({ANNOTATION: "squash"}, "dir", "x")
      'squash'
      >>> format_of({}, "dir", "x")
      'dir'
   """
   v = (annotations or {}).get(ANNOTATION)
   if (v is None):
      return default
   if (v not in FORMATS):
      raise err.Invalid_Argument("%s[%s]: %r is not one of %s"
                                 % (field, ANNOTATION, v, ", ".join(FORMATS)))
   return v


def mount_name(sqfs):
   """Return the mount point's name for SquashFS file sqfs: one mount per
      file, whoever's store it is in.

      >>> mount_name("/a/b.sqfs") == mount_name("/a//b.sqfs")
      True
   """
   return hashlib.sha256(os.path.normpath(sqfs).encode()).hexdigest()[:32]


def kernel_trusted_p(path):
   """Return True if SquashFS file path may be given to the kernel's
      parser: a regular file (not a link) that root owns and nobody else
      may write."""
   try:
      st = os.lstat(path)
   except OSError:
      return False
   return (stat.S_ISREG(st.st_mode) and st.st_uid == 0
           and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


## Classes ##

class Squash:
   """Makes SquashFS images and mounts them, one mount per file, counting
      the containers that use each.

      self.lock guards self.uses and the mounts; it is held across the
      mount and unmount commands (bounded by MOUNT_TIMEOUT), so that a
      container is never given a mount being detached. Take it after
      nothing else."""

   def __init__(self, state_dir, default="dir", mounter="auto",
                python=None, mksquashfs=None, squashfuse=None,
                make_only=False):
      """With make_only, only make SquashFS files (no state_dir, no
         mounts): for filling an image store."""
      self.dir = os.path.join(state_dir or "/nonexistent", "squash")
      self.holder_file = os.path.join(state_dir or "/nonexistent",
                                      "squash-holder.json")
      self.default = default
      self.mounter = mounter
      self.python = python or sys.executable
      self.root_p = (os.geteuid() == 0)
      self.mksquashfs = mksquashfs or shutil.which("mksquashfs")
      self.squashfuse = squashfuse or shutil.which("squashfuse")
      self.lock = threading.Lock()
      self.uses = dict()     # mount name -> {container ID}
      self.holder = None     # (pid, start) of the holder (ordinary user)
      self.make_reason = (None if self.mksquashfs
                          else "mksquashfs not found (Debian package "
                               "squashfs-tools)")
      (self.how, self.mount_reason) = ((None, None) if make_only
                                       else self.mounter_pick())
      if (default == "squash" and self.mount_reason is not None):
         log.warning("image_format = \"squash\", but SquashFS images can't "
                     "be mounted here: %s", self.mount_reason)

   def mounter_pick(self):
      """Return (how, None) if SquashFS images can be mounted here, how
         being "kernel" or "fuse"; else (None, why not)."""
      kernel = False
      try:
         with open("/proc/filesystems") as fp:
            kernel = any(l.split()[-1] == "squashfs" for l in fp if l.strip())
      except OSError:
         pass
      fuse = self.squashfuse is not None
      if (self.root_p and self.mounter in ("auto", "kernel") and kernel):
         return ("kernel", None)
      if (self.mounter == "kernel"):
         return (None, ("squash_mounter = \"kernel\", but %s"
                        % ("only root may mount with the kernel's squashfs"
                           if not self.root_p
                           else "the kernel has no squashfs")))
      if (not fuse):
         return (None, "squashfuse not found (Debian package squashfuse)")
      if (not os.access("/dev/fuse", os.R_OK | os.W_OK)):
         return (None, "/dev/fuse can't be opened by this user (%s); an "
                       "admin can make it 0666, as udev usually does"
                       % ("missing" if not os.path.exists("/dev/fuse")
                          else "mode %o" % (os.stat("/dev/fuse").st_mode
                                             & 0o777)))
      if (not self.root_p
          and not (shutil.which("nsenter") and shutil.which("unshare"))):
         return (None, "nsenter or unshare not found (util-linux)")
      return ("fuse", None)

   def info(self):
      "Return what verbose Status says of SquashFS images."
      return { "default": self.default, "mounter": self.how,
               "mountable": self.mount_reason is None,
               "reason": self.mount_reason, "mksquashfs": self.mksquashfs,
               "make_reason": self.make_reason }

   def mountable_check(self, what):
      "Raise Failed_Precondition saying why if what can't be mounted."
      if (self.mount_reason is not None):
         raise err.Failed_Precondition("%s: SquashFS images can't be "
                                       "mounted here: %s"
                                       % (what, self.mount_reason))

   ## Making ##

   def make(self, src, dst):
      """Make SquashFS file dst from image directory src (atomically: dst
         appears whole or not at all). Raise Failed_Precondition if we
         can't, Internal if mksquashfs fails."""
      if (self.make_reason is not None):
         raise err.Failed_Precondition("SquashFS image %s: %s"
                                       % (dst, self.make_reason))
      tmp = "%s.tmp-%d" % (dst, os.getpid())
      try:
         misc.cmd_run([self.mksquashfs, src, tmp, "-noappend", "-quiet",
                       "-no-progress", "-no-xattrs"], MAKE_TIMEOUT)
         os.chmod(tmp, 0o644)
         os.rename(tmp, dst)
      except misc.Command_Error as x:
         raise err.Internal("SquashFS image %s: %s" % (dst, x))
      finally:
         try:
            os.unlink(tmp)
         except FileNotFoundError:
            pass

   ## Mounts ##

   def mnt(self, sqfs):
      "Return the mount point of sqfs (as keepers see it)."
      return os.path.join(self.dir, mount_name(sqfs))

   def view(self, path):
      """Return path (under a mount point) as this process can read it: the
         same path as root, through the holder's root directory
         otherwise."""
      if (self.root_p or self.holder is None):
         return path
      return "/proc/%d/root%s" % (self.holder[0], path)

   def mountinfo(self):
      "Return {mount point: fstype} under self.dir, as keepers see them."
      pid = "self" if self.root_p else (self.holder or (None,))[0]
      out = dict()
      if (pid is None):
         return out
      try:
         with open("/proc/%s/mountinfo" % pid) as fp:
            for line in fp:
               (a, _, b) = line.partition(" - ")
               mp = a.split(" ")[4]
               if (os.path.dirname(mp) == self.dir):
                  out[mp] = b.split(" ")[0]
      except OSError:
         pass
      return out

   def acquire(self, ctr_id, sqfs):
      """Count container ctr_id as a user of SquashFS file sqfs, mounting it
         if it is not; return its mount point. Raise Failed_Precondition
         if it can't be mounted."""
      self.mountable_check("image %s" % sqfs)
      name = mount_name(sqfs)
      with self.lock:
         mp = os.path.join(self.dir, name)
         if (self.healthy_p(mp)):
            self.uses.setdefault(name, set()).add(ctr_id)
            return mp
         self.mount(sqfs, mp)
         self.uses.setdefault(name, set()).add(ctr_id)
         return mp

   def release(self, ctr_id, sqfs):
      """Stop counting ctr_id as a user of sqfs; detach the mount if it was
         the last."""
      name = mount_name(sqfs)
      with self.lock:
         users = self.uses.get(name)
         if (users is None):
            return
         users.discard(ctr_id)
         if (not users):
            del self.uses[name]
            self.umount(os.path.join(self.dir, name))

   def rebuild(self, uses):
      """Set the users from uses ({container ID: SquashFS file}, from the
         state at start-up); detach mounts nobody uses (a removal cut
         short). Mounts found dead are made again when next needed."""
      if (self.mount_reason is not None):
         if (uses):
            log.warning("%d containers use SquashFS images, which can't be "
                        "mounted here now: %s", len(uses), self.mount_reason)
         return
      if (not self.root_p):
         self.holder_find()
      with self.lock:
         for (id_, f) in uses.items():
            self.uses.setdefault(mount_name(f), set()).add(id_)
         for mp in self.mountinfo():
            if (os.path.basename(mp) not in self.uses):
               log.info("detaching SquashFS mount nobody uses: %s", mp)
               self.umount(mp)
      if (self.uses):
         log.info("SquashFS images: %d mounted, for %d containers",
                  len(self.uses), len(uses))

   def healthy_p(self, mp):
      """Return True if mp is mounted and answers; detach it if it is
         mounted but dead (its squashfuse killed)."""
      if (mp not in self.mountinfo()):
         return False
      try:
         # statfs always reaches the file system (a stat may be cached).
         os.statvfs(self.view(mp))
         return True
      except OSError as x:
         log.warning("SquashFS mount %s is dead (%s); mounting again", mp,
                     x.strerror)
         self.umount(mp)
         return False

   def mount(self, sqfs, mp):
      "Mount sqfs at mp. Call with self.lock held."
      if (not os.path.isfile(sqfs)):
         raise err.Failed_Precondition("SquashFS image %s: no such file"
                                       % sqfs)
      how = self.how
      if (how == "kernel" and not kernel_trusted_p(sqfs)):
         # The kernel's parser is no place for a file someone else could
         # have crafted (a store another user fills): squashfuse parses it
         # in a process instead.
         if (self.squashfuse is None):
            raise err.Failed_Precondition(
               "SquashFS image %s: not root's, or writable by others, so "
               "not for the kernel's squashfs; squashfuse would mount it, "
               "but it is not installed" % sqfs)
         log.info("SquashFS image %s: not root's alone; squashfuse, not "
                  "the kernel", sqfs)
         how = "fuse"
      fsutil.mkdirs(self.dir, 0o755)
      pre = []
      if (not self.root_p):
         pre = self.holder_enter_argv()
      try:
         if (self.root_p):
            os.makedirs(mp, exist_ok=True)
         else:
            misc.cmd_run(pre + ["mkdir", "-p", mp], MOUNT_TIMEOUT)
         if (how == "kernel"):
            misc.cmd_run(["mount", "-t", "squashfs", "-o",
                          "ro,nodev,nosuid,loop", sqfs, mp], MOUNT_TIMEOUT)
         else:
            # As root, containers run as many users; as a user, they are
            # all us, and allow_other would shut out our pods (they are not
            # in the holder's user namespace but below it).
            opts = ["-o", "allow_other,nodev,nosuid"] if self.root_p else []
            misc.cmd_run(pre + [self.squashfuse] + opts + [sqfs, mp],
                         MOUNT_TIMEOUT)
      except misc.Command_Error as x:
         raise err.Failed_Precondition("SquashFS image %s: can't mount it "
                                       "(%s): %s" % (sqfs, how, x))
      log.info("mounted SquashFS image %s at %s (%s)", sqfs, mp, how)

   def umount(self, mp):
      """Detach mp lazily (containers started from it keep their copy);
         log failure. Call with self.lock held."""
      try:
         if (self.root_p):
            nsmount.umount_detach(mp)
         else:
            misc.cmd_run(self.holder_enter_argv() + ["umount", "-l", mp],
                         MOUNT_TIMEOUT)
         log.info("detached SquashFS mount %s", mp)
      except (OSError, misc.Command_Error, err.CRI_Error) as x:
         log.warning("SquashFS mount %s: can't detach: %s", mp, x)
      try:
         if (self.root_p):
            os.rmdir(mp)
      except OSError:
         pass

   ## The holder (ordinary user) ##

   def holder_find(self):
      "Set self.holder from its file if that process is alive; return it."
      try:
         d = fsutil.json_read(self.holder_file)   # squashns.py's
         h = (int(d["pid"]), int(d["start"]))
      except (OSError, fsutil.State_Error, KeyError, TypeError, ValueError):
         h = None
      self.holder = h if h is not None and proc.alive_p(*h) else None
      return self.holder

   def holder_start(self):
      """Start the holder unless it runs; return its (pid, start). Raise
         Failed_Precondition if it can't be started."""
      if (self.holder_find() is not None):
         return self.holder
      fsutil.mkdirs(self.dir, 0o755)
      try:
         os.unlink(self.holder_file)
      except FileNotFoundError:
         pass
      argv = ["setsid", "-f", "unshare", "--user", "--map-root-user",
              "--mount", "--propagation", "private", "--", self.python,
              "-I", "-S", HOLDER_PY, self.dir, self.holder_file]
      try:
         misc.cmd_detach(argv, self.holder_file + ".log", MOUNT_TIMEOUT)
      except misc.Command_Error as x:
         raise err.Failed_Precondition("SquashFS namespace: %s" % x)
      deadline = time.monotonic() + MOUNT_TIMEOUT
      while (self.holder_find() is None):
         if (time.monotonic() > deadline):
            raise err.Failed_Precondition(
               "SquashFS namespace did not start in %ds; see %s.log"
               % (MOUNT_TIMEOUT, self.holder_file))
         time.sleep(0.01)
      log.info("SquashFS namespace: holder pid %d", self.holder[0])
      return self.holder

   def holder_enter_argv(self):
      "Return the argv prefix running a command in the holder's namespaces."
      (pid, _) = self.holder_start()
      return ["nsenter", "--target", str(pid), "--user", "--mount",
              "--preserve-credentials", "--"]

   def keeper_prefix(self):
      """Return the argv prefix that starts an ordinary user's pod keeper
         below the holder, so that SquashFS mounts reach the pod; [] if
         SquashFS images can't be mounted here, or as root."""
      if (self.root_p or self.mount_reason is not None):
         return []
      try:
         with self.lock:
            return self.holder_enter_argv()
      except err.CRI_Error as x:
         log.warning("pod keeper starts outside the SquashFS namespace "
                     "(its containers can't use SquashFS images): %s", x)
         return []
