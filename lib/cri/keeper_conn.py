# ch-cri's side of the keeper protocol (see keeper.py): one call per
# connection, and event streams.

import json
import os
import socket
import time

import misc


## Constants ##

LINE_MAX = 64 * 2**20     # exec output comes base64-encoded in one line
# Longest wait for a reply. Requests carry timeouts up to 2**63 s, which
# socket timeouts can't represent; ten years is forever here.
LIMIT_MAX = 10 * 365 * 86400


## Globals ##

log = misc.log


## Exceptions ##

class Keeper_Error(Exception):
   """A keeper call failed. gone_p says whether the keeper itself is
      unreachable (dead), as opposed to refusing the request."""

   def __init__(self, msg, gone_p=False):
      super().__init__(msg)
      self.gone_p = gone_p


## Functions ##

def call(sock_path, op, limit=30, fds=(), **args):
   """Send one request (op and args, and file descriptors fds) to the
      keeper at sock_path and return its reply (a dict), waiting at most
      limit seconds. Raise Keeper_Error if it refuses or cannot be
      reached."""
   limit = min(limit, LIMIT_MAX)
   s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
   deadline = time.monotonic() + limit
   try:
      s.settimeout(limit)
      try:
         s.connect(sock_path)
      except OSError as x:
         raise Keeper_Error("keeper unreachable at %s: %s"
                            % (sock_path, x.strerror), gone_p=True)
      data = json.dumps(dict(args, op=op)).encode() + b"\n"
      if (fds):
         data = data[socket.send_fds(s, [data], list(fds)):]
      s.sendall(data)
      buf = bytearray()
      while b"\n" not in buf:
         left = deadline - time.monotonic()
         if (left <= 0):
            raise Keeper_Error("keeper %s: no answer to %s in %ss"
                               % (sock_path, op, limit))
         s.settimeout(left)
         try:
            data = s.recv(1 << 20)
         except socket.timeout:
            continue
         except OSError as x:
            raise Keeper_Error("keeper %s: %s" % (sock_path, x), gone_p=True)
         if (not data):
            raise Keeper_Error("keeper %s closed the connection during %s"
                               % (sock_path, op), gone_p=True)
         buf += data
         if (len(buf) > LINE_MAX):
            raise Keeper_Error("keeper %s: reply too long" % sock_path)
   finally:
      s.close()
   res = json.loads(buf[:buf.index(b"\n")])
   if (not res.get("ok")):
      raise Keeper_Error(res.get("error", "keeper refused %s" % op))
   return res


def stream_open(sock_path, op, **args):
   """Send a request whose reply passes file descriptors (exec_stream,
      attach, portforward). Return (socket, reply, {name: fd}, rest): the
      socket stays open for the line the keeper sends at exit; rest is
      what was read after the reply. Raise Keeper_Error."""
   s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
   fds = []
   try:
      s.settimeout(30)
      s.connect(sock_path)
      data = json.dumps(dict(args, op=op)).encode() + b"\n"
      if (fds):
         data = data[socket.send_fds(s, [data], list(fds)):]
      s.sendall(data)
      buf = b""
      while b"\n" not in buf:
         (data, more, _, _) = socket.recv_fds(s, 65536, 8)
         fds += more
         if (not data):
            raise OSError("connection closed")
         buf += data
   except OSError as x:
      s.close()
      for fd in fds:
         os.close(fd)
      raise Keeper_Error("keeper %s: %s: %s" % (sock_path, op, x),
                         gone_p=True)
   (line, rest) = buf.split(b"\n", 1)
   res = json.loads(line)
   if (not res.get("ok")):
      s.close()
      for fd in fds:
         os.close(fd)
      raise Keeper_Error(res.get("error", "keeper refused %s" % op))
   s.settimeout(None)
   return (s, res, dict(zip(res.get("names", []), fds)), rest)


def events_open(sock_path):
   """Open an event stream from the keeper at sock_path. Return (socket,
      statuses of its containers) or raise Keeper_Error."""
   s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
   try:
      s.settimeout(10)
      s.connect(sock_path)
      s.sendall(b'{"op": "events"}\n')
      buf = b""
      while b"\n" not in buf:
         data = s.recv(65536)
         if (not data):
            raise OSError("connection closed")
         buf += data
   except OSError as x:
      s.close()
      raise Keeper_Error("keeper unreachable at %s: %s" % (sock_path, x),
                         gone_p=True)
   (line, rest) = buf.split(b"\n", 1)
   res = json.loads(line)
   s.setblocking(False)
   return (s, res.get("containers", {}), rest)
