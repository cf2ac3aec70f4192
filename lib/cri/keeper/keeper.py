# The per-pod keeper: holds a pod's namespaces and supervises its containers.
#
# ch-cri starts one keeper per pod, detached (its own session), inside the
# pod's new user, mount, UTS, IPC and (unless the pod uses the host's)
# network namespaces. An ordinary user's ch-cri maps only itself (to root):
#
#    setsid -f unshare -U -r -m -u -i [-n] -- PYTHON -I -S keeper.py POD_DIR
#
# A root ch-cri starts "setsid -f PYTHON -I -S keeper.py POD_DIR" and the
# keeper makes those namespaces itself, with the user namespace's ID maps
# from keeper-args.json ("userns": every host ID to itself), so that each
# container's user is that same host user.
#
# It must stay small (one per pod): standard library only, no threads, no
# grpc or protobuf. It reads POD_DIR/keeper-args.json, sets the hostname,
# brings loopback up, then serves ch-cri on a unix socket and writes
# POD_DIR/keeper.json ({"pid", "pid_start"}, and "userns_pid" and
# "userns_start" of the process holding the pod's own user namespace, for
# hostUsers: false) once ready.
#
# The protocol (one JSON request line per connection, one reply line,
# descriptors passed alongside) and its operations are documented once,
# with the only client that speaks it: client.Keeper_Client. OPS
# below maps each operation to its handler; the two must name the same.

import base64
import errno
import json
import os
import selectors
import signal
import socket
import sys
import time
import traceback

# -I leaves our directory off sys.path; stdlib modules still come first.
# Our helpers (spawn, logio, proc) are imported from there as top-level
# modules: run as a script, we are no part of the cri package.
sys.path.append(os.path.dirname(os.path.abspath(__file__)))
import spawn  # noqa: E402
from logio import (Log, exit_code_of, lo_up, mounted_p,  # noqa: E402
                   oom_kills, path_in_root)
from proc import (json_write_atomic, mntns_of, ns_kill,  # noqa: E402
                  proc_start)


## Constants ##

READ_SIZE = 65536
# Longest a start waits for ch-run to exec the command (seconds).
START_EXEC_WAIT = 5
# A reply a peer has not read yet may wait this long to go in one piece
# (with descriptors), and this much may wait in all (an exec's output).
SEND_WAIT = 5
OUT_MAX = 64 * 2**20


## Globals ##

sel = selectors.DefaultSelector()
containers = dict()      # id -> Container
subscribers = []         # event connections
execs = []               # Exec in progress
waiters = []             # (deadline, Conn, container id)
starts = []              # Start in progress
pod_init = None          # PID of the pod's init (PID namespace POD)
held = []                # descriptors kept open for our lifetime (hold)
userns = None            # (holder PID, fd) of the pod's user namespace
shutdown = None          # (deadline, Conn) once asked to shut down


## Functions ##

class Container:

   def __init__(self, id_, dir_):
      self.id_ = id_
      self.dir_ = dir_
      self.status = dict()
      self.pidfd = None
      self.outs = dict()      # fd -> stream name
      self.stdin_w = None
      self.log = None
      self.merged = None
      self.stdin_once = False
      self.memcg = None       # memory cgroup directory, for OOM kills
      self.staged = []        # mounts staged for ch-run --bind
      self.attached = []      # (stream name, socket) copies of output
      self.exit_conns = []    # Conns told the exit code (attach)
      self.user = None        # host user its processes become, if not us
      self.procs = ()         # its cgroups' cgroup.procs files

   @property
   def pid(self):
      return self.status.get("pid")

   def exited_p(self):
      return "finished_at" in self.status

   def save(self):
      json_write_atomic(os.path.join(self.dir_, "status.json"), self.status)


