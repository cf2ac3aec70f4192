# A container's own /dev: what the keeper's child makes before ch-run (which
# binds the /dev it sees into the container), instead of the host's whole
# /dev. Standard library only (the keeper's rule).

import fcntl
import os
import struct

import nsmount


## Constants ##

MS_MOVE = 8192
TIOCSPTLCK = 0x40045431
TIOCGPTPEER = 0x5441
# A pod's devpts: its containers' ptys, and nobody else's.
PTS_OPTS = "newinstance,ptmxmode=0666,mode=0620"

# The device nodes every container gets, bound from the host's /dev (no
# mknod in a user namespace), as the OCI runtime spec lists them.
STANDARD = ("null", "zero", "full", "random", "urandom", "tty")
# And these links.
LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
         ("ptmx", "pts/ptmx"))
# What we put in /dev ourselves: nothing given to a container goes there.
OWN = set(STANDARD) | { n for (n, _) in LINKS } | { "pts", "shm" }


## Functions ##

def node_bind(src, dst):
   "Bind file (or device node) src at dst, made as an empty file first."
   os.makedirs(os.path.dirname(dst), exist_ok=True)
   if (not os.path.lexists(dst)):
      os.close(os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
   nsmount.mount(src, dst, None, nsmount.MS_BIND, None)


def pts_make(path):
   """Mount a devpts instance of the pod's own at path (in our mount
      namespace, so it goes with the keeper)."""
   os.makedirs(path, exist_ok=True)
   nsmount.mount("devpts", path, "devpts", nsmount.MS_NOSUID | nsmount.MS_NOEXEC,
               PTS_OPTS)


def pty_open(pts):
   """Return (master, slave) descriptors of a new pty of devpts instance
      pts (a pod's): the container then finds its terminal in its own
      /dev/pts (ttyname, tty(1)), where a host pty would not be."""
   master = os.open(os.path.join(pts, "ptmx"),
                    os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
   try:
      fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
      slave = fcntl.ioctl(master, TIOCGPTPEER,
                          os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
   except OSError:
      os.close(master)
      raise
   return (master, slave)


def dev_make(stage, shm, binds=(), pts=None):
   """In our own mount namespace: make a /dev of our own at stage (an
      empty directory) and move it over /dev. It holds the standard nodes,
      at pts the pod's devpts pts (or one of its own; ptmx a link into
      it), at shm the pod's shm (shared by its containers), the links of
      LINKS, and binds: [(host path, path under /dev)], devices given to
      the container and the kubelet's files there (/dev/termination-log).
      Raise OSError naming what failed."""
   nsmount.mount("tmpfs", stage, "tmpfs", nsmount.MS_NOSUID | nsmount.MS_NOEXEC,
               "mode=755,size=65536k")
   for name in STANDARD:
      node_bind("/dev/" + name, os.path.join(stage, name))
   os.mkdir(os.path.join(stage, "pts"), 0o755)
   # The pod's devpts instance (or one of its own): the host's ptys stay
   # out of reach.
   if (pts is not None):
      nsmount.mount(pts, os.path.join(stage, "pts"), None, nsmount.MS_BIND,
                  None)
   else:
      nsmount.mount("devpts", os.path.join(stage, "pts"), "devpts",
                  nsmount.MS_NOSUID | nsmount.MS_NOEXEC, PTS_OPTS)
   os.mkdir(os.path.join(stage, "shm"), 0o1777)
   nsmount.mount(shm, os.path.join(stage, "shm"), None, nsmount.MS_BIND, None)
   for (name, target) in LINKS:
      os.symlink(target, os.path.join(stage, name))
   top = os.path.realpath(stage)
   for (src, dst) in binds:
      rel = os.path.normpath(dst).removeprefix("/dev/")
      target = os.path.join(stage, rel)
      # Never through our links (fd, stdin, ptmx...) nor onto what we
      # made: a bind at /dev/stdin would land on whatever fd 0 is.
      if (rel.startswith(("..", "/")) or rel.split("/")[0] in OWN
          or not os.path.realpath(os.path.dirname(target))
                 .startswith(top)):
         raise OSError("can't bind at %s: not a free path below /dev"
                       % dst)
      if (os.path.isdir(src)):
         os.makedirs(target, exist_ok=True)
         nsmount.mount(src, target, None, nsmount.MS_BIND | nsmount.MS_REC,
                       None)
      else:
         node_bind(src, target)
   nsmount.mount(stage, "/dev", None, MS_MOVE, None)
