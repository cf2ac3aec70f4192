# Starts that fail, against real keepers: a container start that fails
# leaves nothing open in the keeper (log, stdio pipes) and can be tried
# again; a pod whose keeper never comes up leaves no keeper behind.

import os
import time

import grpc
import pytest

import cri.keeper.client as kc
import cri.sandbox
import fake_charlie
import fsutil

from cri_api.v1 import api_pb2 as pb

from conftest import RPC_TIMEOUT


## Helpers ##

def fds_of(pid):
   "Return what pid's descriptors point at (sockets by kind only)."
   out = []
   for n in sorted(os.listdir("/proc/%d/fd" % pid), key=int):
      try:
         t = os.readlink("/proc/%d/fd/%s" % (pid, n))
      except OSError:
         continue
      out.append(t.split(":")[0] if t.startswith("socket:") else t)
   return sorted(out)


def serve_busybox(serve):
   "Return a served ch-cri (see conftest) with a busybox image pulled."
   s = serve(registry={ "registry-1.docker.io/library/busybox:latest":
                        fake_charlie.config_bytes(salt="busybox") })
   s.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(
      image="busybox")), timeout=RPC_TIMEOUT)
   return s


def pod_run(s, name):
   "Run pod name on served s; return (its ID, its config)."
   req = pb.RunPodSandboxRequest()
   (req.config.metadata.name, req.config.metadata.namespace,
    req.config.metadata.uid) = (name, "default", "u")
   return (s.runtime.RunPodSandbox(req, timeout=RPC_TIMEOUT).pod_sandbox_id,
           req.config)


def pod_remove(s, pod_id):
   "Stop and remove a pod: keepers outlive their ch-cri by design."
   s.runtime.StopPodSandbox(pb.StopPodSandboxRequest(
      pod_sandbox_id=pod_id), timeout=RPC_TIMEOUT)
   s.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(
      pod_sandbox_id=pod_id), timeout=RPC_TIMEOUT)


## Tests ##

def test_failed_start_leaks_nothing(serve, root):
   s = serve()
   (pod_id, config) = pod_run(s, "p")
   try:
      failed_starts(s, root, pod_id)
   finally:
      pod_remove(s, pod_id)


def failed_starts(s, root, pod_id):
   pod = s.pods.get(pod_id)
   client = kc.Keeper_Client(pod.sock)
   d = fsutil.mkdirs(os.path.join(root, "ctr"))
   rootfs = { k: fsutil.mkdirs(os.path.join(d, k))
              for k in ("lower", "upper", "work", "merged") }
   logs = fsutil.mkdirs(os.path.join(root, "logs"))
   # ch-cri's event stream from the keeper comes up on its own thread.
   deadline = time.monotonic() + 10
   while (fds_of(pod.keeper_pid).count("socket") < 2
          and time.monotonic() < deadline):
      time.sleep(0.01)
   before = fds_of(pod.keeper_pid)
   for i in range(5):
      with pytest.raises(kc.Keeper_Error) as ei:
         client.start("c1", d, ["/nonexistent/ch-run", "x"],
                      {"PATH": "/bin"}, rootfs=rootfs,
                      log=os.path.join(logs, "c1.log"), log_dir=logs,
                      stdin=bool(i % 2), tty=i == 4)
      assert "/nonexistent/ch-run" in str(ei.value)
   # The keeper closes each finished connection when it reads its end:
   # give it that moment.
   deadline = time.monotonic() + 5
   while (fds_of(pod.keeper_pid) != before and time.monotonic() < deadline):
      time.sleep(0.01)
   assert fds_of(pod.keeper_pid) == before
   assert "c1" not in client.hello()["containers"]
   # The same ID starts for real afterwards.
   res = client.start("c1", d, ["sleep", "30"], {"PATH": "/bin:/usr/bin"},
                      rootfs=rootfs, log=os.path.join(logs, "c1.log"),
                      log_dir=logs)
   assert res["status"]["pid"] > 0
   client.signal("c1", 9, all_=True)
   assert client.wait("c1", 10)["exited"]


def test_pod_start_timeout_leaves_no_keeper(serve, root, monkeypatch):
   """A keeper that never says it is ready: RunPodSandbox fails, and the
      process is gone, not left to come up with nobody to stop it."""
   s = serve()
   hang = os.path.join(root, "hang-python")
   with open(hang, "w") as fp:
      fp.write("#!/bin/sh\nsleep 600\n")   # no exec: keeps its argv
   os.chmod(hang, 0o755)
   monkeypatch.setattr(s.pods, "python", hang)
   monkeypatch.setattr(cri.sandbox, "KEEPER_START_TIMEOUT", 1)
   req = pb.RunPodSandboxRequest()
   (req.config.metadata.name, req.config.metadata.namespace,
    req.config.metadata.uid) = ("hung", "default", "u")
   with pytest.raises(grpc.RpcError) as ei:
      s.runtime.RunPodSandbox(req, timeout=RPC_TIMEOUT)
   assert ei.value.code() == grpc.StatusCode.INTERNAL
   assert "did not start in 1s (1 process killed)" in ei.value.details()
   deadline = time.monotonic() + 5
   while (time.monotonic() < deadline and keepers_hung(hang)):
      time.sleep(0.05)
   assert not keepers_hung(hang)
   assert not s.runtime.ListPodSandbox(pb.ListPodSandboxRequest(),
                                       timeout=RPC_TIMEOUT).items


