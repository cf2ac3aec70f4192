# The per-pod keeper's container lifecycle: start (root, mounts, stdio,
# spawn), signal, wait, log reopening, exit and removal.

import errno
import os
import selectors
import signal
import stat
import time

import devfs
import nsmount
import spawn
import state
from logio import Log, exit_code_of, mounted_p, oom_kills, path_in_root
from proc import mntns_of, ns_kill, proc_start
from state import (READ_SIZE, Container, container_get, containers, sel,
                   starts, subscribers, waiters)


## Constants ##

# Longest a start waits for ch-run to exec the command (seconds).
START_EXEC_WAIT = 5

# Directories a container may write in even when its image is someone
# else's (see upper_prepare()).
WRITABLE_DIRS = ("/tmp", "/var/tmp")


## Functions ##

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
      if (state.userns is None):
         raise ValueError("pod has no user namespace of its own")
      c.user = dict(c.user, userns=state.userns[1])
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
   if (req.get("dev")):
      dev = dict(req["dev"])
      if (dev.pop("shm_make", False) and not mounted_p(dev["shm"])):
         # The pod's /dev/shm, shared by its containers (as they share
         # its IPC namespace), in our mount namespace: gone with us.
         os.makedirs(dev["shm"], exist_ok=True)
         nsmount.mount("shm", dev["shm"], "tmpfs",
                     nsmount.MS_NOSUID | nsmount.MS_NODEV | nsmount.MS_NOEXEC,
                     "mode=1777,size=65536k")
      if (dev.get("pts") and not mounted_p(dev["pts"])):
         devfs.pts_make(dev["pts"])
      os.makedirs(dev["stage"], exist_ok=True)
      req["dev"] = dev
      c.pts = dev.get("pts")
   fa = []
   closers = []
   try:
      if (req.get("tty")):
         (master, slave) = (devfs.pty_open(c.pts) if c.pts
                            else os.openpty())
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


def premount_ops(merged, req):
   """Return nsmount.premounts_apply()'s ops for the container's masked
      and read-only paths: those in /proc, /sys and /dev as they are (ch-run
      binds ours), the others inside the container's root. With sys_ro,
      first all of /sys read-only, its cgroup hierarchies showing only the
      container's own cgroups. In /proc and /sys, read-only covers the
      mounts below too (binfmt_misc under /proc/sys, say)."""
   ops = []
   if (req.get("cdi_hooks")):
      # Once the root and its mounts are in place, before anything else
      # (CDI's createContainer hooks run there too).
      ops.append(("hooks", { "merged": merged, "plan": req["cdi_hooks"],
                             "id_": req["id"], "bundle": req["dir"] }))
   if (req.get("dev")):
      # Its own /dev first: the masks below may name paths in it.
      ops.append(("dev", req["dev"]))
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
   if (mode == "pod" and state.pod_init is not None):
      return state.pod_init
   if (mode == "target"):
      t = container_get(target)
      if (t.exited_p() or not t.status.get("pidns")):
         raise ValueError("target container not running in its own PID "
                          "namespace: %s" % target)
      return t.pid
   return None


def upper_prepare(lower, upper, paths):
   """For each path (inside the container), make the directories on the
      way to it in the writable layer upper, with the image's modes, where
      the image (lower) has them owned by an ID unmapped here: an image of
      a read-only store that another user owns, run by an unprivileged
      ch-cri. The overlay then shows those directories as ours, so the
      files and mount points ch-cri adds can be made (a copy-up of a
      directory whose owner we cannot map fails). Call before the overlay
      is mounted."""
   try:
      with open("/proc/sys/kernel/overflowuid") as fp:
         overflow = int(fp.read())
   except (OSError, ValueError):
      overflow = 65534
   for path in paths:
      parts = [p for p in os.path.dirname(os.path.normpath("/" + path))
                                .split("/") if p]
      for i in range(len(parts)):
         rel = os.path.join(*parts[:i + 1])
         try:
            st = os.lstat(os.path.join(lower, rel))
         except OSError:
            break
         if (not stat.S_ISDIR(st.st_mode)):
            break      # a symlink: the container resolves it
         if (st.st_uid != overflow):
            continue
         up = os.path.join(upper, rel)
         if (not os.path.lexists(up)):
            os.mkdir(up)
            os.chmod(up, stat.S_IMODE(st.st_mode))


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
         nsmount.tree_attach(conn_fds[rootfs["lower_fd"]], lower)
   if (rootfs.get("lower_mounted") and not mounted_p(lower)):
      raise ValueError("image's SquashFS mount %s is not in this pod (the "
                       "pod started before ch-cri's SquashFS namespace, or "
                       "outside it): recreate the pod" % lower)
   if (not mounted_p(merged)):
      upper_prepare(lower, rootfs["upper"],
                    [p for (p, _) in mkpaths]
                    + [m["dst"] for m in mounts if not m.get("stage")]
                    + [d + "/." for d in WRITABLE_DIRS])
      nsmount.mount("overlay", merged, "overlay", 0,
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
         nsmount.tree_attach(conn_fds[m["fd"]], dst)
      else:
         nsmount.mount(m["src"], dst, None,
                       nsmount.MS_BIND | nsmount.MS_REC, None)
      # Copies of the (slave) pod namespace's mounts are slaves: keep that
      # for HOST_TO_CONTAINER, cut it for PRIVATE.
      nsmount.mount(None, dst, None, nsmount.MS_REC
                    | nsmount.PROPAGATION[m.get("propagation", "private")],
                    None)
      flags = ((nsmount.MS_RDONLY if m.get("ro") else 0)
               | (nsmount.MS_NOSUID if m.get("nosuid") else 0)
               | (nsmount.MS_NODEV if m.get("nodev") else 0))
      if (flags):
         nsmount.bind_flags(dst, flags)
      if (m.get("rro")):
         for sub in nsmount.submounts(dst):
            nsmount.bind_ro(sub)


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


def op_reopen(conn, req):
   c = container_get(req["id"])
   if (c.log is None):
      raise ValueError("container not started: %s" % c.id_)
   c.log.reopen()
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
         nsmount.umount_detach(p)
   if (c.log):
      c.log.close()
   del containers[c.id_]
   return {}


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


## Classes ##

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
