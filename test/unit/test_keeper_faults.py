# Faults between ch-cri and a pod's keeper, injected with fake keepers
# (unix sockets the test controls, their "PID" a sleep process): a busy
# keeper is never taken for a dead one, a dead one is recorded once, and
# a keeper that answers nonsense gets a clean error. Helpers here serve
# other tests too (fake pods and containers).

import os
import secrets
import selectors
import socket
import subprocess
import threading
import time

import grpc
import pytest

import cri.container
import cri.errors as err
import cri.keeper.client as kc
import cri.monitor
import cri.sandbox
import cri.store
import fake_charlie
import fsutil
from cri.keeper.proc import proc_start

from cri_api.v1 import api_pb2 as pb

from conftest import RPC_TIMEOUT


## Constants ##

# Longest a test waits for the monitor thread to act before failing.
WAIT = 10
BUSYBOX = fake_charlie.config_bytes(salt="busybox")
REGISTRY = { "registry-1.docker.io/library/busybox:latest": BUSYBOX }


## Functions ##

def ctr_fake(store, pod, running=True):
   """Put a container of pod into store, running (as its keeper would have
      recorded) with no process of its own to kill."""
   id_ = secrets.token_hex(32)
   config = pb.ContainerConfig(metadata=pb.ContainerMetadata(name="c"),
                               image=pb.ImageSpec(image="busybox"))
   spec = { "log": "", "uid": 0, "gid": 0, "stop_signal": 15, "env": [],
            "cwd": "/", "security": None }
   c = cri.container.Container(store, id_, pod.id_, config, time.time_ns(),
                               fake_charlie.id_of(BUSYBOX), spec)
   fsutil.mkdirs(c.dir_)
   status = { "started_at": time.time_ns(), "pid": None } if running else {}
   fsutil.json_write_atomic(os.path.join(c.dir_, "status.json"), status)
   c.status_reload()
   with store.lock:
      store.containers[id_] = c
   return c


def events_of(q):
   "Return the (kind, object ID) of the events queued on q so far."
   out = []
   while not q.empty():
      ev = q.get_nowait()
      out.append((ev.kind, ev.ctr_id or ev.pod_id))
   return out


def gone_count(store, monkeypatch):
   "Return a list that gets the pod ID of every store.keeper_gone call."
   calls = []
   real = store.keeper_gone
   def counting(pod):
      calls.append(pod.id_)
      real(pod)
   monkeypatch.setattr(store, "keeper_gone", counting)
   return calls


def pod_fake(store, pid, config=None):
   """Put a pod into store whose keeper is process pid (READY while it
      lives); return it."""
   id_ = secrets.token_hex(32)
   if (config is None):
      config = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(
         name="p", namespace="ns", uid=id_))
   pod = cri.sandbox.Pod(store, id_, config, time.time_ns(), "")
   fsutil.mkdirs(pod.dir_)
   fsutil.json_write_atomic(os.path.join(pod.dir_, "keeper.json"),
                            { "pid": pid, "pid_start": proc_start(pid) })
   assert pod.keeper_alive_p()
   with store.lock:
      store.pods[id_] = pod
   return pod


def wait_until(pred, what):
   "Wait until pred() is true, at most WAIT seconds; fail if it stays false."
   deadline = time.monotonic() + WAIT
   while not pred():
      assert time.monotonic() < deadline, "timed out: %s" % what
      time.sleep(0.01)


## Classes ##

