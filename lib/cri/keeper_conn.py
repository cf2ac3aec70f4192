# ch-cri's side of the keeper protocol (see keeper.py): one call per
# connection, and event streams.

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
LINE_MAX = 64 * 2**20     # exec output comes base64-encoded in one line
# Longest wait for a reply. Requests carry timeouts up to 2**63 s, which
# socket timeouts can't represent; ten years is forever here.
LIMIT_MAX = 10 * 365 * 86400


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

def call(sock_path, op, limit=30, fds=(), **args):
   """Send one request (op and args, and file descriptors fds) to the
      keeper at sock_path and return its reply (a dict), waiting at most
      limit seconds. Raise Keeper_Error if it refuses or cannot be
      reached."""
   limit = min(limit, LIMIT_MAX)
   deadline = time.monotonic() + limit
   s = connect(sock_path, deadline)
   try:
      data = json.dumps(dict(args, op=op)).encode() + b"\n"
      try:
         if (fds):
            data = data[socket.send_fds(s, [data], list(fds)):]
         s.sendall(data)
      except socket.timeout:
         raise Keeper_Error("keeper %s: %s not taken in %ss"
                            % (sock_path, op, limit), timeout_p=True)
      except OSError as x:
         raise Keeper_Error("keeper %s: %s: %s" % (sock_path, op, x))
      buf = bytearray()
      while b"\n" not in buf:
         left = deadline - time.monotonic()
         if (left <= 0):
            raise Keeper_Error("keeper %s: no answer to %s in %ss"
                               % (sock_path, op, limit), timeout_p=True)
         s.settimeout(left)
         try:
            data = s.recv(1 << 20)
         except socket.timeout:
            continue
         except OSError as x:
            raise Keeper_Error("keeper %s: %s" % (sock_path, x))
         if (not data):
            raise Keeper_Error("keeper %s closed the connection during %s"
                               % (sock_path, op))
         buf += data
         if (len(buf) > LINE_MAX):
            raise Keeper_Error("keeper %s: reply too long" % sock_path,
                               refused_p=True)
   finally:
      s.close()
   return reply_parse(buf[:buf.index(b"\n")], sock_path, op)


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


def events_open(sock_path, limit=10):
   """Open an event stream from the keeper at sock_path, waiting at most
      limit seconds. Return (socket, statuses of its containers, what was
      read after the reply) or raise Keeper_Error."""
   s = connect(sock_path, time.monotonic() + limit)
   try:
      try:
         s.sendall(b'{"op": "events"}\n')
         buf = b""
         while b"\n" not in buf:
            data = s.recv(65536)
            if (not data):
               raise OSError("connection closed")
            buf += data
      except socket.timeout:
         raise Keeper_Error("keeper %s: no answer to events in %ss"
                            % (sock_path, limit), timeout_p=True)
      except OSError as x:
         raise Keeper_Error("keeper %s: events: %s" % (sock_path, x))
      (line, rest) = buf.split(b"\n", 1)
      res = reply_parse(line, sock_path, "events")
      statuses = res.get("containers", {})
      if (not (isinstance(statuses, dict)
               and all(isinstance(v, dict) for v in statuses.values()))):
         raise Keeper_Error("keeper %s: events: malformed reply: statuses "
                            "not an object of objects" % sock_path,
                            refused_p=True)
   except BaseException:
      s.close()
      raise
   s.setblocking(False)
   return (s, statuses, rest)


def reply_parse(line, sock_path, op):
   """Return the keeper's reply line to op as a dict. Raise Keeper_Error
      (refused_p) if it is no JSON object or says the request failed.

      >>> reply_parse(b'{"ok": true, "a": 1}', "k", "x")
      {'ok': True, 'a': 1}
      >>> reply_parse(b'[1]', "k", "x")
      Traceback (most recent call last):
        ...
      cri.keeper_conn.Keeper_Error: keeper k: x: malformed reply: b'[1]'
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


def stream_open(sock_path, op, **args):
   """Send a request whose reply passes file descriptors (exec_stream,
      attach, portforward). Return (socket, reply, {name: fd}, rest): the
      socket stays open for the line the keeper sends at exit; rest is
      what was read after the reply. Raise Keeper_Error."""
   s = connect(sock_path, time.monotonic() + 30)
   fds = []
   try:
      try:
         s.sendall(json.dumps(dict(args, op=op)).encode() + b"\n")
         buf = b""
         while b"\n" not in buf:
            (data, more, _, _) = socket.recv_fds(s, 65536, 8)
            fds += more
            if (not data):
               raise OSError("connection closed")
            buf += data
      except socket.timeout:
         raise Keeper_Error("keeper %s: no answer to %s in 30s"
                            % (sock_path, op), timeout_p=True)
      except OSError as x:
         raise Keeper_Error("keeper %s: %s: %s" % (sock_path, op, x))
      (line, rest) = buf.split(b"\n", 1)
      res = reply_parse(line, sock_path, op)
   except BaseException:
      s.close()
      for fd in fds:
         os.close(fd)
      raise
   s.settimeout(None)
   return (s, res, dict(zip(res.get("names", []), fds)), rest)
