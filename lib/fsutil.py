# Atomic, versioned file helpers for ch-cri's durable state.

import errno
import json
import os
import shutil
import stat

# The writers are shared with the keeper, which loads no ch-cri module but
# its own; they live with it and are ch-cri's too.
from cri.keeper.proc import (STATE_VERSION, dir_fsync,  # noqa: F401
                             file_write_atomic, json_write_atomic)


## Exceptions ##

class State_Error(Exception):
   "A state file is unreadable, corrupt, or from a newer ch-cri."


## Functions ##

def json_read(path):
   """Return the object stored by json_write_atomic at path. Raise
      FileNotFoundError if missing, State_Error if corrupt or too new."""
   try:
      with open(path, "rb") as fp:
         obj = json.load(fp)
   except (ValueError, UnicodeDecodeError) as x:
      raise State_Error("corrupt state file: %s: %s" % (path, x))
   if (not isinstance(obj, dict) or type(obj.get("version")) is not int):
      raise State_Error("state file has no version: %s" % path)
   if (obj["version"] > STATE_VERSION):
      raise State_Error("state file from a newer ch-cri: %s (version %s)"
                        % (path, obj["version"]))
   return obj


def mkdirs(path, mode=0o700):
   "Create directory path and its parents if missing; return path."
   os.makedirs(path, mode=mode, exist_ok=True)
   return path


def rmtree(path):
   """Remove directory tree path; missing is fine. Directories we may not
      enter or change (images and overlay work directories have them) are
      made accessible first: we own everything below our directories."""
   try:
      shutil.rmtree(path)
      return
   except FileNotFoundError:
      return
   except PermissionError:
      pass
   os.chmod(path, stat.S_IRWXU)
   for (dir_, dirs, _) in os.walk(path):
      for d in dirs:
         p = os.path.join(dir_, d)
         if (not os.path.islink(p)):
            try:
               os.chmod(p, stat.S_IRWXU)
            except OSError:
               pass
   shutil.rmtree(path)


def tree_size(path):
   """Return (bytes, inodes) used under path: bytes of regular files, hard
      links counted once; unreadable entries are skipped."""
   seen = set()
   total = 0
   inodes = 0
   for (dir_, dirs, files) in os.walk(path):
      inodes += 1 + len(dirs)
      for f in files:
         try:
            st = os.lstat(os.path.join(dir_, f))
         except OSError:
            continue
         if (stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen):
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
            inodes += 1
         elif (not stat.S_ISREG(st.st_mode)):
            inodes += 1
   return (total, inodes)


def enospc_p(x):
   "Return True if exception x means the disk is full."
   return isinstance(x, OSError) and x.errno in (errno.ENOSPC, errno.EDQUOT)