class Fake_Keeper:
   """A keeper's listening socket at path, under the test's control:
      full() fills its listen backlog (a keeper too busy to accept);
      serve(reply) accepts, and answers each request line with
      reply(request) (bytes; None to keep the connection open without
      answering). requests gets each request's op."""

   def __init__(self, path, backlog=0):
      self.path = path
      self.ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
      self.ls.bind(path)
      self.ls.listen(backlog)
      self.clients = []
      self.conns = []
      self.requests = []
      self.accepted = 0
      self.ended = 0
      self.lock = threading.Lock()   # guards the lists and counts

   def full(self):
      "Fill the listen backlog, as callers of a busy keeper would."
      while True:
         c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
         c.setblocking(False)
         try:
            c.connect(self.path)
         except BlockingIOError:
            c.close()
            break
         self.clients.append(c)
      assert self.clients

   def serve(self, reply):
      self.reply = reply
      threading.Thread(target=self.accept_loop, daemon=True).start()

   def accept_loop(self):
      while True:
         try:
            (s, _) = self.ls.accept()
         except OSError:
            return
         with self.lock:
            self.conns.append(s)
            self.accepted += 1
         threading.Thread(target=self.conn_loop, args=(s,),
                          daemon=True).start()

   def conn_loop(self, s):
      buf = b""
      while True:
         try:
            data = s.recv(65536)
         except OSError:
            return
         if (not data):
            with self.lock:
               self.ended += 1
            return
         buf += data
         while b"\n" in buf:
            (line, buf) = buf.split(b"\n", 1)
            req = line.decode("utf-8", "replace")
            with self.lock:
               self.requests.append(req)
            res = self.reply(req)
            if (res is not None):
               try:
                  s.sendall(res)
               except OSError:
                  return

   def ct(self, text):
      "Return how many requests so far contain text."
      with self.lock:
         return sum(1 for r in self.requests if text in r)

   def conns_close(self):
      "Close every accepted connection (the keeper drops them)."
      with self.lock:
         conns = list(self.conns)
         self.conns = []
      for s in conns:
         s.shutdown(socket.SHUT_RDWR)
         s.close()

   def close(self):
      "Stop listening (the socket file stays, as a dead keeper's does)."
      for c in self.clients:
         c.close()
      try:
         # Wakes the accepting thread; a close alone would leave its
         # accept() listening.
         self.ls.shutdown(socket.SHUT_RDWR)
      except OSError:
         pass
      self.ls.close()
      self.conns_close()


class Watched_Selector(selectors.DefaultSelector):
   "A selector that records which thread registers and unregisters."

   def __init__(self):
      super().__init__()
      self.threads = []

   def register(self, fileobj, events, data=None):
      self.threads.append(threading.current_thread().name)
      return super().register(fileobj, events, data)

   def unregister(self, fileobj):
      self.threads.append(threading.current_thread().name)
      return super().unregister(fileobj)


## Fixtures ##

@pytest.fixture
def keeper_proc():
   "A process standing in for a keeper's PID; killed and reaped at the end."
   p = subprocess.Popen(["sleep", "600"])
   yield p
   p.kill()
   p.wait()


@pytest.fixture
def quick(monkeypatch):
   "Shorten the wait for a busy keeper's backlog, so tests run fast."
   monkeypatch.setattr(kc, "CONNECT_WAIT", 0.2, raising=False)


## Tests ##

