# The holder of an ordinary user's SquashFS namespace (see cri/squash.py):
# run detached, in a new user namespace mapping us to root and a new mount
# namespace, it puts a shared tmpfs over the mount directory (squashfuse
# mounts go there and propagate into pods started below us), says who it
# is in a state file, and waits to be killed.
#
# Usage: PYTHON -I -S squashns.py MOUNT_DIR HOLDER_JSON
#
# Standard library and the keeper's helpers only, as the keeper: it runs
# as a script beside them, outside the cri package.

import os
import signal
import sys

sys.path.append(os.path.dirname(os.path.abspath(__file__)))
import nsmount  # noqa: E402
import proc  # noqa: E402


def main():
   (mnt_dir, holder_json) = sys.argv[1:3]
   try:
      nsmount.mount("ch-cri-squash", mnt_dir, "tmpfs",
                    nsmount.MS_NOSUID | nsmount.MS_NODEV, "mode=755,size=64k")
      nsmount.mount(None, mnt_dir, None, nsmount.MS_SHARED, None)
   except OSError as x:
      sys.exit("squashns: %s" % x.strerror)
   proc.json_write_atomic(holder_json,
                          { "pid": os.getpid(),
                            "start": proc.proc_start(os.getpid()) })
   signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
   while True:
      signal.pause()


if (__name__ == "__main__"):
   main()
