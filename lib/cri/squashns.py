# The holder of an ordinary user's SquashFS namespace (see cri/squash.py):
# run detached, in a new user namespace mapping us to root and a new mount
# namespace, it puts a shared tmpfs over the mount directory (squashfuse
# mounts go there and propagate into pods started below us), says who it
# is in a JSON file, and waits to be killed.
#
# Usage: PYTHON -I -S squashns.py MOUNT_DIR HOLDER_JSON
#
# Standard library only: it runs as a script, outside the cri package.

import ctypes
import json
import os
import signal
import sys

MS_NOSUID = 2
MS_NODEV = 4
MS_REC = 1 << 14
MS_SHARED = 1 << 20


def mount(src, dst, fstype, flags, data):
   libc = ctypes.CDLL(None, use_errno=True)
   if (libc.mount(src and src.encode(), dst.encode(),
                  fstype and fstype.encode(), ctypes.c_ulong(flags),
                  data and data.encode()) != 0):
      e = ctypes.get_errno()
      sys.exit("squashns: mount %s: %s" % (dst, os.strerror(e)))


def main():
   (mnt_dir, holder_json) = sys.argv[1:3]
   mount("ch-cri-squash", mnt_dir, "tmpfs", MS_NOSUID | MS_NODEV,
         "mode=755,size=64k")
   mount(None, mnt_dir, None, MS_SHARED, None)
   with open("/proc/self/stat", "rb") as fp:
      stat = fp.read()
   start = int(stat[stat.rindex(b")") + 2:].split()[19])
   tmp = "%s.tmp" % holder_json
   with open(tmp, "w") as fp:
      json.dump({ "pid": os.getpid(), "start": start }, fp)
   os.rename(tmp, holder_json)
   signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
   while True:
      signal.pause()


if (__name__ == "__main__"):
   main()
