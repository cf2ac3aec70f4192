# ch-cri's side of the keeper protocol: Keeper_Client, one method per
# operation of the per-pod keeper (keeper.py).
#
# Protocol: one connection per request, over the keeper's unix socket
# (state dir k/ID[:12]). The request is one JSON object on one line,
# {"op": OP, ...}, possibly with file descriptors (SCM_RIGHTS) sent along;
# the reply is one line, {"ok": true, ...} or {"ok": false, "error": MSG},
# possibly with file descriptors. The keeper answers "wait" and "exec"
# when they are done, serving other connections meanwhile. Operations
# (request arguments -> reply fields):
#
#   hello                 -> pid, containers {id: status}
#   start id dir argv env log log_dir tty stdin stdin_once rootfs mounts
#         mkpaths masked readonly sys_ro cgroups memcg user pod_userns
#         pidns pidns_target, with the descriptors of idmapped mount trees
#                         -> status (mount the rootfs overlay, pre-mounts,
#                            join the cgroups, become user, spawn argv,
#                            log its output)
#   signal id signal all  send signal to the main process, or with all to
#                         every process in the container's mount namespace
#   wait id timeout       -> exited, status: reply when the container has
#                            exited, or after timeout seconds
#   exec id argv env timeout max
#                         -> exit_code stdout stderr (base64, at most max
#                            bytes of the two together) timed_out
#   exec_stream id argv env tty stdin
#                         -> pid, names; with the exec's stdio passed as
#                            file descriptors in that order ("tty" |
#                            "stdin", "stdout", "stderr"); a second line,
#                            exit_code, when it exits
#   attach id stdin       -> names and fds as above: a dup of the
#                            container's stdin (the first attach of a
#                            stdin_once container takes stdin itself, so
#                            the container sees EOF when that client
#                            closes it), and a socket per output stream
#                            copying what the container writes; a second
#                            line, exit_code, when it exits
#   portforward port      -> names ["socket"] and a socket connected to
#                            127.0.0.1:port (or [::1]) in the pod's
#                            network namespace
#   reopen id             reopen the container's log file
#   hold                  keep the descriptors sent with this request
#                         open until the keeper exits (slirp4netns's exit
#                         pipe)
#   remove id             unmount the container's rootfs and forget it
#   events                -> containers {id: status}; then the connection
#                            is a stream of {"ev": "exit", "id", "status"}
#                            lines
#   shutdown              kill every container, record exits, exit
#
# A container's status lives in its DIR/status.json (written atomically,
# only by its keeper while it lives): pid, pid_start, mntns, started_at,
# finished_at (ns), exit_code, signal, reason, message. Exit codes follow
# the shells' rule: 128 + N for a death by signal N.

import errno
import json
import os
import socket
import time

import misc


## Constants ##

# Longest wait to get through a keeper's full listen backlog: it is busy,
# not dead, so connecting is tried again (with back-off) until then, or
# the call's own limit if sooner.
CONNECT_WAIT = 10
FDS_MAX = 8               # descriptors a reply may carry
LINE_MAX = 64 * 2**20     # exec output comes base64-encoded in one line
# Longest wait for a reply. Requests carry timeouts up to 2**63 s, which
# socket timeouts can't represent; ten years is forever here.
LIMIT_MAX = 10 * 365 * 86400
# What a wait or exec may take beyond its own timeout before we give up.
SLACK_EXEC = 30
SLACK_WAIT = 10


## Globals ##

log = misc.log


## Exceptions ##

class Keeper_Error(Exception):
   """A keeper call failed. refused_p: the keeper answered, refusing the
      request or with a reply that is none. busy_p: it was there but did
      not take the call (its listen backlog stayed full) or did not
      answer in time (timeout_p). Otherwise the connection failed or
      broke. Whether the keeper is dead only its PID says, never this
      error: see store.Store.keeper_fail."""

   def __init__(self, msg, refused_p=False, busy_p=False, timeout_p=False):
      super().__init__(msg)
      self.refused_p = refused_p
      self.busy_p = busy_p or timeout_p
      self.timeout_p = timeout_p


## Functions ##

def connect(sock_path, deadline):
   """Return a socket connected to the keeper at sock_path, with a timeout
      of what is left until deadline (time.monotonic()). Raise
      Keeper_Error if it cannot be reached; if its listen backlog is full
      (EAGAIN), only once that lasts CONNECT_WAIT or until deadline."""
   end = min(deadline, time.monotonic() + CONNECT_WAIT)
   pause = 0.001
   while True:
      s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
      try:
         s.settimeout(max(deadline - time.monotonic(), 0.001))
         s.connect(sock_path)
         return s
      except OSError as x:
         s.close()
         if (x.errno != errno.EAGAIN):
            raise Keeper_Error("keeper unreachable at %s: %s"
                               % (sock_path, x.strerror or x))
      if (time.monotonic() + pause > end):
         raise Keeper_Error("keeper %s busy: its listen backlog stayed "
                            "full" % sock_path, busy_p=True)
      time.sleep(pause)
      pause = min(2 * pause, 0.1)


def reply_parse(line, sock_path, op):
   """Return the keeper's reply line to op as a dict. Raise Keeper_Error
      (refused_p) if it is no JSON object or says the request failed.

      >>> reply_parse(b'{"ok": true, "a": 1}', "k", "x")
      {'ok': True, 'a': 1}
      >>> reply_parse(b'[1]', "k", "x")
      Traceback (most recent call last):
        ...
      cri.keeper.client.Keeper_Error: keeper k: x: malformed reply: b'[1]'
   """
   try:
      res = json.loads(line)
   except (ValueError, RecursionError):
      res = None
   if (not isinstance(res, dict)):
      raise Keeper_Error("keeper %s: %s: malformed reply: %r"
                         % (sock_path, op, bytes(line[:200])),
                         refused_p=True)
   if (not res.get("ok")):
      raise Keeper_Error(str(res.get("error", "keeper refused %s" % op)),
                         refused_p=True)
   return res


