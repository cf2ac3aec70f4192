# A fake streaming backend over host processes, and a small CRI server
# returning Stream_Server URLs, for test_streaming.py and crictl.

import concurrent.futures
import fcntl
import os
import pty
import signal
import socket
import struct
import subprocess
import termios
import threading

import grpc

import cri.stream.server as streaming

from cri_api.v1 import api_pb2 as pb
from cri_api.v1 import api_pb2_grpc as pb_grpc


## Constants ##

ATTACH_CMD = ["sh", "-c", 'while read l; do echo "got $l"; '
              '[ "$l" = quit ] && exit 7; done']
CTR = "c0ffee"
POD = "b0ba"


## Classes ##

class Exec_Proc:
   "A host process with pipes, or a pty when tty."

   def __init__(self, cmd, tty, stdin):
      if (tty):
         (master, slave) = pty.openpty()
         self.p = subprocess.Popen(cmd, stdin=slave, stdout=slave,
                                   stderr=slave, start_new_session=True)
         os.close(slave)
         self.master = master
         self.stdin = os.dup(master) if stdin else None
         self.stdout = master
         self.stderr = None
      else:
         self.master = None
         (ir, iw) = os.pipe() if stdin else (None, None)
         (or_, ow) = os.pipe()
         (er, ew) = os.pipe()
         self.p = subprocess.Popen(
            cmd, stdin=ir if stdin else subprocess.DEVNULL, stdout=ow,
            stderr=ew, start_new_session=True)
         for fd in (ir, ow, ew):
            if (fd is not None):
               os.close(fd)
         (self.stdin, self.stdout, self.stderr) = (iw, or_, er)
      self.sizes = []

   def close(self):
      if (self.p.poll() is None):
         try:
            os.killpg(self.p.pid, signal.SIGKILL)
         except ProcessLookupError:
            pass
      self.p.wait()

   def resize(self, width, height):
      self.sizes.append((width, height))
      if (self.master is not None):
         fcntl.ioctl(self.master, termios.TIOCSWINSZ,
                     struct.pack("HHHH", height, width, 0, 0))

   def wait(self):
      return self.p.wait()


class Attach_Proc:
   "An attachment to the fake container: dups of its stdio."

   def __init__(self, ctr, stdin):
      self.ctr = ctr
      self.stdin = os.dup(ctr.stdin_w) if stdin else None
      self.stdout = os.dup(ctr.stdout_r)
      self.stderr = None
      self.detached = threading.Event()

   def close(self):
      self.detached.set()

   def resize(self, width, height):
      pass

   def wait(self):
      while (not self.detached.wait(0.1)):
         if (self.ctr.p.poll() is not None):
            return self.ctr.p.returncode
      return -1


class Container:
   "A long-running host process standing in for a container."

   def __init__(self):
      (ir, self.stdin_w) = os.pipe()
      (self.stdout_r, ow) = os.pipe()
      self.p = subprocess.Popen(ATTACH_CMD, stdin=ir, stdout=ow,
                                stderr=subprocess.STDOUT,
                                start_new_session=True)
      os.close(ir)
      os.close(ow)

   def stop(self):
      if (self.p.poll() is None):
         self.p.kill()
      self.p.wait()
      for fd in (self.stdin_w, self.stdout_r):
         os.close(fd)


class Fake_Backend:
   """Exec runs host commands; attach attaches to one Container; port
      forwarding connects to 127.0.0.1:port. procs records what was
      started; fail makes the next start raise Stream_Error."""

   def __init__(self):
      self.procs = []
      self.ctr = None
      self.fail = None
      self.lock = threading.Lock()

   def attach_start(self, container_id, tty, stdin):
      self.check(container_id)
      if (self.ctr is None or self.ctr.p.poll() is not None):
         self.ctr = Container()
      p = Attach_Proc(self.ctr, stdin)
      self.procs.append(p)
      return p

   def check(self, id_):
      if (self.fail):
         (msg, self.fail) = (self.fail, None)
         raise streaming.Stream_Error(msg)
      if (id_ not in (CTR, POD)):
         raise streaming.Stream_Error("no such container: %s" % id_)

   def exec_start(self, container_id, cmd, tty, stdin):
      self.check(container_id)
      p = Exec_Proc(cmd, tty, stdin)
      with self.lock:
         self.procs.append(p)
      return p

   def port_forward(self, pod_sandbox_id, port):
      self.check(pod_sandbox_id)
      try:
         return socket.create_connection(("127.0.0.1", port), timeout=5)
      except OSError as x:
         raise streaming.Stream_Error("connect to port %d: %s"
                                      % (port, x.strerror))

   def stop(self):
      if (self.ctr is not None):
         self.ctr.stop()


class Runtime(pb_grpc.RuntimeServiceServicer):
   "The RuntimeService calls crictl needs for streaming."

   def __init__(self, streamer):
      self.streamer = streamer

   def Attach(self, request, context):
      return pb.AttachResponse(url=self.streamer.attach_url(request))

   def ContainerStatus(self, request, context):
      return pb.ContainerStatusResponse(status=pb.ContainerStatus(
         id=request.container_id, state=pb.CONTAINER_RUNNING,
         metadata=pb.ContainerMetadata(name="c"),
         image=pb.ImageSpec(image="img"), image_ref="img"))

   def Exec(self, request, context):
      return pb.ExecResponse(url=self.streamer.exec_url(request))

   def PodSandboxStatus(self, request, context):
      return pb.PodSandboxStatusResponse(status=pb.PodSandboxStatus(
         id=request.pod_sandbox_id, state=pb.SANDBOX_READY,
         metadata=pb.PodSandboxMetadata(name="p", uid="u", namespace="n")))

   def PortForward(self, request, context):
      return pb.PortForwardResponse(url=self.streamer.portforward_url(request))

   def Version(self, request, context):
      return pb.VersionResponse(version="0.1.0", runtime_name="fake",
                                runtime_version="0", runtime_api_version="v1")


class Images(pb_grpc.ImageServiceServicer):

   def ImageFsInfo(self, request, context):
      return pb.ImageFsInfoResponse()

   def ListImages(self, request, context):
      return pb.ListImagesResponse()


class Cri_Server:
   "A gRPC server on a unix socket in dir_ over streamer."

   def __init__(self, dir_, streamer):
      self.server = grpc.server(
         concurrent.futures.ThreadPoolExecutor(max_workers=8))
      pb_grpc.add_RuntimeServiceServicer_to_server(Runtime(streamer),
                                                   self.server)
      pb_grpc.add_ImageServiceServicer_to_server(Images(), self.server)
      self.socket = os.path.join(dir_, "cri.sock")
      assert self.server.add_insecure_port("unix://" + self.socket) != 0
      self.server.start()

   def stop(self):
      self.server.stop(None).wait()