class Conn:
   """A connection from ch-cri: a line buffer and a way to answer. Answers
      never block the keeper: what the peer is not reading yet waits in
      out, sent as the socket becomes writable (a stuck peer is dropped
      past OUT_MAX)."""

   def __init__(self, sock):
      self.sock = sock
      self.buf = b""
      self.out = bytearray()
      self.fds = []           # passed with the request being served
      sock.setblocking(False)

   def close(self):
      try:
         sel.unregister(self.sock)
      except (KeyError, ValueError):
         pass
      self.sock.close()
      self.out = bytearray()
      if (self in subscribers):
         subscribers.remove(self)

   def send(self, obj, fds=()):
      """Queue obj for the peer, with descriptors fds (those go at once,
         with the line's first bytes). Return False if the connection is
         gone."""
      data = json.dumps(obj).encode() + b"\n"
      try:
         if (fds):
            # In order after what is queued, and with the descriptors:
            # a short blocking send (bounded), for these few bytes.
            self.sock.settimeout(SEND_WAIT)
            try:
               self.sock.sendall(bytes(self.out))
               self.out = bytearray()
               n = socket.send_fds(self.sock, [data], list(fds))
            finally:
               self.sock.setblocking(False)
            data = data[n:]
         self.out += data
         self.flush()
         return True
      except OSError:
         self.close()
         return False

   def flush(self):
      "Send what the socket takes now; raise OSError if the peer is stuck."
      while (self.out):
         try:
            n = self.sock.send(self.out)
         except BlockingIOError:
            break
         del self.out[:n]
      if (len(self.out) > OUT_MAX):
         raise OSError("peer reads too slowly: %d bytes waiting"
                       % len(self.out))
      ev = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.out else 0)
      try:
         if (sel.get_key(self.sock).events != ev):
            sel.modify(self.sock, ev, ("conn", self))
      except (KeyError, ValueError):
         pass

   def flush_wait(self, limit):
      "Send what is queued, blocking up to limit seconds (at our exit)."
      try:
         self.sock.settimeout(limit)
         self.sock.sendall(bytes(self.out))
      except OSError:
         pass
      self.out = bytearray()


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


## Operations ##

def op_hello(conn, req):
   return { "pid": os.getpid(),
            "containers": { i: c.status for (i, c) in containers.items() } }


def op_start(conn, req):
   """Start a container: set up its root, log and stdio here, then spawn
      it without waiting (see Start); the reply comes once ch-run has
      exec'd the command (or failed)."""
   id_ = req["id"]
   if (id_ in containers and containers[id_].pid is not None):
      raise ValueError("container already started: %s" % id_)
   if (any(st.c.id_ == id_ for st in starts)):
      raise ValueError("container already starting: %s" % id_)
   c = containers[id_] = Container(id_, req["dir"])
   try:
      start_prepare(c, conn, req)
   except BaseException:
      start_undo(c)
      raise
   return None   # answered later


