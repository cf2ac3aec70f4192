# Unit tests of the Prometheus metrics (lib/cri/metrics.py): the state
# collector and the pull counters in-process, and a real ch-cri serving
# --metrics, scraped over HTTP.

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

import grpc
import pytest
from prometheus_client import parser

import cri.config as config
import cri.metrics as metrics

from cri_api.v1 import api_pb2 as pb
from cri_api.v1 import api_pb2_grpc as pb_grpc

import fake_charlie
from conftest import RPC_TIMEOUT


## Constants ##

HERE = os.path.dirname(os.path.abspath(__file__))
CH_CRI = os.path.normpath(os.path.join(HERE, "..", "..", "bin", "ch-cri"))
REGISTRY = { "registry-1.docker.io/library/busybox:latest":
             fake_charlie.config_bytes(salt="metrics") }
# Seconds a real ch-cri may take to start or stop on a busy machine.
SERVER_WAIT = 60


## Functions ##

def free_port():
   "Return a TCP port on 127.0.0.1 that nothing listens on just now."
   with socket.socket() as s:
      s.bind(("127.0.0.1", 0))
      return s.getsockname()[1]


def collected(state):
   """Return {(name, labels as sorted tuple): value} of one collection of
      a State_Collector over state."""
   out = dict()
   for fam in metrics.State_Collector(state).collect():
      for s in fam.samples:
         out[(s.name, tuple(sorted(s.labels.items())))] = s.value
   return out


def pod_config(root, name):
   c = pb.PodSandboxConfig(log_directory=os.path.join(root, "logs", name))
   c.metadata.name = name
   c.metadata.namespace = "ns"
   c.metadata.uid = "uid-" + name
   c.linux.security_context.namespace_options.network = pb.NamespaceMode.NODE
   return c


def samples(text):
   "Return {(name, labels as sorted tuple): value} of an exposition."
   return { (s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in parser.text_string_to_metric_families(text)
            for s in fam.samples }


def value(name, **labels):
   return metrics.REGISTRY.get_sample_value(name, labels) or 0


def wait_for(pred, what, limit=RPC_TIMEOUT):
   end = time.monotonic() + limit
   while (not pred()):
      assert time.monotonic() < end, "timed out waiting for %s" % what
      time.sleep(0.05)


## Fixtures ##

@pytest.fixture
def live(root):
   """Start bin/ch-cri with --metrics on a free port over root; yield
      (RuntimeService stub, metrics URL, log path); stop it at teardown."""
   if (shutil.which("ch-run") is None or not os.access(CH_CRI, os.X_OK)):
      what = "ch-run (Charliecloud) and a built bin/ch-cri (make)"
      if (os.environ.get("CI")):
         pytest.fail("prerequisite missing in CI: %s" % what)
      pytest.skip("prerequisite missing: %s" % what)
   port = free_port()
   sock = os.path.join(root, "s.sock")
   log = os.path.join(root, "log")
   with open(log, "wb") as fp:
      p = subprocess.Popen(
         [CH_CRI, "serve", "--socket", sock,
          "--state-dir", os.path.join(root, "state"),
          "--storage", os.path.join(root, "storage"),
          "--metrics", "127.0.0.1:%d" % port],
         stdin=subprocess.DEVNULL, stdout=fp, stderr=subprocess.STDOUT,
         start_new_session=True)
   ch = None
   try:
      def serving_p():
         assert p.poll() is None, "ch-cri exited:\n" + open(log).read()
         return "serving on %s" % sock in open(log).read()
      wait_for(serving_p, "ch-cri to serve", SERVER_WAIT)
      ch = grpc.insecure_channel("unix://" + sock)
      yield (ch, "http://127.0.0.1:%d/metrics" % port, log)
   finally:
      if (ch is not None):
         ch.close()
      p.send_signal(signal.SIGTERM)
      try:
         p.wait(SERVER_WAIT)
      except subprocess.TimeoutExpired:
         os.killpg(p.pid, signal.SIGKILL)
         p.wait()
         pytest.fail("ch-cri did not stop on SIGTERM")


## Tests ##

def test_config_key(tmp_path):
   assert config.defaults()["metrics"] is None
   path = tmp_path / "config.toml"
   for (text, want) in (('metrics = "127.0.0.1:9712"', "127.0.0.1:9712"),
                        ('metrics = ""', None)):
      path.write_text(text + "\n")
      assert config.load(str(path), True)["metrics"] == want
   for (text, msg) in (('metrics = 9712', "metrics: must be str"),
                       ('metrics = "host:9712"', "not ADDR:PORT"),
                       ('metrics = "127.0.0.1:70000"', "out of range")):
      path.write_text(text + "\n")
      with pytest.raises(config.Config_Error) as ei:
         config.load(str(path), True)
      assert msg in str(ei.value)


def test_option_refused():
   if (not os.access(CH_CRI, os.X_OK)):
      pytest.skip("bin/ch-cri not built (make)")
   cp = subprocess.run([CH_CRI, "--metrics", "localhost:1"],
                       capture_output=True, text=True, timeout=60)
   assert cp.returncode == 1
   assert "metrics: not ADDR:PORT" in cp.stderr


def test_live_rpc_metrics(live):
   (ch, url, log) = live
   assert "metrics on %s" % url in open(log).read()
   rt = pb_grpc.RuntimeServiceStub(ch)
   rt.Version(pb.VersionRequest(), timeout=RPC_TIMEOUT)
   rt.Version(pb.VersionRequest(), timeout=RPC_TIMEOUT)
   rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=RPC_TIMEOUT)
   with pytest.raises(grpc.RpcError) as ei:
      rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id="f" * 64),
                          timeout=RPC_TIMEOUT)
   assert ei.value.code() == grpc.StatusCode.NOT_FOUND
   # A request that is no valid message: refused by the request decoder,
   # which runs inside the metrics interceptor, so counted too.
   raw = ch.unary_unary("/runtime.v1.RuntimeService/PodSandboxStatus")
   with pytest.raises(grpc.RpcError) as ei:
      raw(b"\x0a\x02\xff\xfe", timeout=RPC_TIMEOUT)
   assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
   with urllib.request.urlopen(url, timeout=RPC_TIMEOUT) as r:
      assert r.status == 200
      text = r.read().decode()
   s = samples(text)
   def rpc(method, code):
      return s.get(("ch_cri_grpc_requests_total",
                    (("code", code), ("method", method))))
   assert rpc("Version", "OK") == 2
   assert rpc("ListPodSandbox", "OK") == 1
   assert rpc("PodSandboxStatus", "NOT_FOUND") == 1
   assert rpc("PodSandboxStatus", "INVALID_ARGUMENT") == 1
   assert rpc("PodSandboxStatus", "OK") is None
   assert s[("ch_cri_grpc_request_duration_seconds_count",
             (("code", "OK"), ("method", "Version")))] == 2
   assert s[("ch_cri_grpc_request_duration_seconds_bucket",
             (("code", "NOT_FOUND"), ("le", "+Inf"),
              ("method", "PodSandboxStatus")))] == 1
   assert s[("ch_cri_pods", (("state", "ready"),))] == 0
   assert s[("ch_cri_containers", (("state", "running"),))] == 0
   assert s[("ch_cri_keepers_alive", ())] == 0
   assert s[("ch_cri_streaming_sessions", (("kind", "exec"),))] == 0
   assert s[("process_open_fds", ())] > 0
   assert not [k for k in s if k[0].endswith("_created")]


