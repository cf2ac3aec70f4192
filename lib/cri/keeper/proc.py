# Processes and state files, for the keeper and ch-cri alike: process start
# times, mount namespace members, and atomic, versioned state files.
# Standard library only (the keeper imports it as a top-level module).

import itertools
import json
import os
import signal


## Constants ##

# Version written into every JSON state file; readers refuse newer ones.
STATE_VERSION = 1


## Globals ##

# Temporary file names: unique per process and thread, without importing
# tempfile (and its dependencies) into every keeper.
tmp_seq = itertools.count()


## Functions ##

def alive_p(pid, start):
   "Return True if pid is running and is the process that started at start."
   return pid is not None and start is not None and proc_start(pid) == start


def dir_fsync(path):
   "fsync directory path so a rename inside it is durable."
   fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
   try:
      os.fsync(fd)
   finally:
      os.close(fd)


def file_write_atomic(path, data, mode=0o600):
   """Write bytes data to path atomically: temp file in the same directory,
      fsync, rename, fsync the directory. A reader sees the old or the new
      content, never a mix; a crash leaves at most a stray temp file."""
   dir_ = os.path.dirname(path) or "."
   tmp = os.path.join(dir_, ".tmp.%s.%d.%d" % (os.path.basename(path),
                                               os.getpid(), next(tmp_seq)))
   fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
   try:
      try:
         os.fchmod(fd, mode)   # exactly mode, whatever the umask
         view = memoryview(data)
         while view:
            view = view[os.write(fd, view):]
         os.fsync(fd)
      finally:
         os.close(fd)
      os.rename(tmp, path)
   except BaseException:
      try:
         os.unlink(tmp)
      except OSError:
         pass
      raise
   dir_fsync(dir_)


def json_write_atomic(path, obj):
   "Write dict obj as JSON to path atomically, stamped with STATE_VERSION."
   obj = dict(obj, version=STATE_VERSION)
   file_write_atomic(path, json.dumps(obj, sort_keys=True,
                                      indent=1).encode("utf-8"))


def mntns_of(pid):
   "Return the mount namespace of process pid (a link's text) or None."
   try:
      return os.readlink("/proc/%d/ns/mnt" % pid)
   except OSError:
      return None


def ns_kill(ns, sig, pids=()):
   """Send signal sig to every process in mount namespace ns (a
      container's; None: none) but us, and to pids. Return how many
      processes were there to signal."""
   pids = set(pids)
   if (ns is not None):
      pids.update(ns_pids(ns))
   for pid in pids:
      try:
         os.kill(pid, sig)
      except ProcessLookupError:
         pass
   return len(pids)


def ns_pids(ns):
   "Return the PIDs whose mount namespace is ns, but ours."
   out = []
   for d in os.listdir("/proc"):
      if (d.isdigit() and int(d) != os.getpid() and mntns_of(int(d)) == ns):
         out.append(int(d))
   return out


def proc_start(pid):
   "Return the start time of process pid (clock ticks since boot) or None."
   try:
      with open("/proc/%d/stat" % pid, "rb") as fp:
         stat = fp.read()
   except OSError:
      return None
   return int(stat[stat.rindex(b")") + 2:].split()[19])


def zombie_p(pid):
   "Return True if process pid has exited and is not yet reaped."
   try:
      with open("/proc/%d/stat" % pid, "rb") as fp:
         stat = fp.read()
   except (OSError, TypeError):
      return False
   return stat[stat.rindex(b")") + 2:].startswith(b"Z")


def keeper_kill(pod_dir):
   """SIGKILL the session of each process running keeper.py for pod_dir
      (found by its command line: a keeper that has not said its PID);
      return how many there were."""
   ct = 0
   for name in os.listdir("/proc"):
      if (not name.isdigit()):
         continue
      try:
         with open("/proc/%s/cmdline" % name, "rb") as fp:
            argv = fp.read().split(b"\0")[:-1]
      except OSError:
         continue
      if (len(argv) >= 2 and argv[-1] == pod_dir.encode()
          and argv[-2].endswith(b"keeper.py")):
         try:
            os.killpg(int(name), signal.SIGKILL)   # a session leader
         except OSError:
            try:
               os.kill(int(name), signal.SIGKILL)
            except OSError:
               continue
         ct += 1
   return ct
