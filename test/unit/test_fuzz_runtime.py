# Fuzz every RPC of both services with random and malformed requests
# (property-based, with hypothesis; seeded): wrong and prefix IDs, huge
# strings, path tricks in names, log paths and mounts, invalid UTF-8,
# negative timeouts, duplicate names, and raw bytes that are no valid
# message at all; log paths out of the pod's log directory must be
# INVALID_ARGUMENT. Pods get real keepers (fake_charlie). The server must
# never answer INTERNAL or UNKNOWN, never hang, keep serving, and write
# nothing outside the directories a request names.

import os
import re
import signal
import subprocess
import time

import grpc
import hypothesis
import pytest
from hypothesis import strategies as hs

from cri_api.v1 import api_pb2 as pb
from cri_api.v1 import api_pb2_grpc as pb_grpc

import fake_charlie
import fsutil
from conftest import RPC_TIMEOUT


## Constants ##

SEED = 0xC4C22
# examples x requests per example = requests sent (10,000 by default)
EXAMPLE_CT = int(os.environ.get("CH_CRI_FUZZ_EXAMPLES", "400"))
REQUEST_PER_EXAMPLE = 25
PODS_MAX = 6           # live pods (each is a keeper process)
CTRS_MAX = 24
BUSYBOX = fake_charlie.config_bytes(salt="busybox")
REGISTRY = { "registry-1.docker.io/library/busybox:latest": BUSYBOX }
BAD_CODES = { grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN }
# Room for a slow shared machine; beyond it the server hangs.
CALL_TIMEOUT = 60

NAMES = ["a", "b", "c"]
TRICKS = ["", ".", "..", "../", "../../outside", "a/../../outside", "/",
          "//", "./x", "x/..", "~", "\x00", "a\x00b", "\n", "a\nb", "%s",
          "%n", "${HOME}", "$(id)", "`id`", "x" * 300, "x" * 100000,
          "\u202e", "\ufeff", "\U0001f600", "-", "--help", "*", "?",
          "CON", " ", "\t"]
TEXT = hs.one_of(hs.sampled_from(TRICKS), hs.text(max_size=30),
                 hs.text(alphabet="abc./-_", max_size=12))
U32 = hs.one_of(hs.sampled_from([0, 1, 2**31 - 1, 2**32 - 1]),
                hs.integers(0, 2**32 - 1))
I64 = hs.one_of(hs.sampled_from([0, -1, 1, -2**63, 2**63 - 1, 65534]),
                hs.integers(-2**63, 2**63 - 1))
DICT = hs.dictionaries(TEXT, TEXT, max_size=3)
# Log paths that are not below the pod's log directory (the CRI's
# log_path is relative to it); absolute ones are made under the test's
# root (see log_paths), named so that fuzz_check would find them written.
LOG_BAD = ["../outside.log", "../../outside/x.log", "a/../../outside.log",
           "..", "c/../../outside.log"]
SPLICE = b"\x01SPLICEHERE\x01"   # replaced by invalid UTF-8 in raw requests

RUNTIME_RPCS = [
   "Version", "RunPodSandbox", "StopPodSandbox", "RemovePodSandbox",
   "PodSandboxStatus", "ListPodSandbox", "CreateContainer", "StartContainer",
   "StopContainer", "RemoveContainer", "ListContainers", "ContainerStatus",
   "UpdateContainerResources", "ReopenContainerLog", "ExecSync", "Exec",
   "Attach", "PortForward", "ContainerStats", "ListContainerStats",
   "PodSandboxStats", "ListPodSandboxStats", "UpdateRuntimeConfig",
   "Status", "CheckpointContainer", "ListMetricDescriptors",
   "ListPodSandboxMetrics", "RuntimeConfig", "UpdatePodSandboxResources",
   "GetContainerEvents"]
IMAGE_RPCS = ["ListImages", "ImageStatus", "PullImage", "RemoveImage",
              "ImageFsInfo"]


## Functions ##