def test_busy_keeper_not_killed(serve, keeper_proc, quick, monkeypatch):
   """A keeper whose listen backlog is full, its PID alive, is busy: calls
      fail with UNAVAILABLE and nothing is killed or recorded as exited.
      Once its PID is gone, it is dead: recorded once."""
   s = serve(registry=REGISTRY)
   store = s.state_store
   pod = pod_fake(store, keeper_proc.pid)
   c = ctr_fake(store, pod)
   k = Fake_Keeper(pod.sock)
   k.full()
   gone = gone_count(store, monkeypatch)
   q = store.events.subscribe(8)
   rt = s.runtime
   for (m, req) in (
         ("StopContainer", pb.StopContainerRequest(container_id=c.id_)),
         ("StopContainer", pb.StopContainerRequest(container_id=c.id_,
                                                   timeout=5)),
         ("RemoveContainer", pb.RemoveContainerRequest(container_id=c.id_)),
         ("ExecSync", pb.ExecSyncRequest(container_id=c.id_, cmd=["true"])),
         ("ReopenContainerLog",
          pb.ReopenContainerLogRequest(container_id=c.id_)),
         ("StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=pod.id_)),
         ("RemovePodSandbox",
          pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id_))):
      with pytest.raises(grpc.RpcError) as x:
         getattr(rt, m)(req, timeout=RPC_TIMEOUT)
      assert x.value.code() == grpc.StatusCode.UNAVAILABLE, \
             (m, x.value.details())
      assert "busy" in x.value.details(), (m, x.value.details())
   assert gone == []
   assert events_of(q) == []
   st = rt.ContainerStatus(pb.ContainerStatusRequest(container_id=c.id_),
                           timeout=RPC_TIMEOUT).status
   assert st.state == pb.ContainerState.CONTAINER_RUNNING
   ps = rt.PodSandboxStatus(pb.PodSandboxStatusRequest(
      pod_sandbox_id=pod.id_), timeout=RPC_TIMEOUT).status
   assert ps.state == pb.PodSandboxState.SANDBOX_READY
   # Now it dies: its socket stays, nobody listens.
   keeper_proc.kill()
   keeper_proc.wait()
   k.close()
   rt.StopContainer(pb.StopContainerRequest(container_id=c.id_),
                    timeout=RPC_TIMEOUT)
   assert gone == [pod.id_]
   st = rt.ContainerStatus(pb.ContainerStatusRequest(container_id=c.id_),
                           timeout=RPC_TIMEOUT).status
   assert st.state == pb.ContainerState.CONTAINER_EXITED
   assert "died" in st.message
   rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id_),
                       timeout=RPC_TIMEOUT)
   assert [e for e in events_of(q) if e[1] == c.id_] \
          == [("stopped", c.id_), ("deleted", c.id_)]


def test_keeper_fail_decides_by_pid(root, keeper_proc, quick, monkeypatch):
   """keeper_fail: a keeper that takes the call and does not answer in
      time is busy (DEADLINE_EXCEEDED); one that refuses is the caller's
      business; one whose connection breaks is dead only if its PID is
      gone."""
   store = cri.store.Store(os.path.join(root, "state"))
   pod = pod_fake(store, keeper_proc.pid)
   gone = gone_count(store, monkeypatch)
   k = Fake_Keeper(pod.sock, backlog=8)
   k.serve(lambda req: (b'{"ok": false, "error": "no"}\n' if "refuse" in req
                        else None))
   with pytest.raises(kc.Keeper_Error) as x:
      kc.Keeper_Client(pod.sock).request("silent", limit=0.3)
   assert x.value.timeout_p
   with pytest.raises(err.Deadline_Exceeded):
      store.keeper_fail(pod, x.value)
   with pytest.raises(kc.Keeper_Error) as x:
      kc.Keeper_Client(pod.sock).request("refuse")
   assert x.value.refused_p and str(x.value) == "no"
   assert store.keeper_fail(pod, x.value) is False
   k.close()
   with pytest.raises(kc.Keeper_Error) as x:
      kc.Keeper_Client(pod.sock).hello()
   assert not (x.value.refused_p or x.value.timeout_p)
   monkeypatch.setattr(cri.store, "DEATH_WAIT", 0.05)
   with pytest.raises(err.Unavailable):
      store.keeper_fail(pod, x.value)
   assert gone == []
   keeper_proc.kill()
   keeper_proc.wait()
   assert store.keeper_fail(pod, x.value) is True
   assert gone == [pod.id_]
   assert not pod.alive