def start_prepare(c, conn, req):
   "op_start's set-up, up to spawn_begin(); raise on failure."
   c.stdin_once = bool(req.get("stdin_once"))
   c.memcg = req.get("memcg")
   c.user = req.get("user")
   if (c.user is not None and req.get("pod_userns")):
      if (userns is None):
         raise ValueError("pod has no user namespace of its own")
      c.user = dict(c.user, userns=userns[1])
   c.procs = tuple(req.get("cgroups") or ())
   try:
      c.log = Log(req.get("log") or "", req.get("log_dir"))
   except OSError as x:
      hint = (" (the log directory must be writable by ch-cri's user)"
              if x.errno in (errno.EACCES, errno.EPERM) else "")
      raise OSError("can't write container log %s: %s%s"
                    % (req.get("log"), x.strerror, hint))
   rootfs_mount(c, req["rootfs"], req.get("mounts", []),
                req.get("mkpaths", []), conn.fds)
   fa = []
   closers = []
   try:
      if (req.get("tty")):
         (master, slave) = os.openpty()
         c.outs[master] = "stdout"
         fa += [(os.POSIX_SPAWN_DUP2, slave, n) for n in (0, 1, 2)]
         closers.append(slave)
         if (req.get("stdin")):
            c.stdin_w = os.dup(master)
      else:
         if (req.get("stdin")):
            (r, w) = os.pipe()
            c.stdin_w = w   # held open so reads block, as with attach
         else:
            r = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
         closers.append(r)
         fa.append((os.POSIX_SPAWN_DUP2, r, 0))
         for (n, stream) in ((1, "stdout"), (2, "stderr")):
            (r, w) = os.pipe()
            c.outs[r] = stream
            closers.append(w)
            fa.append((os.POSIX_SPAWN_DUP2, w, n))
      pidns = pidns_of(req.get("pidns"), req.get("pidns_target"))
      # "host" rather than None: a child of our own, never setsid(1),
      # whose PID is ch-run's until ch-run execs the command.
      (a, r) = spawn.spawn_begin(req["argv"], req["env"], fa,
                                 bool(req.get("tty")),
                                 "host" if pidns is None else pidns,
                                 procs=c.procs,
                                 ops=premount_ops(c.merged, req),
                                 user=c.user)
   finally:
      for fd in closers:
         os.close(fd)
   st = Start(conn, c, a, r, req["argv"][0], pidns is not None)
   starts.append(st)
   os.set_blocking(r, False)
   sel.register(r, selectors.EVENT_READ, ("spawn", st))


def start_undo(c):
   """Forget container c whose start failed, closing what was opened for
      it (its log, stdio pipes): a failed start must leak nothing."""
   for fd in list(c.outs) + ([c.stdin_w] if c.stdin_w is not None else []):
      try:
         sel.unregister(fd)
      except (KeyError, ValueError):
         pass
      os.close(fd)
   c.outs = dict()
   c.stdin_w = None
   if (c.log):
      c.log.close()
   if (containers.get(c.id_) is c):
      del containers[c.id_]


class Start:
   """A container start in progress. Its child reports on pipe r (its PID,
      or an error) and closes it when ch-run runs; then, for ch-run, we
      wait (bounded, polled by the event loop, never blocking it) until
      ch-run has exec'd the command: its namespaces and root are then the
      container's for good (ch-run makes more than one mount namespace on
      the way), so "signal all" and stats find the container's processes
      by mount namespace, and an exec joining it finds its root."""

   def __init__(self, conn, c, a, r, cmd, pidns_p):
      self.conn = conn
      self.c = c
      self.a = a
      self.r = r
      self.out = b""
      self.pidns_p = pidns_p
      self.chrun = (os.path.realpath(cmd)
                    if os.path.basename(cmd) == "ch-run" else None)
      self.deadline = None     # of the wait for ch-run's exec

   def read(self):
      try:
         data = os.read(self.r, 4096)
      except BlockingIOError:
         return
      except OSError:
         data = b""
      if (data):
         self.out += data
         return
      sel.unregister(self.r)
      os.close(self.r)
      try:
         pid = spawn.spawn_end(self.a, self.out)
      except spawn.Spawn_Error as x:
         starts.remove(self)
         start_undo(self.c)
         self.conn.send({ "ok": False, "error": "Spawn_Error: %s" % x })
         return
      c = self.c
      c.pidfd = os.pidfd_open(pid)
      c.status = { "pid": pid, "pid_start": proc_start(pid),
                   "started_at": time.time_ns(), "pidns": self.pidns_p }
      for fd in c.outs:
         os.set_blocking(fd, False)
         sel.register(fd, selectors.EVENT_READ, ("out", c))
      sel.register(c.pidfd, selectors.EVENT_READ, ("exit", c))
      self.deadline = time.monotonic() + START_EXEC_WAIT
      self.poll()

   def poll(self):
      "Finish if ch-run has exec'd the command (or it is time to)."
      if (self.deadline is None):
         return
      if (self.chrun is not None and time.monotonic() < self.deadline):
         try:
            if (os.readlink("/proc/%d/exe" % self.c.pid) == self.chrun):
               return
         except OSError:
            pass
      self.done()

   def done(self):
      c = self.c
      starts.remove(self)
      c.status["mntns"] = mntns_of(c.pid)
      c.save()
      self.conn.send({ "ok": True, "status": c.status })