def id_pick(draw, live):
   """Draw an ID: a live one, a prefix of one, or junk. Every choice is
      drawn whatever live holds, so generation never depends on the
      server's state (hypothesis requires that)."""
   k = draw(hs.integers(0, 9))
   i = draw(hs.integers(0, 2**16))
   n = draw(hs.integers(0, 12))
   hex_ = "%064x" % draw(hs.integers(0, 2**256 - 1))
   junk = draw(TEXT)
   if (live and k < 7):
      return live[i % len(live)]
   if (live and k == 7):
      return live[i % len(live)][:n]
   return hex_ if k == 8 else junk


def log_path_bad_p(path):
   "Return True if log path path is absolute or has a \"..\"."
   return path.startswith("/") or ".." in path.split("/")


def log_paths(ctx, good):
   """Return log paths to draw from: good, those of LOG_BAD, and absolute
      ones under the test's root."""
   abs_ = os.path.join(ctx["logs"], "outside-abs.log")
   return good + LOG_BAD + [abs_, "/" + abs_]


def log_check(ctx, m, req, code, details):
   """Check the answer to a request whose log path climbs out of the pod's
      log directory: never OK; for a plausible config (see ctr_config) to
      a listed pod, INVALID_ARGUMENT naming config.log_path unless the pod
      is not ready (or gone since listed)."""
   if (m != "CreateContainer" or not log_path_bad_p(req.config.log_path)):
      return
   where = "%s(%s) -> %s: %s" % (m, str(req)[:400], code.name, details)
   assert code != grpc.StatusCode.OK, where
   plausible = (list(req.config.command) == ["sleep", "300"]
                and req.config.image.image == "busybox"
                and req.config.metadata.name
                and req.pod_sandbox_id in ctx["pods"])
   if (plausible):
      assert (code in (grpc.StatusCode.FAILED_PRECONDITION,
                       grpc.StatusCode.NOT_FOUND)
              or (code == grpc.StatusCode.INVALID_ARGUMENT
                  and details.startswith("config.log_path: "))), where
   if (code == grpc.StatusCode.INVALID_ARGUMENT
       and details.startswith("config.log_path: ")):
      ctx["log_refused"] += 1


def pod_config(draw, ctx):
   if (draw(hs.booleans())):   # plausible, so the fuzz gets past checks
      c = pb.PodSandboxConfig(log_directory=os.path.join(ctx["logs"], "p"))
      c.metadata.name = draw(hs.sampled_from(NAMES))
      c.metadata.namespace = "ns"
      c.metadata.uid = str(draw(hs.integers(0, 10**6)))
      c.labels.update(draw(DICT))
      if (draw(hs.booleans())):
         c.linux.security_context.namespace_options.network = \
            pb.NamespaceMode.NODE
      return c
   c = pb.PodSandboxConfig(hostname=draw(hs.sampled_from(["", "h", "\n",
                                                          "a" * 70])))
   c.metadata.name = draw(hs.one_of(hs.sampled_from(NAMES), TEXT))
   c.metadata.namespace = draw(hs.sampled_from(["ns", "", "../x"]))
   c.metadata.uid = draw(hs.one_of(hs.sampled_from(NAMES), TEXT))
   c.metadata.attempt = draw(hs.sampled_from([0, 1, 2**32 - 1]))
   k = draw(hs.integers(0, 5))
   if (k < 3):
      c.log_directory = os.path.join(ctx["logs"], draw(hs.sampled_from(
         ["p", "q", "p/deep/er", "sp ace"])))
   elif (k == 3):
      c.log_directory = draw(hs.sampled_from(["relative/dir", "logs", "."]))
   c.labels.update(draw(DICT))
   c.annotations.update(draw(DICT))
   if (draw(hs.booleans())):
      c.linux.security_context.namespace_options.network = \
         pb.NamespaceMode.NODE
   c.linux.security_context.namespace_options.ipc = draw(hs.sampled_from(
      [0, 0, 2, 1, 3]))
   if (draw(hs.integers(0, 4)) == 0):
      c.linux.sysctls.update(draw(hs.dictionaries(
         hs.sampled_from(["net.ipv4.ip_forward", "kernel.shm_rmid_forced",
                          "vm.swappiness", "../x", "kernel.hostname"]),
         TEXT, max_size=2)))
   if (draw(hs.integers(0, 4)) == 0):
      c.dns_config.servers.extend(draw(hs.lists(TEXT, max_size=2)))
      c.dns_config.options.extend(draw(hs.lists(TEXT, max_size=2)))
   c.port_mappings.add(container_port=draw(hs.integers(-5, 70000)),
                       host_port=draw(hs.integers(-5, 70000)))
   return c


