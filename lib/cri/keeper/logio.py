# Helpers of the per-pod keeper (keeper.py): CRI log files, loopback, mount
# and exit-status helpers. Standard library only, like the keeper.

import errno
import fcntl
import os
import socket
import stat
import struct
import sys
import time


## Constants ##

IFF_UP = 0x1
LOG_LINE_MAX = 16 * 1024     # longer lines are split into "P" records
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914


## Functions ##

def lo_up():
   "Bring the loopback interface of our network namespace up."
   s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
   try:
      ifr = struct.pack("16sh", b"lo", 0)
      flags = struct.unpack("16sh", fcntl.ioctl(s, SIOCGIFFLAGS, ifr))[1]
      fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | IFF_UP))
   finally:
      s.close()


def log_ts():
   "Return the current time in RFC 3339 with nanoseconds, as CRI logs want."
   ns = time.time_ns()
   return "%s.%09dZ" % (time.strftime("%Y-%m-%dT%H:%M:%S",
                                      time.gmtime(ns // 10**9)), ns % 10**9)


def path_in_root(root, path):
   """Return path (absolute, inside the container) resolved under root
      without leaving it: symlinks in the image are followed as the
      container would see them. Components that do not exist yet are kept
      as they are."""
   parts = [p for p in path.split("/") if p not in ("", ".")]
   out = []
   hops = 0
   while parts:
      p = parts.pop(0)
      if (p == ".."):
         if (out):
            out.pop()
         continue
      cand = os.path.join(root, *out, p)
      if (os.path.islink(cand)):
         hops += 1
         if (hops > 40):
            raise OSError(errno.ELOOP, "too many symlinks", path)
         target = os.readlink(cand)
         if (target.startswith("/")):
            out = []
         parts = [t for t in target.split("/") if t not in ("", ".")] + parts
         continue
      out.append(p)
   return os.path.join(root, *out)


def exit_code_of(status):
   c = os.waitstatus_to_exitcode(status)
   return (128 - c, -c) if c < 0 else (c, 0)


def mounted_p(path):
   with open("/proc/self/mountinfo") as fp:
      return any(l.split()[4] == path for l in fp)


## Classes ##

class Log:
   """A CRI log file: "TIMESTAMP STREAM TAG CONTENT" lines, TAG F for a
      whole line and P for a piece of a line longer than LOG_LINE_MAX, or
      for what is left of a stream that ends without a newline."""

   def __init__(self, path, base=None):
      self.path = path
      self.base = base        # trusted directory above path, if known
      self.fd = None
      self.partial = { "stdout": b"", "stderr": b"" }
      self.open()

   def open(self):
      """Open the log for appending. Below base (the pod's log directory,
         the kubelet's) no symbolic link is followed, and the log must be
         a regular file: a link or FIFO planted there must not make us
         (root, often) append to any file. Raise OSError."""
      if (not self.path):
         return
      base = self.base
      rel = os.path.relpath(self.path, base) if base else None
      if (rel is None or rel.startswith("..")):
         (base, rel) = (os.path.dirname(self.path),
                        os.path.basename(self.path))
      os.makedirs(base, exist_ok=True)
      dfd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
      try:
         parts = rel.split("/")
         for d in parts[:-1]:
            try:
               os.mkdir(d, 0o755, dir_fd=dfd)
            except FileExistsError:
               pass
            nfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                             | os.O_CLOEXEC, dir_fd=dfd)
            os.close(dfd)
            dfd = nfd
         # O_NONBLOCK: a FIFO without a reader fails rather than hangs.
         fd = os.open(parts[-1], os.O_WRONLY | os.O_APPEND | os.O_CREAT
                                 | os.O_CLOEXEC | os.O_NOFOLLOW
                                 | os.O_NONBLOCK, 0o640, dir_fd=dfd)
      except OSError as x:
         if (x.errno == errno.ELOOP):
            raise OSError(x.errno, "a symbolic link, not followed")
         if (x.errno == errno.ENXIO):
            raise OSError(x.errno, "not a regular file")
         raise
      finally:
         os.close(dfd)
      if (not stat.S_ISREG(os.fstat(fd).st_mode)):
         os.close(fd)
         raise OSError(errno.EINVAL, "not a regular file")
      os.set_blocking(fd, True)
      self.fd = fd

   def close(self):
      if (self.fd is not None):
         os.close(self.fd)
         self.fd = None

   def reopen(self):
      self.close()
      self.open()

   def feed(self, stream, data, eof=False):
      buf = self.partial[stream] + data
      ts = log_ts().encode()
      head = b"%s %s " % (ts, stream.encode())
      out = []
      while True:
         i = buf.find(b"\n")
         if (i < 0 or i > LOG_LINE_MAX):
            if (len(buf) > LOG_LINE_MAX):
               out.append(head + b"P " + buf[:LOG_LINE_MAX] + b"\n")
               buf = buf[LOG_LINE_MAX:]
               continue
            break
         line = buf[:i]
         if (line.endswith(b"\r")):
            line = line[:-1]
         out.append(head + b"F " + line + b"\n")
         buf = buf[i+1:]
      if (eof and buf):
         # The stream ended inside a line: not a full line, so P (the
         # kubelet then shows it without a newline, as it was written: a
         # termination message from "echo -n DONE" is "DONE").
         out.append(head + b"P " + buf + b"\n")
         buf = b""
      self.partial[stream] = buf
      if (out and self.fd is not None):
         try:
            os.write(self.fd, b"".join(out))
         except OSError as x:
            sys.stderr.write("keeper: log %s: %s\n" % (self.path, x))


def oom_kills(memory_dir):
   """Return the OOM kill count of memory cgroup memory_dir (v2's
      memory.events, or v1's memory.oom_control), or 0."""
   for name in ("memory.events", "memory.oom_control"):
      try:
         with open(os.path.join(memory_dir, name)) as fp:
            for line in fp:
               (k, _, v) = line.partition(" ")
               if (k == "oom_kill"):
                  return int(v)
      except (OSError, ValueError):
         continue
   return 0