def premount_ops(merged, req):
   """Return spawn.premounts_apply()'s ops for the container's masked
      and read-only paths: those in /proc, /sys and /dev as they are (ch-run
      binds ours), the others inside the container's root. With sys_ro,
      first all of /sys read-only, its cgroup hierarchies showing only the
      container's own cgroups. In /proc and /sys, read-only covers the
      mounts below too (binfmt_misc under /proc/sys, say)."""
   ops = []
   if (req.get("sys_ro")):
      ops += [("rro", "/sys"), ("cgroup", "/sys/fs/cgroup")]
   for (kind, key) in (("mask", "masked"), ("ro", "readonly")):
      for p in req.get(key) or []:
         if (p.startswith(("/proc/", "/sys/", "/dev/"))):
            ops.append(("rro" if kind == "ro" and not p.startswith("/dev/")
                        else kind, p))
         else:
            ops.append((kind, path_in_root(merged, p)))
   return ops


def pidns_of(mode, target):
   """Return spawn.spawn()'s pidns for a container's PID namespace
      mode: "container" (its own), "pod" (the pod init's), "target" (that
      container's), anything else the keeper's (the host's)."""
   if (mode == "container"):
      return "new"
   if (mode == "pod" and pod_init is not None):
      return pod_init
   if (mode == "target"):
      t = container_get(target)
      if (t.exited_p() or not t.status.get("pidns")):
         raise ValueError("target container not running in its own PID "
                          "namespace: %s" % target)
      return t.pid
   return None


def rootfs_mount(c, rootfs, mounts, mkpaths, conn_fds=()):
   merged = rootfs["merged"]
   c.merged = merged
   lower = rootfs["lower"]
   if (rootfs.get("lower_fd") is not None):
      # The image ID-mapped into the pod's user namespace (hostUsers:
      # false), cloned by ch-cri: its root owns the image there.
      lower = rootfs["lower_mnt"]
      os.makedirs(lower, exist_ok=True)
      if (not mounted_p(lower)):
         spawn.tree_attach(conn_fds[rootfs["lower_fd"]], lower)
   if (not mounted_p(merged)):
      spawn.mount("overlay", merged, "overlay", 0,
                      "lowerdir=%s,upperdir=%s,workdir=%s"
                      % (lower, rootfs["upper"], rootfs["work"]))
   for (path, kind) in mkpaths:
      p = path_in_root(merged, path)
      if (kind == "dir"):
         os.makedirs(p, exist_ok=True)
      elif (not os.path.lexists(p)):
         os.makedirs(os.path.dirname(p), exist_ok=True)
         os.close(os.open(p, os.O_WRONLY | os.O_CREAT, 0o644))
   for m in mounts:
      # Staged mounts are for ch-run to bind (it mounts their targets).
      dst = m.get("stage") or path_in_root(merged, m["dst"])
      if (m.get("stage")):
         c.staged.append(dst)
      if (os.path.isdir(m["src"])):
         os.makedirs(dst, exist_ok=True)
      elif (not os.path.lexists(dst)):
         os.makedirs(os.path.dirname(dst), exist_ok=True)
         os.close(os.open(dst, os.O_WRONLY | os.O_CREAT, 0o644))
      if (m.get("fd") is not None):
         # The host's tree as ch-cri sees it, with mounts made there after
         # the pod started (our own view of the host stops at that).
         spawn.tree_attach(conn_fds[m["fd"]], dst)
      else:
         spawn.mount(m["src"], dst, None,
                         spawn.MS_BIND | spawn.MS_REC, None)
      # Copies of the (slave) pod namespace's mounts are slaves: keep that
      # for HOST_TO_CONTAINER, cut it for PRIVATE.
      spawn.mount(None, dst, None, spawn.MS_REC
                      | spawn.PROPAGATION[m.get("propagation",
                                                    "private")], None)
      if (m.get("ro")):
         spawn.bind_ro(dst)
      if (m.get("rro")):
         for sub in spawn.submounts(dst):
            spawn.bind_ro(sub)