def ctr_config(draw, ctx):
   if (draw(hs.booleans())):   # plausible
      c = pb.ContainerConfig(image=pb.ImageSpec(image="busybox"),
                             command=["sleep", "300"],
                             log_path=draw(hs.sampled_from(log_paths(
                                ctx, ["c.log", "c/0.log"] * 8))))
      c.metadata.name = draw(hs.one_of(hs.sampled_from(NAMES), TEXT))
      c.metadata.attempt = draw(hs.integers(0, 3))
      c.labels.update(draw(DICT))
      return c
   c = pb.ContainerConfig()
   c.metadata.name = draw(hs.one_of(hs.sampled_from(NAMES), TEXT))
   c.metadata.attempt = draw(hs.sampled_from([0, 1]))
   c.image.image = draw(hs.one_of(hs.just("busybox"), hs.just("busybox"),
                                  TEXT))
   c.command.extend(draw(hs.lists(TEXT, max_size=3)))
   c.args.extend(draw(hs.lists(TEXT, max_size=2)))
   c.working_dir = draw(hs.sampled_from(["", "/", "/w", "rel", "/../..",
                                         "/a/../../b", "/tmp/x"]))
   for _ in range(draw(hs.integers(0, 2))):
      c.envs.add(key=draw(TEXT), value=draw(TEXT))
   for _ in range(draw(hs.integers(0, 2))):
      m = c.mounts.add()
      m.container_path = draw(hs.sampled_from(
         ["/data", "/etc/hosts", "/tmp/t", "/dev/x", "/proc/x", "rel",
          "/../../outside", "/a/../../outside", "/x/./y", "", "/"]))
      m.host_path = os.path.join(ctx["host"], draw(hs.sampled_from(
         ["d1", "d2/sub", "../outside", "a/../../outside", "f"])))
      m.readonly = draw(hs.booleans())
      m.propagation = draw(hs.sampled_from([0, 0, 1, 2]))
   c.log_path = draw(hs.sampled_from(log_paths(
      ctx, ["", "c.log", "c/0.log", ".", "x" * 300 + ".log"])))
   c.tty = draw(hs.booleans())
   c.stdin = draw(hs.booleans())
   c.labels.update(draw(DICT))
   c.annotations.update(draw(DICT))
   sc = c.linux.security_context
   k = draw(hs.integers(0, 5))
   if (k == 0):
      sc.run_as_user.value = draw(I64)
   elif (k == 1):
      sc.run_as_username = draw(TEXT)
   elif (k == 2):
      sc.run_as_group.value = draw(I64)
   sc.readonly_rootfs = draw(hs.booleans())
   c.linux.resources.memory_limit_in_bytes = draw(I64)
   return c


