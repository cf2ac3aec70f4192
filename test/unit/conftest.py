# pytest set-up for ch-cri's unit tests: puts lib/ on the path and serves
# the CRI in-process on a temporary unix socket over the fake adapter.

import concurrent.futures
import os
import sys
import tempfile
import threading

import pytest

# Quiet gRPC core's informational lines (e.g. GOAWAY at server stop).
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.normpath(os.path.join(HERE, "..", "..", "lib")))
sys.path.insert(0, HERE)

import grpc  # noqa: E402
import cri.cgroups  # noqa: E402
import cri.config  # noqa: E402
import cri.server  # noqa: E402
import fake_charlie  # noqa: E402
import fsutil  # noqa: E402

from cri_api.v1 import api_pb2_grpc as pb_grpc  # noqa: E402


## Constants ##

# Seconds any one RPC may take before the test fails rather than hangs.
RPC_TIMEOUT = 20
RUNTIME_VERSION = "1.2.3-unit"
WORKERS = 16


## Classes ##

class Call_Counter(grpc.ServerInterceptor):
   "Count the RPCs the server has begun to handle, by method name."

   def __init__(self):
      self.lock = threading.Lock()
      self.counts = dict()

   def ct(self, method):
      with self.lock:
         return self.counts.get(method, 0)

   def intercept_service(self, continuation, details):
      name = details.method.rsplit("/", 1)[-1]
      with self.lock:
         self.counts[name] = self.counts.get(name, 0) + 1
      return continuation(details)


class Served:
   """A ch-cri gRPC server in this process over root (storage and state
      directories beneath it) and a client connected to it. images and
      runtime are the stubs; store and ch the objects behind them."""

   def __init__(self, root, registry=None, table=None, pinned=(),
                cgroup_driver="cgroupfs", ch=None, n=0, stores=()):
      self.root = root
      self.storage = os.path.join(root, "storage")
      self.state = fsutil.mkdirs(os.path.join(root, "state"))
      self.ch = ch or fake_charlie.Fake_Charlie(self.storage, registry)
      cfg = cri.config.defaults()
      cfg.update(state_dir=self.state, storage_dir=self.storage,
                 registry=table or {}, pinned_images=list(pinned),
                 cgroup_driver=cgroup_driver, config=None,
                 image_stores=list(stores))
      # No pod network (loopback only) and no cgroups: CNI and cgroup
      # directories that do not exist, so the host's stay untouched.
      cfg["network"].update(cni_conf_dir=os.path.join(root, "cni-none"),
                            cni_bin_dirs=[os.path.join(root, "cni-none")])
      cg = cri.cgroups.Cgroups(root=os.path.join(root, "cgroup-none"),
                               driver=cgroup_driver)
      # Pods and containers over real state and real keepers; the fake
      # adapter's containers are sleepers (see fake_charlie).
      self.parts = cri.server.build(cfg, RUNTIME_VERSION, sys.executable,
                                    ch=self.ch, cg=cg,
                                    info={ "unit": True, "root": root })
      self.store = self.parts.images
      self.state_store = self.parts.state
      self.monitor = self.parts.monitor
      self.pods = self.parts.pods
      self.ctrs = self.parts.ctrs
      self.calls = Call_Counter()
      self.server = grpc.server(
         concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS),
         interceptors=[self.calls] + self.parts.interceptors)
      pb_grpc.add_RuntimeServiceServicer_to_server(self.parts.runtime,
                                                   self.server)
      pb_grpc.add_ImageServiceServicer_to_server(self.parts.image,
                                                 self.server)
      self.socket = os.path.join(root, "cri-%d.sock" % n)
      assert self.server.add_insecure_port("unix://" + self.socket) != 0
      self.server.start()
      self.channel = grpc.insecure_channel("unix://" + self.socket)
      grpc.channel_ready_future(self.channel).result(timeout=RPC_TIMEOUT)
      self.images = pb_grpc.ImageServiceStub(self.channel)
      self.runtime = pb_grpc.RuntimeServiceStub(self.channel)

   def stop(self):
      # Server first: closing a channel to a live server takes 0.2 s.
      self.server.stop(None).wait()
      self.channel.close()
      self.parts.stop()


## Fixtures ##

@pytest.fixture
def root():
   "A fresh directory short enough to hold a unix socket."
   d = tempfile.mkdtemp(prefix="ch-cri-unit.", dir="/tmp")
   yield d
   fsutil.rmtree(d)


@pytest.fixture
def serve(root):
   """Return a function starting a Served over root (or another directory)
      with the given options; all are stopped at teardown."""
   servers = []
   def start(**kw):
      kw.setdefault("n", len(servers))
      s = Served(kw.pop("root", root), **kw)
      servers.append(s)
      return s
   yield start
   for s in servers:
      s.stop()
