# The keeper's process spawning: a container or exec in a PID namespace of
# its own (or another container's), with the keeper as its parent.
#
# Standard library only (the keeper's rule). The keeper has no threads, so
# it may fork. To put a process in a new PID namespace and still be its
# parent (and so get its exact wait status), the keeper is a child
# subreaper and forks twice:
#
#    keeper ── A: unshare(PID) or setns(PID); fork ── B (PID 1, or a PID in
#                 the target namespace); A exits, B is re-parented to us
#
# B makes its own mount namespace with a /proc for its PID namespace (so
# ch-run, which binds /proc, shows the container only its processes), sets
# up its stdio and session, and execs argv. A and B report on a pipe:
# "pid N" (B's PID here) or "error MSG"; end of file means B exec'd or
# died.

import fcntl
import os
import select
import signal
import termios

# As cri.keeper.spawn (in ch-cri), nsmount is our sibling in the package;
# beside keeper.py, run as a script, it is a top-level module.
try:
   from . import nsmount
except ImportError:
   import nsmount


## Constants ##

# spawn()'s argv for a pod init running ch-cri-init: [INIT_MARK, path].
INIT_MARK = ":init"


## Exceptions ##

class Spawn_Error(Exception):
   "The process could not be started; the message says why."


## Functions ##

def signals_default():
   """Return the signals a process we start must find at their defaults:
      all that can be caught. Python ignores SIGPIPE and SIGXFSZ, and the
      keeper may inherit SIGQUIT ignored; an ignored signal stays ignored
      across exec, so without this a container's "yes | head -n 1" spins
      forever (its writes fail with EPIPE, no SIGPIPE ends it). runc
      starts containers with default dispositions and an empty mask.
      (32 and 33, the C library's own, are not valid_signals() and can't
      be reset from Python; glibc installs its handlers when it needs
      them.)"""
   return { s for s in signal.valid_signals()
            if s not in (signal.SIGKILL, signal.SIGSTOP) }


def signals_reset():
   "In the child: every signal at its default, none blocked."
   for s in signals_default():
      try:
         signal.signal(s, signal.SIG_DFL)
      except (OSError, ValueError):
         pass     # reserved by the C library (32, 33)
   signal.pthread_sigmask(signal.SIG_SETMASK, ())


def fds_apply(fa):
   "In the child: apply posix_spawn-style file actions (DUP2 and OPEN)."
   for a in fa:
      if (a[0] == os.POSIX_SPAWN_DUP2):
         os.dup2(a[1], a[2])
      elif (a[0] == os.POSIX_SPAWN_OPEN):
         fd = os.open(a[2], a[3], a[4])
         if (fd != a[1]):
            os.dup2(fd, a[1])
            os.close(fd)
   keep = { a[2] if a[0] == os.POSIX_SPAWN_DUP2 else a[1] for a in fa }
   for name in os.listdir("/proc/self/fd"):
      fd = int(name)
      if (fd > 2 and fd not in keep):
         try:
            os.set_inheritable(fd, False)
         except OSError:
            pass


def init_loop(keeper_fd):
   """Be a pod's PID 1 when it has no main process of its own: reap
      orphans until killed or the keeper (pidfd keeper_fd) is gone; our
      exit ends the PID namespace. Never returns."""
   while not select.select([keeper_fd], [], [], 1)[0]:
      try:
         while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
      except ChildProcessError:
         pass
   os._exit(0)


def cgroups_join(procs):
   "Move ourselves into the cgroups whose cgroup.procs files procs lists."
   for p in procs:
      with open(p, "w") as fp:
         fp.write("0")


def child_b(w, argv, env, fa, tty, keeper_fd, proc_p, procs, ops, user,
            cgns_pid):
   """B: make a mount namespace with a /proc for our PID namespace if
      proc_p, join cgroups procs, apply ops there, become user, exec argv
      (or with argv None, be an init). Never returns."""
   try:
      if (proc_p):
         nsmount.libc_call("unshare", nsmount.CLONE_NEWNS)
         nsmount.mount(None, "/proc", None, nsmount.MS_PRIVATE, None)
         nsmount.mount("proc", "/proc", "proc", nsmount.MS_NOSUID
                       | nsmount.MS_NODEV | nsmount.MS_NOEXEC, None)
      if (ops and not proc_p):
         nsmount.libc_call("unshare", nsmount.CLONE_NEWNS)
      # Cgroups first: the "cgroup" premount shows the ones we are in.
      cgroups_join(procs)
      nsmount.premounts_apply(ops)
      if (cgns_pid is not None):
         # An exec: the container's cgroup namespace, as its own view.
         if (os.stat("/proc/%d/ns/cgroup" % cgns_pid).st_ino
             != os.stat("/proc/self/ns/cgroup").st_ino):
            nsmount.ns_join(cgns_pid, "cgroup", nsmount.CLONE_NEWCGROUP)
      elif (procs):
         # Our cgroups become the root of what the container sees in
         # /proc/*/cgroup.
         nsmount.libc_call("unshare", nsmount.CLONE_NEWCGROUP)
      os.setsid()
      signals_reset()
      if (argv is None or argv[0] == INIT_MARK):
         # A pod's init: ch-cri-init -P (small), or if it is not given,
         # this forked copy of the keeper.
         os.close(w)
         fds_apply([(os.POSIX_SPAWN_OPEN, n, "/dev/null", os.O_RDWR, 0)
                    for n in (0, 1, 2)])
         os.closerange(3, keeper_fd)
         os.closerange(keeper_fd + 1, 1 << 16)
         if (argv is not None):
            os.set_inheritable(keeper_fd, True)
            os.execv(argv[1], [argv[1], "-P", str(keeper_fd)])
         init_loop(keeper_fd)
      fds_apply(fa)
      if (tty):
         fcntl.ioctl(0, termios.TIOCSCTTY, 0)
      if (user is not None):
         nsmount.user_drop(user)
      os.execvpe(argv[0], argv, env)
   except BaseException as x:
      try:
         os.write(w, b"error %s\n"
                  % ("%s: %s" % (argv[0], x)).encode(errors="replace"))
      finally:
         os._exit(127)


