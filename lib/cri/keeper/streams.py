# The per-pod keeper's streams: exec (collected output, or stdio passed to
# ch-cri), attach to a container's stdio, and port forwarding into the pod.

import base64
import os
import selectors
import signal
import socket
import time

import devfs
import spawn
from logio import exit_code_of
from state import READ_SIZE, container_get, execs, sel


## Functions ##

def op_exec(conn, req):
   c = container_get(req["id"])
   if (c.exited_p()):
      raise ValueError("container not running: %s" % c.id_)
   outs = dict()
   fa = [(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0)]
   closers = []
   for n in (1, 2):
      (r, w) = os.pipe()
      fa.append((os.POSIX_SPAWN_DUP2, w, n))
      closers.append(w)
      outs[r] = bytearray()
      os.set_blocking(r, False)
   try:
      pid = spawn.spawn(req["argv"], req["env"], fa, False,
                            c.pid if c.status.get("pidns") else None,
                            proc_p=False, procs=c.procs, user=c.user,
                            cgns_pid=c.pid if c.procs else None)
   finally:
      for fd in closers:
         os.close(fd)
   t = float(req.get("timeout") or 0)
   e = Exec(conn, pid, outs, time.monotonic() + t if t > 0 else None,
            int(req.get("max", 16 * 2**20)))
   execs.append(e)
   return None


def stdio_make(tty, stdin, pts=None):
   """Return (file actions for a child, fds to pass, their names, fds to
      close once the child is spawned) for an exec's stdio; a tty is of
      devpts instance pts (the pod's), if given."""
   if (tty):
      (master, slave) = devfs.pty_open(pts) if pts else os.openpty()
      fa = [(os.POSIX_SPAWN_DUP2, slave, n) for n in (0, 1, 2)]
      return (fa, [master], ["tty"], [slave, master])
   fa = []
   fds = []
   names = []
   closers = []
   if (stdin):
      (r, w) = os.pipe()
      fa.append((os.POSIX_SPAWN_DUP2, r, 0))
      fds.append(w)
      names.append("stdin")
      closers += [r, w]
   else:
      fa.append((os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0))
   for (n, name) in ((1, "stdout"), (2, "stderr")):
      (r, w) = os.pipe()
      fa.append((os.POSIX_SPAWN_DUP2, w, n))
      fds.append(r)
      names.append(name)
      closers += [r, w]
   return (fa, fds, names, closers)


def op_exec_stream(conn, req):
   c = container_get(req["id"])
   if (c.pid is None or c.exited_p()):
      raise ValueError("container not running: %s" % c.id_)
   tty = bool(req.get("tty"))
   (fa, fds, names, closers) = stdio_make(tty, bool(req.get("stdin")),
                                          c.pts)
   try:
      pid = spawn.spawn(req["argv"], req["env"], fa, tty,
                            c.pid if c.status.get("pidns") else None,
                            proc_p=False, procs=c.procs, user=c.user,
                            cgns_pid=c.pid if c.procs else None)
      pidfd = os.pidfd_open(pid)
      conn.send({ "ok": True, "pid": pid, "names": names }, fds)
   finally:
      for fd in closers:
         os.close(fd)
   sel.register(pidfd, selectors.EVENT_READ, ("stream-exit",
                                              (conn, pid, pidfd)))
   return None


def op_attach(conn, req):
   c = container_get(req["id"])
   if (c.pid is None or c.exited_p()):
      raise ValueError("container not running: %s" % c.id_)
   fds = []
   names = []
   if (req.get("stdin") and c.stdin_w is not None):
      if (c.stdin_once):
         # The first attach takes stdin with it: when that client closes
         # its stdin, the container's closes too.
         fds.append(c.stdin_w)
         c.stdin_w = None
      else:
         fds.append(os.dup(c.stdin_w))
      names.append("stdin")
   for stream in sorted(set(c.outs.values())):
      (mine, theirs) = socket.socketpair()
      mine.setblocking(False)
      mine.shutdown(socket.SHUT_RD)
      c.attached.append((stream, mine))
      fds.append(theirs.detach())
      names.append(stream)
   try:
      conn.send({ "ok": True, "names": names }, fds)
   finally:
      for fd in fds:
         os.close(fd)
   c.exit_conns.append(conn)
   return None


def op_portforward(conn, req):
   port = int(req["port"])
   if (not 0 < port < 65536):
      raise ValueError("port out of range: %d" % port)
   try:
      s = socket.create_connection(("127.0.0.1", port), timeout=5)
   except OSError:
      try:
         s = socket.create_connection(("::1", port), timeout=5)
      except OSError as x:
         raise OSError("can't connect to port %d in the pod: %s"
                       % (port, x.strerror))
   s.settimeout(None)
   fd = s.detach()
   try:
      conn.send({ "ok": True, "names": ["socket"] }, [fd])
   finally:
      os.close(fd)
   return None


## Classes ##

class Exec:
   "An exec: a process whose output we collect until it exits."

   def __init__(self, conn, pid, outs, deadline, max_):
      self.conn = conn
      self.pid = pid
      self.pidfd = os.pidfd_open(pid)
      self.outs = outs            # fd -> bytearray
      self.deadline = deadline
      self.max = max_
      self.timed_out = False
      sel.register(self.pidfd, selectors.EVENT_READ, ("exec-exit", self))
      for fd in outs:
         sel.register(fd, selectors.EVENT_READ, ("exec-out", self))

   def read(self, fd):
      try:
         data = os.read(fd, READ_SIZE)
      except BlockingIOError:
         return
      except OSError:
         data = b""
      if (not data):
         sel.unregister(fd)
         os.close(fd)
         self.outs[fd] = (self.outs[fd], True)
         return
      self.keep(self.outs[fd], data)

   def keep(self, buf, data):
      "Append to buf what of data fits under the cap of both streams."
      used = sum(len(b if isinstance(b, bytearray) else b[0])
                 for b in self.outs.values())
      if (used < self.max):
         buf += data[:self.max - used]

   def finish(self):
      (_, st) = os.waitpid(self.pid, 0)
      sel.unregister(self.pidfd)
      os.close(self.pidfd)
      # Take what the process wrote; its children may hold the pipes open,
      # but are killed with its process group.
      try:
         os.killpg(self.pid, signal.SIGKILL)
      except OSError:
         pass
      res = []
      for (fd, buf) in list(self.outs.items()):
         if (isinstance(buf, tuple)):
            res.append(buf[0])
            continue
         os.set_blocking(fd, False)
         while True:
            try:
               data = os.read(fd, READ_SIZE)
            except OSError:
               break
            if (not data):
               break
            self.keep(buf, data)
         sel.unregister(fd)
         os.close(fd)
         res.append(buf)
      execs.remove(self)
      (code, _) = exit_code_of(st)
      self.conn.send({ "ok": True, "exit_code": code,
                       "timed_out": self.timed_out,
                       "stdout": base64.b64encode(res[0]).decode(),
                       "stderr": base64.b64encode(res[1]).decode() })