## Classes ##

class Keeper_Client:
   """The keeper of one pod, as ch-cri talks to it: one method per
      operation (see the protocol above), each raising Keeper_Error when
      the call fails. Holds no connection: each call makes its own."""

   def __init__(self, sock_path):
      self.sock_path = sock_path

   def request(self, op, limit=30, fds=(), keep=False, **args):
      """Send request op with args (and file descriptors fds) and read its
         reply, waiting at most limit seconds in all. Return the reply (a
         dict) and close the connection; with keep, return (socket, reply,
         {name: descriptor received}, bytes read after the reply) with the
         socket blocking, for the lines the keeper sends later."""
      path = self.sock_path
      limit = min(limit, LIMIT_MAX)
      deadline = time.monotonic() + limit
      s = connect(path, deadline)
      got = []
      try:
         data = json.dumps(dict(args, op=op)).encode() + b"\n"
         try:
            if (fds):
               data = data[socket.send_fds(s, [data], list(fds)):]
            s.sendall(data)
         except socket.timeout:
            raise Keeper_Error("keeper %s: %s not taken in %ss"
                               % (path, op, limit), timeout_p=True)
         except OSError as x:
            raise Keeper_Error("keeper %s: %s: %s" % (path, op, x))
         buf = bytearray()
         while b"\n" not in buf:
            left = deadline - time.monotonic()
            if (left <= 0):
               raise Keeper_Error("keeper %s: no answer to %s in %ss"
                                  % (path, op, limit), timeout_p=True)
            s.settimeout(left)
            try:
               (data, more, _, _) = socket.recv_fds(s, 1 << 20, FDS_MAX)
            except socket.timeout:
               continue
            except OSError as x:
               raise Keeper_Error("keeper %s: %s: %s" % (path, op, x))
            got += more
            if (not data):
               raise Keeper_Error("keeper %s closed the connection during "
                                  "%s" % (path, op))
            buf += data
            if (len(buf) > LINE_MAX):
               raise Keeper_Error("keeper %s: reply too long" % path,
                                  refused_p=True)
         (line, rest) = bytes(buf).split(b"\n", 1)
         res = reply_parse(line, path, op)
      except BaseException:
         s.close()
         for fd in got:
            os.close(fd)
         raise
      if (not keep):
         s.close()
         for fd in got:   # none expected
            os.close(fd)
         return res
      s.settimeout(None)
      return (s, res, dict(zip(res.get("names", []), got)), rest)

   ## Operations ##

   def attach(self, id_, stdin):
      "Return (socket, reply, {name: fd}, rest) of an attach to id_."
      return self.request("attach", keep=True, id=id_, stdin=bool(stdin))

   def events(self, limit=10):
      """Open an event stream, waiting at most limit seconds. Return
         (socket, statuses of the keeper's containers, what was read after
         the reply), the socket non-blocking."""
      (s, res, _, rest) = self.request("events", limit=limit, keep=True)
      statuses = res.get("containers", {})
      if (not (isinstance(statuses, dict)
               and all(isinstance(v, dict) for v in statuses.values()))):
         s.close()
         raise Keeper_Error("keeper %s: events: malformed reply: statuses "
                            "not an object of objects" % self.sock_path,
                            refused_p=True)
      s.setblocking(False)
      return (s, statuses, rest)

   def exec(self, id_, argv, env, timeout, max_):
      """Run argv in container id_, waiting at most timeout seconds (0:
         forever); return the reply (exit_code, stdout, stderr, timed_out)."""
      return self.request("exec", limit=(timeout or LIMIT_MAX) + SLACK_EXEC,
                          id=id_, argv=argv, env=env, timeout=timeout,
                          max=max_)

   def exec_stream(self, id_, argv, env, tty, stdin):
      "Return (socket, reply, {name: fd}, rest) of argv run in id_."
      return self.request("exec_stream", keep=True, id=id_, argv=argv,
                          env=env, tty=bool(tty), stdin=bool(stdin))

   def hello(self, limit=30):
      return self.request("hello", limit=limit)

   def hold(self, fds):
      "Have the keeper keep descriptors fds open until it exits."
      return self.request("hold", fds=fds)

   def portforward(self, port):
      "Return a socket connected to port in the pod's network namespace."
      (s, _, fds, _) = self.request("portforward", keep=True, port=int(port))
      s.close()
      return socket.socket(fileno=fds["socket"])

   def remove(self, id_):
      return self.request("remove", id=id_)

   def reopen(self, id_):
      return self.request("reopen", id=id_)

   def shutdown(self, limit=30):
      return self.request("shutdown", limit=limit)

   def signal(self, id_, signal, all_=False):
      args = dict(all=True) if all_ else dict()
      return self.request("signal", id=id_, signal=signal, **args)

   def start(self, id_, dir_, argv, env, fds=(), **opts):
      """Start container id_ (see the protocol above for opts); return the
         reply (its status)."""
      return self.request("start", fds=fds, id=id_, dir=dir_, argv=argv,
                          env=env, **opts)

   def wait(self, id_, timeout):
      "Wait at most timeout seconds for id_ to exit; return the reply."
      return self.request("wait", limit=timeout + SLACK_WAIT, id=id_,
                          timeout=timeout)