def request_draw(draw, ctx):
   "Draw (service, method, request message) for one random request."
   pods = ctx["pods"]
   ctrs = ctx["ctrs"]
   svc = "runtime"
   m = draw(hs.sampled_from(RUNTIME_RPCS + IMAGE_RPCS + [
      "RunPodSandbox", "RunPodSandbox", "CreateContainer",
      "CreateContainer", "CreateContainer", "StartContainer",
      "StartContainer", "StartContainer", "ExecSync", "ExecSync"]))
   pid = lambda: id_pick(draw, pods)
   cid = lambda: id_pick(draw, ctrs)
   if (m in IMAGE_RPCS):
      svc = "images"
      spec = pb.ImageSpec(image=draw(hs.one_of(hs.just("busybox"), TEXT)))
      req = { "ListImages": lambda: pb.ListImagesRequest(
                 filter=pb.ImageFilter(image=spec)),
              "ImageStatus": lambda: pb.ImageStatusRequest(
                 image=spec, verbose=draw(hs.booleans())),
              "PullImage": lambda: pb.PullImageRequest(image=spec),
              "RemoveImage": lambda: pb.RemoveImageRequest(
                 image=pb.ImageSpec(image=draw(TEXT))),
              "ImageFsInfo": lambda: pb.ImageFsInfoRequest() }[m]()
   elif (m == "RunPodSandbox"):
      req = pb.RunPodSandboxRequest(
         config=pod_config(draw, ctx),
         runtime_handler=draw(hs.sampled_from(["", "", "runc", "../x"])))
   elif (m in ("StopPodSandbox", "RemovePodSandbox", "PodSandboxStats")):
      req = getattr(pb, m + "Request")(pod_sandbox_id=pid())
   elif (m == "PodSandboxStatus"):
      req = pb.PodSandboxStatusRequest(pod_sandbox_id=pid(),
                                       verbose=draw(hs.booleans()))
   elif (m == "CreateContainer"):
      req = pb.CreateContainerRequest(pod_sandbox_id=pid(),
                                      config=ctr_config(draw, ctx))
   elif (m in ("StartContainer", "RemoveContainer", "ReopenContainerLog",
               "ContainerStats")):
      req = getattr(pb, m + "Request")(container_id=cid())
   elif (m == "StopContainer"):
      req = pb.StopContainerRequest(container_id=cid(), timeout=draw(
         hs.sampled_from([0, -1, -2**63, 1, 2, 2**63 - 1])))
   elif (m == "ContainerStatus"):
      req = pb.ContainerStatusRequest(container_id=cid(),
                                      verbose=draw(hs.booleans()))
   elif (m == "ExecSync"):
      # Mostly at running containers: the rest are refused before any
      # keeper sees them, and a run of a few hundred examples could end
      # with no exec done at all.
      req = pb.ExecSyncRequest(container_id=id_pick(
                                  draw, ctx.get("running") or ctrs),
                               cmd=draw(hs.lists(TEXT, max_size=3)),
                               timeout=draw(hs.sampled_from(
                                  [0, -1, 1, 5, -2**63, 2**63 - 1])))
   elif (m == "Exec"):
      req = pb.ExecRequest(container_id=cid(),
                           cmd=draw(hs.lists(TEXT, max_size=2)),
                           tty=draw(hs.booleans()),
                           stdout=draw(hs.booleans()),
                           stderr=draw(hs.booleans()))
   elif (m == "Attach"):
      req = pb.AttachRequest(container_id=cid(), stdout=True)
   elif (m == "PortForward"):
      req = pb.PortForwardRequest(pod_sandbox_id=pid(), port=draw(
         hs.lists(hs.integers(-2**31, 2**31 - 1), max_size=2)))
   elif (m == "UpdateContainerResources"):
      req = pb.UpdateContainerResourcesRequest(container_id=cid())
      req.linux.cpu_shares = draw(I64)
      req.linux.memory_limit_in_bytes = draw(I64)
   elif (m == "ListPodSandbox"):
      req = pb.ListPodSandboxRequest()
      if (draw(hs.booleans())):
         req.filter.id = pid()
         req.filter.label_selector.update(draw(DICT))
         if (draw(hs.booleans())):
            req.filter.state.state = draw(hs.sampled_from([0, 1, 7]))
   elif (m in ("ListContainers", "ListContainerStats")):
      req = getattr(pb, m + "Request")()
      if (draw(hs.booleans())):
         req.filter.id = cid()
         req.filter.pod_sandbox_id = pid()
         req.filter.label_selector.update(draw(DICT))
   elif (m == "ListPodSandboxStats"):
      req = pb.ListPodSandboxStatsRequest()
      if (draw(hs.booleans())):
         req.filter.id = pid()
   elif (m == "Version"):
      req = pb.VersionRequest(version=draw(TEXT))
   elif (m == "UpdateRuntimeConfig"):
      req = pb.UpdateRuntimeConfigRequest()
      req.runtime_config.network_config.pod_cidr = draw(TEXT)
   elif (m == "CheckpointContainer"):
      req = pb.CheckpointContainerRequest(container_id=cid(),
                                          location=draw(TEXT))
   elif (m == "GetContainerEvents"):
      req = pb.GetEventsRequest()
   elif (m == "ListPodSandboxMetrics"):
      req = pb.ListPodSandboxMetricsRequest()
   elif (m == "UpdatePodSandboxResources"):
      req = pb.UpdatePodSandboxResourcesRequest(pod_sandbox_id=pid())
   else:
      req = getattr(pb, m + "Request")()
   # Keep the number of keepers bounded: over the cap, remove instead.
   i = draw(hs.integers(0, 2**16))
   if (m == "RunPodSandbox" and len(pods) >= PODS_MAX):
      (m, req) = ("RemovePodSandbox", pb.RemovePodSandboxRequest(
         pod_sandbox_id=pods[i % len(pods)]))
   if (m == "CreateContainer" and len(ctrs) >= CTRS_MAX):
      (m, req) = ("RemoveContainer", pb.RemoveContainerRequest(
         container_id=ctrs[i % len(ctrs)]))
   return (svc, m, req)