def test_pull_metrics(serve):
   s = serve(registry=REGISTRY)
   (ok, err, size) = (value("ch_cri_image_pulls_total", result="ok"),
                      value("ch_cri_image_pulls_total", result="error"),
                      value("ch_cri_image_pull_bytes_total"))
   s.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(
      image="busybox")), timeout=RPC_TIMEOUT)
   with pytest.raises(grpc.RpcError):
      s.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(
         image="nosuch")), timeout=RPC_TIMEOUT)
   assert value("ch_cri_image_pulls_total", result="ok") == ok + 1
   assert value("ch_cri_image_pulls_total", result="error") == err + 1
   img = s.images.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(
      image="busybox")), timeout=RPC_TIMEOUT).image
   assert img.size > 0
   assert value("ch_cri_image_pull_bytes_total") == size + img.size
   assert value("ch_cri_image_pull_duration_seconds_count",
                result="ok") >= 1


def test_state_collector_and_keeper_deaths(serve, root):
   s = serve()
   st = s.state_store
   metrics.keeper_deaths_watch(st)
   try:
      c = collected(st)
      assert c[("ch_cri_pods", (("state", "ready"),))] == 0
      assert c[("ch_cri_keepers_alive", ())] == 0
      ids = [s.runtime.RunPodSandbox(
                pb.RunPodSandboxRequest(config=pod_config(root, n)),
                timeout=RPC_TIMEOUT).pod_sandbox_id for n in ("a", "b")]
      c = collected(st)
      assert c[("ch_cri_pods", (("state", "ready"),))] == 2
      assert c[("ch_cri_pods", (("state", "notready"),))] == 0
      assert c[("ch_cri_keepers_alive", ())] == 2
      assert c[("ch_cri_containers_oom_killed", ())] == 0
      # A keeper killed under its pod counts once; a pod stopped does not.
      deaths = value("ch_cri_keeper_deaths_total")
      pod = st.pods[ids[0]]
      os.kill(pod.keeper_pid, signal.SIGKILL)
      wait_for(lambda: not pod.alive, "the keeper's death to be seen")
      s.runtime.StopPodSandbox(pb.StopPodSandboxRequest(
         pod_sandbox_id=ids[0]), timeout=RPC_TIMEOUT)
      s.runtime.StopPodSandbox(pb.StopPodSandboxRequest(
         pod_sandbox_id=ids[1]), timeout=RPC_TIMEOUT)
      assert value("ch_cri_keeper_deaths_total") == deaths + 1
      c = collected(st)
      assert c[("ch_cri_pods", (("state", "ready"),))] == 0
      assert c[("ch_cri_pods", (("state", "notready"),))] == 2
      assert c[("ch_cri_keepers_alive", ())] == 0
      for i in ids:
         s.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(
            pod_sandbox_id=i), timeout=RPC_TIMEOUT)
   finally:
      s.monitor.stop()
