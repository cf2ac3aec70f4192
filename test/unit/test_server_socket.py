# The server's unix socket (lib/cri/server.py): clients find it only with
# the mode and group it is configured with, never before.

import concurrent.futures
import grp
import os
import socket
import stat

import grpc
import pytest

import cri.server

from conftest import RPC_TIMEOUT


## Constants ##

MODE = 0o660


## Functions ##

def group_other():
   """Return a group (name, gid) the socket may be given that is not its
      default: any other group as root, else our own."""
   if (os.geteuid() != 0):
      g = grp.getgrgid(os.getegid())
      return (g.gr_name, g.gr_gid)
   for g in grp.getgrall():
      if (g.gr_gid != os.getegid()):
         return (g.gr_name, g.gr_gid)
   pytest.skip("no group but our own")


## Classes ##

class Watched_Server:
   """A gRPC server that records, at each step of setting up, whether its
      socket's path exists and with what mode and group."""

   def __init__(self, path):
      self.path = path
      self.server = grpc.server(
         concurrent.futures.ThreadPoolExecutor(max_workers=2))
      self.seen = []
      self.started = False

   def look(self, when):
      try:
         st = os.lstat(self.path)
      except FileNotFoundError:
         self.seen.append((when, None, None))
         return
      self.seen.append((when, stat.S_IMODE(st.st_mode), st.st_gid))

   def add_insecure_port(self, address):
      res = self.server.add_insecure_port(address)
      self.look("bound")
      return res

   def start(self):
      self.look("start")
      self.started = True
      self.server.start()


## Tests ##

def test_socket_mode_from_the_start(root):
   "The socket never exists at its path with the wrong mode or group."
   (group, gid) = group_other()
   path = os.path.join(root, "run", "cri.sock")
   s = Watched_Server(path)
   umask = os.umask(0)   # what would make a socket open to all
   try:
      cri.server.socket_listen(s, path, MODE, group)
   finally:
      os.umask(umask)
   s.look("listening")
   if (not s.started):
      s.start()
   try:
      assert s.seen[-1][1:] == (MODE, gid), s.seen
      for (when, mode, g) in s.seen:
         assert mode is None or (mode, g) == (MODE, gid), s.seen
      assert os.listdir(os.path.dirname(path)) == ["cri.sock"]
      ch = grpc.insecure_channel("unix://" + path)
      grpc.channel_ready_future(ch).result(timeout=RPC_TIMEOUT)
      ch.close()
   finally:
      s.server.stop(None).wait()


def test_socket_stale_replaced(root):
   "A stale socket is replaced; anything else at the path is refused."
   path = os.path.join(root, "cri.sock")
   old = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
   old.bind(path)
   old.close()   # nobody listens
   s = Watched_Server(path)
   cri.server.socket_listen(s, path, MODE, None)
   if (not s.started):
      s.start()
   try:
      assert stat.S_IMODE(os.lstat(path).st_mode) == MODE
      with pytest.raises(cri.server.Start_Error, match="another server"):
         cri.server.socket_listen(Watched_Server(path), path, MODE, None)
   finally:
      s.server.stop(None).wait()
   os.unlink(path)
   with open(path, "w"):
      pass
   with pytest.raises(cri.server.Start_Error, match="not a socket"):
      cri.server.socket_listen(Watched_Server(path), path, MODE, None)