def op_signal(conn, req):
   c = container_get(req["id"])
   sig = int(req["signal"])
   if (c.exited_p() and not req.get("all")):
      return { "exited": True }
   n = ns_kill(c.status.get("mntns") if req.get("all") else None, sig,
               [c.pid] if not c.exited_p() else [])
   return { "exited": c.exited_p(), "signalled": n }


def op_wait(conn, req):
   c = container_get(req["id"])
   if (c.exited_p()):
      return { "exited": True, "status": c.status }
   waiters.append((time.monotonic() + float(req.get("timeout", 0)), conn,
                   c.id_))
   return None   # answered later


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


def stdio_make(tty, stdin):
   """Return (file actions for a child, fds to pass, their names, fds to
      close once the child is spawned) for an exec's stdio."""
   if (tty):
      (master, slave) = os.openpty()
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
   (fa, fds, names, closers) = stdio_make(tty, bool(req.get("stdin")))
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


def op_reopen(conn, req):
   c = container_get(req["id"])
   if (c.log is None):
      raise ValueError("container not started: %s" % c.id_)
   c.log.reopen()
   return {}


def op_hold(conn, req):
   held.extend(conn.fds)
   for fd in conn.fds:
      os.set_inheritable(fd, False)
   conn.fds = []
   return {}


def op_remove(conn, req):
   c = containers.get(req["id"])
   if (c is None):
      return {}
   if (c.pid is not None and not c.exited_p()):
      raise ValueError("container running: %s" % c.id_)
   # Detached lazily (umount2 MNT_DETACH, no helper process): never
   # waits, even for a filesystem that hangs.
   lower = os.path.join(os.path.dirname(c.merged or "/"), "lower")
   for p in ([c.merged, lower] if c.merged else []) + c.staged:
      if (mounted_p(p)):
         spawn.umount_detach(p)
   if (c.log):
      c.log.close()
   del containers[c.id_]
   return {}


def op_events(conn, req):
   subscribers.append(conn)
   return { "containers": { i: c.status for (i, c) in containers.items() } }


def op_shutdown(conn, req):
   "Kill every container; the reply comes once all have exited (bounded)."
   global shutdown
   for c in containers.values():
      ns_kill(c.status.get("mntns"), signal.SIGKILL,
              [] if (c.pid is None or c.exited_p()) else [c.pid])
   if (pod_init is not None):
      os.kill(pod_init, signal.SIGKILL)   # and with it the PID namespace
   shutdown = (time.monotonic() + 10, conn)
   return None


def running_p():
   return any(c.pid and not c.exited_p() for c in containers.values())


def container_get(id_):
   c = containers.get(id_)
   if (c is None):
      raise KeyError("no such container in this pod: %s" % id_)
   return c


OPS = { "hello": op_hello, "start": op_start, "signal": op_signal,
        "wait": op_wait, "exec": op_exec, "exec_stream": op_exec_stream,
        "attach": op_attach, "portforward": op_portforward,
        "reopen": op_reopen, "hold": op_hold,
        "remove": op_remove, "events": op_events, "shutdown": op_shutdown }


## Event loop ##