def test_follow_busy_keeper_retried(root, keeper_proc, quick, monkeypatch):
   """Events from a busy keeper (backlog full) are asked for again later,
      not taken for its death; so is a stream it closes while it lives.
      Once its PID is gone it is recorded dead, once."""
   store = cri.store.Store(os.path.join(root, "state"))
   monitor = cri.monitor.Monitor(store)
   pod = pod_fake(store, keeper_proc.pid)
   gone = gone_count(store, monkeypatch)
   k = Fake_Keeper(pod.sock)
   k.full()
   monitor.follow(pod)
   assert gone == []
   monitor.start()
   try:
      k.serve(lambda req: b'{"ok": true, "containers": {}}\n'
                          if "events" in req else None)
      wait_until(lambda: k.ct("events") >= 1, "events asked again")
      time.sleep(0.1)
      assert gone == []
      k.conns_close()   # the stream ends; the keeper lives
      wait_until(lambda: k.ct("events") >= 2, "events asked once more")
      assert gone == []
      keeper_proc.kill()
      keeper_proc.wait()
      k.close()
      wait_until(lambda: gone, "keeper recorded dead")
      time.sleep(0.2)
      assert gone == [pod.id_]
      assert not pod.alive
   finally:
      monitor.stop()


def test_keeper_gone_once(root, keeper_proc, monkeypatch):
   """keeper_gone from two threads at once (an event stream's end and an
      RPC) records each container's exit, and says so, once."""
   store = cri.store.Store(os.path.join(root, "state"))
   pod = pod_fake(store, keeper_proc.pid)
   c = ctr_fake(store, pod)
   q = store.events.subscribe(8)
   both = threading.Barrier(2)
   real = c.status_reload
   def reload_together():
      # Both threads reach here before either goes on (if both may).
      try:
         both.wait(timeout=1)
      except threading.BrokenBarrierError:
         pass
      real()
   monkeypatch.setattr(c, "status_reload", reload_together)
   ts = [threading.Thread(target=store.keeper_gone, args=(pod,))
         for _ in range(2)]
   for t in ts:
      t.start()
   for t in ts:
      t.join()
   assert events_of(q) == [("stopped", c.id_)]
   assert c.status.get("finished_at")


def test_follow_registers_in_monitor(root, keeper_proc):
   """Only the monitor thread touches its selector: follow() from another
      thread hands the stream over rather than registering it mid-select."""
   store = cri.store.Store(os.path.join(root, "state"))
   monitor = cri.monitor.Monitor(store)
   monitor.sel = Watched_Selector()
   monitor.sel.register(monitor.wake_r, selectors.EVENT_READ, None)
   monitor.sel.threads = []
   pod = pod_fake(store, keeper_proc.pid)
   k = Fake_Keeper(pod.sock, backlog=8)
   k.serve(lambda req: b'{"ok": true, "containers": {}}\n'
                       if "events" in req else None)
   monitor.start()
   try:
      time.sleep(0.05)   # the monitor is in select() (not needed to fail)
      monitor.follow(pod)
      wait_until(lambda: len(monitor.sel.get_map()) == 2,
                 "stream registered")
      assert monitor.sel.threads == ["keeper-events"]
   finally:
      monitor.stop()
      k.close()


@pytest.mark.parametrize("reply", [b"not json\n", b"[1, 2]\n", b'"ok"\n',
                                   b"\xff\xfe\n", b"null\n",
                                   b'{"ok": true, "containers": [1]}\n'])
def test_malformed_reply(root, reply):
   """A reply that is no JSON object (or, for events, has no statuses) is
      a clean Keeper_Error saying so (the keeper answered: it is no dead
      keeper), and the connection is closed."""
   path = os.path.join(root, "k")
   k = Fake_Keeper(path, backlog=8)
   k.serve(lambda req: reply)
   keeper = kc.Keeper_Client(path)
   fs = [(keeper.events, ())]
   if (b"containers" not in reply):
      fs += [(keeper.hello, ()), (keeper.attach, ("x", False))]
   try:
      for (f, args) in fs:
         with pytest.raises(kc.Keeper_Error) as x:
            f(*args)
         assert x.value.refused_p, (f, x.value)
         assert "malformed" in str(x.value), (f, x.value)
         # x holds the call's frames: only an explicit close ends it.
         wait_until(lambda: k.ended == k.accepted, "%s closes" % f.__name__)
   finally:
      k.close()