def keepers_hung(hang):
   "Return the PIDs of live (not zombie) processes running hang."
   out = []
   for name in os.listdir("/proc"):
      try:
         with open("/proc/%s/cmdline" % name, "rb") as fp:
            argv = fp.read()
         with open("/proc/%s/stat" % name) as fp:
            state = fp.read().rsplit(")", 1)[1].split()[0]
      except (OSError, IndexError):
         continue
      if (hang.encode() in argv and state != "Z"):
         out.append(int(name))
   return out


def test_cgroup_failure_closes_mount_trees(serve, root):
   """Copies of host mount trees (open_tree, as root) made for a start
      are closed when the start fails later, at its cgroups."""
   if (os.geteuid() != 0):
      pytest.skip("copies of mount trees need root")
   import cri.cgroups
   s = serve_busybox(serve)
   class Failing:
      usable = True
      def create(self, key, resources, devices=None):
         raise cri.cgroups.Cgroup_Error("can't make cgroup: test")
      def dir_(self, controller, key):
         return os.path.join(root, "no-cgroup", key)
      def remove(self, key):
         pass
   s.ctrs.cg = Failing()
   (pod_id, config) = pod_run(s, "cg")
   try:
      host = fsutil.mkdirs(os.path.join(root, "host"))
      cc = pb.ContainerConfig(command=["sleep", "30"])
      cc.metadata.name = "c"
      cc.image.image = "busybox"
      cc.mounts.add(container_path="/data", host_path=host)
      cid = s.runtime.CreateContainer(pb.CreateContainerRequest(
         pod_sandbox_id=pod_id, config=cc, sandbox_config=config),
         timeout=RPC_TIMEOUT).container_id
      before = len(os.listdir("/proc/self/fd"))
      for _ in range(5):
         with pytest.raises(grpc.RpcError) as ei:
            s.runtime.StartContainer(pb.StartContainerRequest(
               container_id=cid), timeout=RPC_TIMEOUT)
         assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
         assert "can't make cgroup" in ei.value.details()
      assert len(os.listdir("/proc/self/fd")) == before
   finally:
      pod_remove(s, pod_id)


def test_stopped_keeper_full_backlog_kills_nothing(serve, root, monkeypatch):
   """A real pod's keeper SIGSTOPped with its listen backlog full while
      100 calls hit the pod at once (ExecSync, ContainerStatus,
      StopContainer): each gets a clean status, and after SIGCONT every
      container still runs, none recorded as exited."""
   import concurrent.futures
   import signal
   import socket
   monkeypatch.setattr(kc, "CONNECT_WAIT", 1)
   s = serve_busybox(serve)
   (pod_id, config) = pod_run(s, "stop")
   pod = s.pods.get(pod_id)
   held = []
   try:
      ctrs = []
      for name in ("a", "b"):
         cc = pb.ContainerConfig(command=["sleep", "300"])
         cc.metadata.name = name
         cc.image.image = "busybox"
         cid = s.runtime.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=pod_id, config=cc, sandbox_config=config),
            timeout=RPC_TIMEOUT).container_id
         s.runtime.StartContainer(pb.StartContainerRequest(
            container_id=cid), timeout=RPC_TIMEOUT)
         ctrs.append(cid)
      pids = [s.ctrs.get(c).status["pid"] for c in ctrs]
      os.kill(pod.keeper_pid, signal.SIGSTOP)
      try:
         # Fill its listen backlog: connections nobody accepts.
         for _ in range(1000):
            x = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            x.setblocking(False)
            try:
               x.connect(pod.sock)
            except (BlockingIOError, InterruptedError):
               x.close()
               break
            held.append(x)
         calls = []
         for i in range(100):
            c = ctrs[i % 2]
            calls.append([
               lambda c=c: s.runtime.ExecSync(pb.ExecSyncRequest(
                  container_id=c, cmd=["true"], timeout=2), timeout=60),
               lambda c=c: s.runtime.ContainerStatus(
                  pb.ContainerStatusRequest(container_id=c), timeout=60),
               lambda c=c: s.runtime.StopContainer(pb.StopContainerRequest(
                  container_id=c, timeout=1), timeout=60)][i % 3])
         def one(f):
            try:
               f()
               return "OK"
            except grpc.RpcError as x:
               return x.code().name
         with concurrent.futures.ThreadPoolExecutor(16) as ex:
            codes = list(ex.map(one, calls))
      finally:
         os.kill(pod.keeper_pid, signal.SIGCONT)
         for x in held:
            x.close()
      assert set(codes) <= {"OK", "UNAVAILABLE", "DEADLINE_EXCEEDED"}, codes
      assert "UNAVAILABLE" in codes or "DEADLINE_EXCEEDED" in codes
      for (c, pid) in zip(ctrs, pids):
         st = s.runtime.ContainerStatus(pb.ContainerStatusRequest(
            container_id=c), timeout=RPC_TIMEOUT).status
         assert st.state == pb.ContainerState.CONTAINER_RUNNING, c
         assert st.finished_at == 0
         os.kill(pid, 0)        # still there
   finally:
      pod_remove(s, pod_id)
