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

import json
import os
import selectors
import signal
import socket
import sys
import time
import traceback

# -I leaves our directory off sys.path; stdlib modules still come first.
# Our helpers (spawn, nsmount, logio, proc, and the operations in state,
# lifecycle and streams) are imported from there as top-level modules:
# run as a script, we are no part of the cri package.
sys.path.append(os.path.dirname(os.path.abspath(__file__)))
import lifecycle  # noqa: E402
import nsmount  # noqa: E402
import spawn  # noqa: E402
import state  # noqa: E402
import streams  # noqa: E402
from logio import exit_code_of, lo_up  # noqa: E402
from proc import json_write_atomic, ns_kill, proc_start  # noqa: E402
from state import (READ_SIZE, containers, execs, held, running_p,  # noqa: E402
                   sel, starts, subscribers, waiters)


## Constants ##

# A reply a peer has not read yet may wait this long to go in one piece
# (with descriptors), and this much may wait in all (an exec's output).
SEND_WAIT = 5
OUT_MAX = 64 * 2**20


## Classes ##

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


## Operations ##

def op_hello(conn, req):
   return { "pid": os.getpid(),
            "containers": { i: c.status for (i, c) in containers.items() } }


def op_hold(conn, req):
   held.extend(conn.fds)
   for fd in conn.fds:
      os.set_inheritable(fd, False)
   conn.fds = []
   return {}


def op_events(conn, req):
   subscribers.append(conn)
   return { "containers": { i: c.status for (i, c) in containers.items() } }


def op_shutdown(conn, req):
   "Kill every container; the reply comes once all have exited (bounded)."
   for c in containers.values():
      ns_kill(c.status.get("mntns"), signal.SIGKILL,
              [] if (c.pid is None or c.exited_p()) else [c.pid])
   if (state.pod_init is not None):
      # and with it the PID namespace
      os.kill(state.pod_init, signal.SIGKILL)
   state.shutdown = (time.monotonic() + 10, conn)
   return None


OPS = { "hello": op_hello, "start": lifecycle.op_start,
        "signal": lifecycle.op_signal, "wait": lifecycle.op_wait,
        "exec": streams.op_exec, "exec_stream": streams.op_exec_stream,
        "attach": streams.op_attach, "portforward": streams.op_portforward,
        "reopen": lifecycle.op_reopen, "hold": op_hold,
        "remove": lifecycle.op_remove, "events": op_events,
        "shutdown": op_shutdown }


## Event loop ##

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
   known.add(state.pod_init)
   if (state.userns is not None):
      known.add(state.userns[0])
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
      lifecycle.drain(obj, key.fd)
   elif (kind == "exit"):
      lifecycle.on_exit(obj)
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
   pod_dir = sys.argv[1]
   with open(os.path.join(pod_dir, "keeper-args.json")) as fp:
      args = json.load(fp)
   signal.signal(signal.SIGPIPE, signal.SIG_IGN)
   try:
      if (args.get("userns")):
         nsmount.userns_enter(args["userns"], args.get("net"),
                              args.get("uts"), args.get("ipc"))
      pod_setup(args)
      nsmount.subreaper_set()
      if (args.get("pod_userns")):
         state.userns = nsmount.userns_hold(args["pod_userns"])
      if (args.get("pidns") == "pod"):
         init = ([spawn.INIT_MARK, args["init"]] if args.get("init")
                 else None)
         state.pod_init = spawn.spawn(init, None, [], False, "new")
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
   if (state.userns is not None):
      # ch-cri ID-maps mounts for the pod's user namespace through it.
      ready.update(userns_pid=state.userns[0],
                   userns_start=proc_start(state.userns[0]))
   json_write_atomic(os.path.join(pod_dir, "keeper.json"), ready)
   while True:
      shutdown = state.shutdown
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
