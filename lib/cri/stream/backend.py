# The streaming server's backend: exec, attach and port-forward through the
# pod's keeper, which hands over file descriptors (see keeper.py).

import fcntl
import json
import os
import signal
import socket
import struct
import termios

import misc
import cri.errors as err
import cri.keeper.client as kc
import cri.stream.server as streaming


## Globals ##

log = misc.log


## Functions ##

def stream_errors(method):
   """Decorate a backend method: our errors become Stream_Error, whose
      message the client reads on its error stream."""
   def wrapper(*args):
      try:
         return method(*args)
      except (err.CRI_Error, kc.Keeper_Error, OSError) as x:
         raise streaming.Stream_Error(str(x))
   wrapper.__name__ = method.__name__
   wrapper.__doc__ = method.__doc__
   return wrapper


## Classes ##

class Proc:
   """An exec or attach in progress: its stdio file descriptors (owned by
      the streaming server once handed over), the keeper connection that
      will carry the exit code, and for an exec its PID (its session)."""

   def __init__(self, sock, fds, rest, pid=None):
      self.sock = sock
      self.buf = rest
      self.pid = pid
      self.exit_code = None
      self.tty = fds.get("tty")
      if (self.tty is not None):
         self.stdin = os.dup(self.tty)
         self.stdout = self.tty
         self.stderr = None
      else:
         self.stdin = fds.get("stdin")
         self.stdout = fds.get("stdout")
         self.stderr = fds.get("stderr")

   def resize(self, width, height):
      if (self.tty is not None):
         try:
            fcntl.ioctl(self.tty, termios.TIOCSWINSZ,
                        struct.pack("HHHH", height, width, 0, 0))
         except OSError as x:
            log.debug("resize: %s", x)

   def wait(self):
      "Block until the keeper reports the exit; return the exit code."
      while (self.exit_code is None):
         if (b"\n" in self.buf):
            (line, self.buf) = self.buf.split(b"\n", 1)
            self.exit_code = json.loads(line).get("exit_code", 255)
            break
         try:
            data = self.sock.recv(4096)
         except OSError:
            data = b""
         if (not data):
            self.exit_code = 255   # keeper gone: status unknown
            break
         self.buf += data
      return self.exit_code

   def close(self):
      """Release: an exec still running is killed (with its children, by
         session); an attach just detaches."""
      if (self.pid is not None and self.exit_code is None):
         try:
            os.killpg(self.pid, signal.SIGKILL)
         except OSError:
            pass
      try:
         self.sock.shutdown(socket.SHUT_RDWR)   # wakes a blocked wait()
      except OSError:
         pass
      self.sock.close()


class Keeper_Backend:
   "Streams through the keepers of ctrs' pods."

   def __init__(self, ch, ctrs, pods):
      self.ch = ch
      self.ctrs = ctrs
      self.pods = pods

   @stream_errors
   def exec_start(self, container_id, cmd, tty, stdin):
      c = self.ctrs.get(container_id)
      pid = self.ctrs.running_pid(c)
      if (not cmd):
         raise err.Invalid_Argument("cmd: empty")
      pod = self.pods.get(c.pod_id)
      s = c.spec
      env = list(s["env"])
      if (tty and not any(e.startswith("TERM=") for e in env)):
         env.append("TERM=xterm")
      argv = self.ctrs.exec_argv(c, pid, cmd, env)
      (sock, res, fds, rest) = kc.Keeper_Client(pod.sock).exec_stream(
         c.id_, argv, self.ch.run_env(), tty, stdin)
      return Proc(sock, fds, rest, pid=res["pid"])

   @stream_errors
   def attach_start(self, container_id, tty, stdin):
      c = self.ctrs.get(container_id)
      self.ctrs.running_pid(c)
      pod = self.pods.get(c.pod_id)
      (sock, res, fds, rest) = kc.Keeper_Client(pod.sock).attach(c.id_,
                                                                stdin)
      return Proc(sock, fds, rest)

   @stream_errors
   def port_forward(self, pod_id, port):
      pod = self.pods.get(pod_id)
      if (not pod.alive):
         raise err.Failed_Precondition("pod sandbox not ready: %s" % pod_id)
      return kc.Keeper_Client(pod.sock).portforward(port)