def raw_mangle(draw, req):
   """Return bytes that are req's serialization broken: invalid UTF-8
      spliced into a string, or random bytes flipped, cut or appended.
      Every choice is drawn whatever req holds (see id_pick)."""
   k = draw(hs.integers(0, 3))
   flips = draw(hs.lists(hs.tuples(hs.integers(0, 2**16),
                                   hs.integers(0, 255)),
                         min_size=1, max_size=4))
   cut = draw(hs.integers(0, 2**16))
   tail = draw(hs.binary(min_size=1, max_size=20))
   bad = draw(hs.sampled_from([b"\xff\xfe", b"\xc0\xaf", b"\xed\xa0\x80",
                               b"\x80"]))
   data = bytearray(req.SerializeToString())
   # A flipped byte in a pod's log directory would make ch-cri (root) make
   # that directory anywhere on the host: flip none there.
   keep = range(0)
   if (isinstance(req, pb.RunPodSandboxRequest)
       and req.config.log_directory):
      ld = req.config.log_directory.encode()
      keep = range(data.find(ld), data.find(ld) + len(ld))
   if (k == 0 and data):
      for (i, v) in flips:
         if (i % len(data) not in keep):
            data[i % len(data)] = v
   elif (k == 1 and data):
      del data[cut % len(data):]
   elif (k == 2):
      data += tail
   else:
      # a pod whose label value is not UTF-8 (which protobuf refuses to
      # serialise, so splice it into the bytes)
      c = pb.PodSandboxConfig()
      c.metadata.name = "utf8"
      c.metadata.uid = "utf8"
      c.metadata.namespace = "ns"
      c.labels["k"] = SPLICE.decode()
      blob = pb.RunPodSandboxRequest(config=c).SerializeToString()
      data = bytearray(blob.replace(SPLICE, (bad * 12)[:len(SPLICE)]))
   return bytes(data)


@hs.composite
def requests(draw, ctx):
   return request_draw(draw, ctx)


@hs.composite
def mangled(draw, req):
   return raw_mangle(draw, req)


def call(ctx, svc, m, req):
   "Send req; return its status code (OK or the error's)."
   stub = ctx["served"].images if svc == "images" else ctx["served"].runtime
   try:
      if (m == "GetContainerEvents"):
         # A stream that waits for events: end it soon.
         try:
            for _ in getattr(stub, m)(req, timeout=0.05):
               break
         except grpc.RpcError as x:
            if (x.code() != grpc.StatusCode.DEADLINE_EXCEEDED):
               raise
      else:
         res = getattr(stub, m)(req, timeout=CALL_TIMEOUT)
         ctx["results"].append((m, req, res))
      log_check(ctx, m, req, grpc.StatusCode.OK, "")
      return grpc.StatusCode.OK
   except grpc.RpcError as x:
      assert x.code() not in BAD_CODES, \
         "%s(%s) -> %s: %s" % (m, str(req)[:400], x.code().name, x.details())
      log_check(ctx, m, req, x.code(), x.details() or "")
      assert x.code() != grpc.StatusCode.DEADLINE_EXCEEDED \
         or m == "ExecSync", "%s hung: %s" % (m, str(req)[:400])
      ctx["details"].setdefault((m, x.code().name), x.details())
      return x.code()