def child_a(w, argv, env, fa, tty, join_pid, proc_p, procs, ops, user,
            cgns_pid):
   "A: enter or make the PID namespace, fork B, report its PID, exit."
   try:
      if (join_pid == "host"):
         proc_p = False
      elif (join_pid is None):
         nsmount.libc_call("unshare", nsmount.CLONE_NEWPID)
      else:
         nsmount.ns_join(join_pid, "pid", nsmount.CLONE_NEWPID)
      keeper_fd = os.pidfd_open(os.getppid())
      pid = os.fork()
      if (pid == 0):
         child_b(w, argv, env, fa, tty, keeper_fd, proc_p, procs, ops,
                 user, cgns_pid)
      os.write(w, b"pid %d\n" % pid)
      os._exit(0)
   except BaseException as x:
      try:
         os.write(w, b"error %s\n" % str(x).encode(errors="replace"))
      finally:
         os._exit(127)


def spawn(argv, env, fa, tty=False, pidns=None, proc_p=True, procs=(),
          ops=(), user=None, cgns_pid=None):
   """Start argv with environment env and posix_spawn file actions fa in
      a new session (with the tty on fd 0 as controlling terminal if tty).
      pidns None: in our PID namespace; "new": as PID 1 of a new one; an
      int: in the PID namespace of that process. With argv None, start a
      reaping init instead. proc_p False (for ch-run --join-pid, which
      needs the host's /proc) keeps our mount namespace. The process joins
      the cgroups whose cgroup.procs files procs lists before it execs
      (in our PID namespace, just after), and applies
      nsmount.premounts_apply()'s ops in a mount namespace of its own;
      with user ({"uid", "gid", "groups"}) it then becomes that user; with
      cgns_pid it joins that process's cgroup namespace. Return our
      child's PID; raise Spawn_Error."""
   if (pidns is None and (ops or procs or user or cgns_pid)):
      # Only a child of our own is in its cgroups and namespaces before
      # it runs anything (setsid(1) would exec first).
      pidns = "host"
   if (pidns is None):
      pre = ["setsid", "-c"] if tty else ["setsid"]
      try:
         pid = os.posix_spawnp("setsid", pre + argv, env, file_actions=fa,
                               setsigdef=signals_default(), setsigmask=())
      except OSError as x:
         raise Spawn_Error("%s: %s" % (argv[0], x.strerror))
      return pid
   (a, r) = spawn_begin(argv, env, fa, tty, pidns, proc_p, procs, ops,
                        user, cgns_pid)
   with os.fdopen(r, "rb") as fp:
      out = fp.read(4096)     # until B execs (close-on-exec) or dies
   return spawn_end(a, out)


def spawn_begin(argv, env, fa, tty, pidns, proc_p=True, procs=(), ops=(),
                user=None, cgns_pid=None):
   """Start what spawn() starts (pidns not None), without waiting for it:
      return (A's PID, a pipe to read until end of file), then call
      spawn_end() with what was read. A keeper must never wait for a
      child's set-up (mounts, cgroups) in its one thread: a hung one would
      stall the whole pod."""
   (r, w) = os.pipe()
   a = os.fork()
   if (a == 0):
      os.close(r)
      child_a(w, argv, env, fa, tty, None if pidns == "new" else pidns,
              proc_p, procs, ops, user, cgns_pid)
   os.close(w)
   return (a, r)


def spawn_end(a, out):
   """Return the PID that spawn_begin() started, from out (all that its
      pipe gave); raise Spawn_Error. A has written its report and exits at
      once, so waiting for it is short."""
   os.waitpid(a, 0)
   info = dict(l.split(b" ", 1) for l in out.splitlines() if b" " in l)
   if (b"pid" not in info):
      raise Spawn_Error((info.get(b"error") or b"no PID").decode())
   pid = int(info[b"pid"])
   if (b"error" in info):
      try:
         os.waitpid(pid, 0)
      except ChildProcessError:
         pass
      raise Spawn_Error(info[b"error"].decode())
   return pid


def strays_reap(known):
   """Reap our exited children that are not in known (orphans re-parented
      to us as subreaper); leave the others to their owners."""
   try:
      with open("/proc/self/task/%d/children" % os.getpid()) as fp:
         kids = [int(p) for p in fp.read().split()]
   except OSError:
      return
   for pid in kids:
      if (pid not in known):
         try:
            os.waitpid(pid, os.WNOHANG)
         except ChildProcessError:
            pass