def on_exit(c):
   for st in [st for st in starts if st.c is c]:
      st.done()   # its start is answered before its exit is told
   (_, st) = os.waitpid(c.pid, 0)
   sel.unregister(c.pidfd)
   os.close(c.pidfd)
   c.pidfd = None
   # Whatever the main process wrote is in the pipes now: log it all.
   for fd in list(c.outs):
      drain(c, fd)
   (code, sig) = exit_code_of(st)
   reason = "Completed" if code == 0 else "Error"
   if (sig == signal.SIGKILL and c.memcg and oom_kills(c.memcg) > 0):
      reason = "OOMKilled"
   c.status.update(finished_at=time.time_ns(), exit_code=code, signal=sig,
                   reason=reason)
   c.save()
   # The container ends with its main process, as with a PID namespace.
   ns_kill(c.status.get("mntns"), signal.SIGKILL)
   for s in list(subscribers):
      s.send({ "ev": "exit", "id": c.id_, "status": c.status })
   for (_, sock) in c.attached:
      sock.close()
   c.attached = []
   for ec in c.exit_conns:
      ec.send({ "ok": True, "exit_code": code })
   c.exit_conns = []
   for w in [w for w in waiters if w[2] == c.id_]:
      waiters.remove(w)
      w[1].send({ "ok": True, "exited": True, "status": c.status })


def drain(c, fd):
   "Read and log what fd has now; close it at end of file."
   while True:
      try:
         data = os.read(fd, READ_SIZE)
      except BlockingIOError:
         return
      except OSError:
         data = b""   # EIO: the tty's other side is closed
      stream = c.outs[fd]
      if (not data):
         c.log.feed(stream, b"", eof=True)
         sel.unregister(fd)
         os.close(fd)
         del c.outs[fd]
         return
      c.log.feed(stream, data)
      for (name, sock) in list(c.attached):
         if (name == stream):
            try:
               sock.send(data)
            except BlockingIOError:
               pass   # a slow attached client misses output, the log not
            except OSError:
               sock.close()
               c.attached.remove((name, sock))


def on_request(conn):
   try:
      (data, fds, _, _) = socket.recv_fds(conn.sock, READ_SIZE, 64)
   except BlockingIOError:
      return
   except OSError:
      (data, fds) = (b"", [])
   conn.fds += fds
   if (not data):
      fds_close(conn)
      conn.close()
      return
   conn.buf += data
   while b"\n" in conn.buf:
      (line, conn.buf) = conn.buf.split(b"\n", 1)
      try:
         req = json.loads(line)
         res = OPS[req["op"]](conn, req)
      except Exception as x:
         res = { "error": "%s: %s" % (type(x).__name__, x) }
         conn.send(dict(res, ok=False))
         continue
      if (res is not None):
         conn.send(dict(res, ok=True))
   if (not conn.buf):
      fds_close(conn)


def fds_close(conn):
   "Close the descriptors that came with requests now served."
   for fd in conn.fds:
      try:
         os.close(fd)
      except OSError:
         pass
   conn.fds = []


def strays_reap():
   "Reap orphans re-parented to us, not the children we wait for."
   if (any(st.deadline is None for st in starts)):
      # A start's children (A, then B before we know its PID) are ours
      # to wait for: not now.
      return
   known = { c.pid for c in containers.values() if not c.exited_p() }
   known.update(e.pid for e in execs)
   known.update(k.data[1][1] for k in sel.get_map().values()
                if k.data[0] == "stream-exit")
   known.add(pod_init)
   if (userns is not None):
      known.add(userns[0])
   spawn.strays_reap(known)


def loop_once(timeout):
   strays_reap()
   now = time.monotonic()
   for (deadline, conn, id_) in list(waiters):
      if (deadline <= now):
         waiters.remove((deadline, conn, id_))
         conn.send({ "ok": True, "exited": False })
   for st in list(starts):
      st.poll()
   for e in execs:
      if (e.deadline is not None and e.deadline <= now and not e.timed_out):
         e.timed_out = True
         try:
            os.killpg(e.pid, signal.SIGKILL)
         except OSError:
            pass
   for (key, mask) in sel.select(timeout):
      # An earlier handler of this batch may have closed (and even reused)
      # this descriptor: handle only keys still registered as they were.
      if (sel.get_map().get(key.fd) is not key):
         continue
      try:
         event(key, mask)
      except Exception:
         # One bad event must not take the pod down with the keeper.
         traceback.print_exc()
         sys.stderr.flush()