def call_raw(ctx, svc, m, data):
   service = ("runtime.v1.ImageService" if svc == "images"
              else "runtime.v1.RuntimeService")
   fn = ctx["served"].channel.unary_unary("/%s/%s" % (service, m),
                                          request_serializer=None,
                                          response_deserializer=None)
   # GetContainerEvents streams until the deadline when all is well.
   stream_p = m == "GetContainerEvents"
   try:
      fn(data, timeout=(0.05 if stream_p else CALL_TIMEOUT))
      return grpc.StatusCode.OK
   except grpc.RpcError as x:
      if (stream_p and x.code() == grpc.StatusCode.DEADLINE_EXCEEDED):
         return x.code()
      assert x.code() not in BAD_CODES, \
         "raw %s(%r) -> %s: %s" % (m, data[:200], x.code().name, x.details())
      return x.code()


def live_refresh(ctx):
   rt = ctx["served"].runtime
   ctx["pods"] = [p.id for p in rt.ListPodSandbox(
      pb.ListPodSandboxRequest(), timeout=RPC_TIMEOUT).items]
   ctrs = rt.ListContainers(pb.ListContainersRequest(),
                            timeout=RPC_TIMEOUT).containers
   ctx["ctrs"] = [c.id for c in ctrs]
   ctx["running"] = [c.id for c in ctrs
                     if c.state == pb.ContainerState.CONTAINER_RUNNING]


def keepers_of(state):
   out = subprocess.run(["pgrep", "-f", "keeper.py %s/" % state],
                        capture_output=True, text=True)
   return out.stdout.split()


def fuzz_run(s, root, example_ct, image):
   """Fuzz server s (a conftest.Served or a Live) with example_ct examples;
      log directories and host paths go under root. Check the answers,
      then remove everything through the API and check nothing is left."""
   s.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(
      image=image)), timeout=300)
   ctx = { "served": s, "logs": os.path.join(root, "logs"),
           "host": fsutil.mkdirs(os.path.join(root, "host", "h")),
           "pods": [], "ctrs": [], "results": [], "codes": dict(),
           "details": dict(), "log_refused": 0 }
   sent = [0]

   @hypothesis.settings(max_examples=example_ct, derandomize=True,
                        database=None, deadline=None,
                        phases=[hypothesis.Phase.generate],
                        suppress_health_check=list(hypothesis.HealthCheck))
   @hypothesis.seed(SEED)
   @hypothesis.given(hs.data())
   def fuzz(data):
      live_refresh(ctx)
      for _ in range(REQUEST_PER_EXAMPLE):
         (svc, m, req) = data.draw(requests(ctx))
         if (data.draw(hs.integers(0, 19)) == 0):
            code = call_raw(ctx, svc, m, data.draw(mangled(req)))
            m = "raw " + m
         else:
            code = call(ctx, svc, m, req)
         ctx["codes"][(m, code.name)] = ctx["codes"].get((m, code.name),
                                                         0) + 1
         sent[0] += 1
         if (m in ("RunPodSandbox", "CreateContainer", "RemovePodSandbox",
                   "RemoveContainer") and code == grpc.StatusCode.OK):
            live_refresh(ctx)

   try:
      fuzz()
      return fuzz_check(s, root, ctx, sent[0], example_ct)
   finally:
      leftovers_kill(s, ctx)


def leftovers_kill(s, ctx):
   "Leave no keeper (nor its sleepers) behind a failed run."
   if (not keepers_of(s.state)):
      return
   try:
      live_refresh(ctx)
      for p in ctx["pods"]:
         s.runtime.StopPodSandbox(pb.StopPodSandboxRequest(
            pod_sandbox_id=p), timeout=RPC_TIMEOUT)
   except grpc.RpcError:
      pass
   for pid in keepers_of(s.state):
      try:
         os.kill(int(pid), signal.SIGKILL)
      except OSError:
         pass


def fuzz_check(s, root, ctx, sent_ct, example_ct):
   "Check the fuzz's answers and what it leaves (see fuzz_run)."
   codes = ctx["codes"]
   assert sent_ct >= example_ct * REQUEST_PER_EXAMPLE
   print("%d requests: %s" % (sent_ct, sorted(codes.items())))
   for (k, v) in sorted(ctx["details"].items()):
      print("  %s %s: %s" % (k[0], k[1], v[:200]))
   # The fuzz got past validation to the real work.
   for m in ("RunPodSandbox", "CreateContainer", "StartContainer",
             "ExecSync", "StopContainer", "RemoveContainer",
             "RemovePodSandbox"):
      assert codes.get((m, "OK"), 0) > 0, (m, codes)
   # Log paths out of the pod's log directory got as far as their check.
   assert ctx["log_refused"] > 0
   # Still serving; every listed object answers its status call.
   live_refresh(ctx)
   rt = s.runtime
   for p in ctx["pods"]:
      rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=p),
                          timeout=RPC_TIMEOUT)
   for c in ctx["ctrs"]:
      rt.ContainerStatus(pb.ContainerStatusRequest(container_id=c),
                         timeout=RPC_TIMEOUT)
   # Everything comes down through the API, leaving nothing behind.
   for p in ctx["pods"]:
      rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=p),
                        timeout=RPC_TIMEOUT)
      rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=p),
                          timeout=RPC_TIMEOUT)
   live_refresh(ctx)
   assert ctx["pods"] == [] and ctx["ctrs"] == []
   assert os.listdir(os.path.join(s.state, "pods")) == []
   assert os.listdir(os.path.join(s.state, "containers")) == []
   deadline = time.monotonic() + 10
   while keepers_of(s.state) and time.monotonic() < deadline:
      time.sleep(0.1)
   assert keepers_of(s.state) == []
   with open("/proc/self/mountinfo") as fp:
      assert s.state not in fp.read()
   # Nothing written outside the directories requests named: under root,
   # the log directories and host paths (and an in-process server's own).
   top = sorted(n for n in os.listdir(root) if not n.endswith(".sock"))
   assert set(top) <= { "state", "storage", "logs", "host" }, top
   for (dir_, dirs, files) in os.walk(root):
      for n in dirs + files:
         assert "outside" not in n, os.path.join(dir_, n)
   for (dir_, _, files) in os.walk(os.path.join(root, "logs")):
      for f in files:
         assert re.fullmatch(r"(c\.log|0\.log|x+\.log)", f), \
            os.path.join(dir_, f)
   return codes


## Classes ##

class Live:
   "A live ch-cri at socket, with its state directory state (for checks)."

   def __init__(self, socket, state):
      self.state = state
      self.channel = grpc.insecure_channel("unix://" + socket)
      self.images = pb_grpc.ImageServiceStub(self.channel)
      self.runtime = pb_grpc.RuntimeServiceStub(self.channel)


## Tests ##

def test_fuzz_every_rpc(serve, root):
   s = serve(registry=REGISTRY)
   codes = fuzz_run(s, root, EXAMPLE_CT, "busybox")
   assert any(k[0].startswith("raw ") and k[1] == "INVALID_ARGUMENT"
              for k in codes), codes


@pytest.mark.skipif(not os.environ.get("CH_CRI_FUZZ_SOCKET"),
                    reason="no live server (CH_CRI_FUZZ_SOCKET)")
def test_fuzz_live(root):
   """The same against a live ch-cri (real Charliecloud), shorter: set
      CH_CRI_FUZZ_SOCKET and CH_CRI_FUZZ_STATE (its state directory)."""
   os.chmod(root, 0o755)   # log directories, whoever the server runs as
   s = Live(os.environ["CH_CRI_FUZZ_SOCKET"], os.environ["CH_CRI_FUZZ_STATE"])
   try:
      # 300: with 200, small changes to the requests drawn left some
      # runs with no ExecSync on a running container.
      fuzz_run(s, root, int(os.environ.get("CH_CRI_FUZZ_LIVE_EXAMPLES",
                                           "300")), "busybox")
   finally:
      s.channel.close()