def event(key, mask=selectors.EVENT_READ):
   (kind, obj) = key.data
   if (kind == "listen"):
      (s, _) = key.fileobj.accept()
      conn = Conn(s)
      sel.register(s, selectors.EVENT_READ, ("conn", conn))
   elif (kind == "conn"):
      if (mask & selectors.EVENT_WRITE):
         try:
            obj.flush()
         except OSError:
            obj.close()
            return
      if (mask & selectors.EVENT_READ):
         on_request(obj)
   elif (kind == "out"):
      drain(obj, key.fd)
   elif (kind == "exit"):
      on_exit(obj)
   elif (kind == "exec-out"):
      obj.read(key.fd)
   elif (kind == "exec-exit"):
      obj.finish()
   elif (kind == "spawn"):
      obj.read()
   elif (kind == "stream-exit"):
      (conn, pid, pidfd) = obj
      sel.unregister(pidfd)
      os.close(pidfd)
      (_, st) = os.waitpid(pid, 0)
      conn.send({ "ok": True, "exit_code": exit_code_of(st)[0] })


def pod_setup(args):
   "Set up the pod's namespaces as args say; raise OSError naming what failed."
   if (args.get("hostname")):
      socket.sethostname(args["hostname"])
   sysctls = dict(args.get("sysctls") or {})
   if (args.get("net")):
      lo_up()
      # Containers are root only in their own user namespace, which does
      # not own this network namespace: let them bind ports below 1024
      # here (the setting is per network namespace).
      sysctls.setdefault("net.ipv4.ip_unprivileged_port_start", "0")
   for (name, value) in sorted(sysctls.items()):
      path = "/proc/sys/" + name.replace(".", "/")
      try:
         with open(path, "w") as fp:
            fp.write(value)
      except OSError as x:
         raise OSError("sysctl %s=%s: %s" % (name, value, x.strerror))


def main():
   global pod_init, userns
   pod_dir = sys.argv[1]
   with open(os.path.join(pod_dir, "keeper-args.json")) as fp:
      args = json.load(fp)
   signal.signal(signal.SIGPIPE, signal.SIG_IGN)
   try:
      if (args.get("userns")):
         spawn.userns_enter(args["userns"], args.get("net"),
                                args.get("uts"), args.get("ipc"))
      pod_setup(args)
      spawn.subreaper_set()
      if (args.get("pod_userns")):
         userns = spawn.userns_hold(args["pod_userns"])
      if (args.get("pidns") == "pod"):
         init = ([spawn.INIT_MARK, args["init"]] if args.get("init")
                 else None)
         pod_init = spawn.spawn(init, None, [], False, "new")
   except (OSError, spawn.Spawn_Error) as x:
      json_write_atomic(os.path.join(pod_dir, "keeper.json"),
                        { "error": str(x) })
      sys.exit(1)
   sock_path = args["socket"]
   try:
      os.unlink(sock_path)
   except FileNotFoundError:
      pass
   ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
   ls.bind(sock_path)
   os.chmod(sock_path, 0o600)
   ls.listen(64)
   sel.register(ls, selectors.EVENT_READ, ("listen", None))
   ready = { "pid": os.getpid(), "pid_start": proc_start(os.getpid()) }
   if (userns is not None):
      # ch-cri ID-maps mounts for the pod's user namespace through it.
      ready.update(userns_pid=userns[0], userns_start=proc_start(userns[0]))
   json_write_atomic(os.path.join(pod_dir, "keeper.json"), ready)
   while True:
      if (shutdown is not None
          and (not running_p() or time.monotonic() > shutdown[0])):
         for c in containers.values():
            if (c.log):
               c.log.close()
         shutdown[1].send({ "ok": True, "running": running_p() })
         shutdown[1].flush_wait(SEND_WAIT)
         break
      loop_once(0.002 if any(st.deadline for st in starts)
                else 0.5 if (waiters or execs or shutdown) else 5)
   try:
      os.unlink(sock_path)
   except OSError:
      pass


if (__name__ == "__main__"):
   main()
