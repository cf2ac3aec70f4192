#!/usr/bin/env python3
# ch-cri beside containerd: start a private instance of each (own sockets,
# state under a temporary directory, images mirrored from the local test
# registry), measure every figure for both in the same run, alternating
# which goes first, and write results.json and results.md.
#
# Usage: bench.py OUT_DIR [--reps N] [--pods N] [--poll-seconds S] [--quick]
#
# Environment: CH_CRI_BIN (default: the tree's bin/ch-cri), CRICTL,
# CH_CRI_TEST_CACHE (registry CA and big image cache), BENCH_REGISTRY
# (default 127.0.0.1:5443), BENCH_BIG_IMAGE (default REGISTRY/bench/big:1),
# BENCH_SMALL_IMAGE (default REGISTRY/bench/small:1).

import argparse
import concurrent.futures
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import grpc

from cri_api.v1 import api_pb2 as pb
from cri_api.v1 import api_pb2_grpc as pb_grpc


## Constants ##

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
CACHE = os.environ.get("CH_CRI_TEST_CACHE", "/var/cache/ch-cri-test")
CA = os.path.join(CACHE, "registry", "ca.pem")
REGISTRY = os.environ.get("BENCH_REGISTRY", "127.0.0.1:5443")
CRICTL = os.environ.get("CRICTL", os.path.join(CACHE, "bin", "crictl"))
CH_CRI_BIN = os.environ.get("CH_CRI_BIN", os.path.join(TOP, "bin", "ch-cri"))
MIRRORED = ("docker.io", "registry.k8s.io", "k8s.gcr.io", "gcr.io",
            "quay.io")
BUSYBOX = "registry.k8s.io/e2e-test-images/busybox:1.29-2"
SHARED = "docker.io/library/busybox:latest"
PAUSE = "registry.k8s.io/pause:3.9"
# A main process that exits at once on SIGTERM even as PID 1 of a PID
# namespace (where busybox sleep would ignore it), so StopContainer
# measures the runtime, not the grace period.
SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]
STOP_TIMEOUT = 10
RPC_TIMEOUT = 120
START_TIMEOUT = 60
CLK_TCK = os.sysconf("SC_CLK_TCK")
STEPS = ("RunPodSandbox", "CreateContainer", "StartContainer",
         "StopContainer", "RemoveContainer", "StopPodSandbox",
         "RemovePodSandbox")
CRICTL_STEPS = ("runp", "create", "start", "stop", "rm", "stopp", "rmp")

CONTAINERD_CONFIG = """\
version = 2
root = "%(d)s/root"
state = "%(d)s/state"
plugin_dir = ""
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper",
                    "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "%(d)s/containerd.sock"
[ttrpc]
  address = "%(d)s/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "%(d)s/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "%(pause)s"
  # Root here lacks CAP_SYS_RESOURCE: runc can't set pause's -998.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "%(d)s/cni"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "%(d)s/certs.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
"""

# containerd 2.x (test/bin/go-tools containerd2 runc): version 3 of the
# config, runc 1.5 from go-tools.
CONTAINERD2_CONFIG = """\
version = 3
root = "%(d)s/root"
state = "%(d)s/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper",
                    "io.containerd.snapshotter.v1.erofs"]
[grpc]
  address = "%(d)s/containerd.sock"
[ttrpc]
  address = "%(d)s/containerd.sock.ttrpc"
[plugins.'io.containerd.cri.v1.images']
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "%(pause)s"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "%(d)s/certs.d"
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "%(d)s/cni"
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      BinaryName = "%(runc)s"
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"""
TOOLS = os.path.join(CACHE, "bin")

HOSTS_TOML = """\
server = "https://%(reg)s"
[host."https://%(mirror)s"]
  capabilities = ["pull", "resolve"]
  ca = "%(ca)s"
"""

# Only used by pods without hostNetwork (none by default): a private
# bridge name and subnet.
CNI_CONF = """\
{ "cniVersion": "1.0.0", "name": "chcri-bench",
  "plugins": [ { "type": "bridge", "bridge": "chcribench0",
                 "isGateway": true, "ipMasq": false,
                 "ipam": { "type": "host-local",
                           "ranges": [[{ "subnet": "10.213.77.0/24" }]] } },
               { "type": "loopback" } ] }
"""


## Globals ##

log_fp = sys.stderr


## Functions ##

def info(msg, *args):
   print(time.strftime("%H:%M:%S ") + (msg % args), file=log_fp, flush=True)


def pct(xs, p):
   "Return the p-th percentile of xs (nearest rank), or None if empty."
   if (not xs):
      return None
   xs = sorted(xs)
   return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


def med(xs):
   return statistics.median(xs) if xs else None


def cpu_s(pid):
   "Return CPU seconds (user + system) process pid has used."
   with open("/proc/%d/stat" % pid) as fp:
      f = fp.read().rsplit(")", 1)[1].split()
   return (int(f[11]) + int(f[12])) / CLK_TCK


def mem_kb(pid):
   "Return (RSS, PSS) of process pid in kB, or (0, 0) if it is gone."
   out = { "Rss": 0, "Pss": 0 }
   try:
      with open("/proc/%d/smaps_rollup" % pid) as fp:
         for l in fp:
            f = l.split()
            if (f[0][:-1] in out):
               out[f[0][:-1]] = int(f[1])
   except OSError:
      pass
   return (out["Rss"], out["Pss"])


def procs():
   "Return {pid: (ppid, argv)} of every process."
   res = dict()
   for n in os.listdir("/proc"):
      if (not n.isdigit()):
         continue
      try:
         with open("/proc/%s/cmdline" % n, "rb") as fp:
            argv = fp.read().split(b"\0")[:-1]
         with open("/proc/%s/stat" % n) as fp:
            ppid = int(fp.read().rsplit(")", 1)[1].split()[1])
      except OSError:
         continue
      res[int(n)] = (ppid, [a.decode(errors="replace") for a in argv])
   return res


def wait_for(pred, timeout, what):
   deadline = time.monotonic() + timeout
   while not pred():
      if (time.monotonic() > deadline):
         raise RuntimeError("timed out waiting for %s" % what)
      time.sleep(0.1)


## Classes ##

class Runtime:
   "A private CRI runtime under dir_: its server process and gRPC stubs."

   name = None

   def __init__(self, dir_):
      self.dir_ = dir_
      os.makedirs(dir_, exist_ok=True)
      self.sock = os.path.join(dir_, self.sock_name)
      self.proc = None
      self.log = open(os.path.join(dir_, "server.log"), "ab")

   @property
   def pid(self):
      return self.proc.pid

   def connect(self):
      self.ch = grpc.insecure_channel("unix://" + self.sock)
      grpc.channel_ready_future(self.ch).result(timeout=START_TIMEOUT)
      self.rt = pb_grpc.RuntimeServiceStub(self.ch)
      self.im = pb_grpc.ImageServiceStub(self.ch)
      v = self.rt.Version(pb.VersionRequest(), timeout=RPC_TIMEOUT)
      info("%s %s serving on %s (pid %d)", v.runtime_name,
           v.runtime_version, self.sock, self.pid)

   def stop(self):
      if (self.proc is None):
         return
      self.proc.send_signal(signal.SIGTERM)
      try:
         self.proc.wait(30)
      except subprocess.TimeoutExpired:
         self.proc.kill()
         self.proc.wait(10)
      self.proc = None

   def crictl(self, *args, timeout=RPC_TIMEOUT):
      cp = subprocess.run([CRICTL, "--runtime-endpoint",
                           "unix://" + self.sock, "--image-endpoint",
                           "unix://" + self.sock, "--timeout", "120s"]
                          + list(args), capture_output=True, text=True,
                          timeout=timeout)
      if (cp.returncode != 0):
         raise RuntimeError("crictl %s: %s" % (" ".join(args),
                                               cp.stderr.strip()[-300:]))
      return cp.stdout.strip()

   def pod_procs(self):
      "Return [(pid, argv)] of the processes a pod costs beyond the server."
      raise NotImplementedError()

   def helper_pids(self):
      "Return every per-pod process of this runtime (for CPU totals)."
      return [pid for (pid, _) in self.pod_procs()]


class Ch_Cri(Runtime):
   name = "ch-cri"
   sock_name = "ch-cri.sock"

   def start(self):
      cfg = os.path.join(self.dir_, "config.toml")
      with open(cfg, "w") as fp:
         for r in MIRRORED:
            fp.write('[registry."%s"]\nmirrors = ["https://%s"]\n'
                     'upstream = false\n\n' % (r, REGISTRY))
         fp.write('[registry."%s"]\nca = "%s"\n' % (REGISTRY, CA))
      argv = [CH_CRI_BIN, "--socket", self.sock, "--state-dir",
              os.path.join(self.dir_, "state"), "--storage",
              os.path.join(self.dir_, "storage"), "--config", cfg,
              "--log-level", "info"]
      self.proc = subprocess.Popen(argv, stdout=self.log, stderr=self.log,
                                   stdin=subprocess.DEVNULL,
                                   start_new_session=True)
      wait_for(lambda: os.path.exists(self.sock), START_TIMEOUT,
               "ch-cri socket")
      self.connect()

   def pod_procs(self):
      state = os.path.join(self.dir_, "state")
      return [(pid, argv) for (pid, (_, argv)) in procs().items()
              if any(a.endswith("keeper.py") for a in argv)
              and any(a.startswith(state) for a in argv)]


class Containerd(Runtime):
   "Debian's containerd 1.6, with its runc."
   name = "containerd"
   sock_name = "containerd.sock"
   binary = "containerd"
   config = CONTAINERD_CONFIG

   def env(self):
      return None

   def start(self):
      d = self.dir_
      for sub in ("cni", "opt", "root", "state"):
         os.makedirs(os.path.join(d, sub), exist_ok=True)
      with open(os.path.join(d, "cni", "10-bench.conflist"), "w") as fp:
         fp.write(CNI_CONF)
      hosts = { "docker.io": "registry-1.docker.io" }
      for r in MIRRORED:
         os.makedirs(os.path.join(d, "certs.d", r), exist_ok=True)
         with open(os.path.join(d, "certs.d", r, "hosts.toml"), "w") as fp:
            fp.write(HOSTS_TOML % { "reg": hosts.get(r, r),
                                    "mirror": REGISTRY, "ca": CA })
      os.makedirs(os.path.join(d, "certs.d", REGISTRY), exist_ok=True)
      with open(os.path.join(d, "certs.d", REGISTRY, "hosts.toml"),
                "w") as fp:
         fp.write('server = "https://%s"\n[host."https://%s"]\n'
                  '  ca = "%s"\n' % (REGISTRY, REGISTRY, CA))
      cfg = os.path.join(d, "config.toml")
      with open(cfg, "w") as fp:
         fp.write(self.config % { "d": d, "pause": PAUSE,
                                  "runc": os.path.join(TOOLS, "runc") })
      self.proc = subprocess.Popen([self.binary, "--config", cfg],
                                   stdout=self.log, stderr=self.log,
                                   stdin=subprocess.DEVNULL,
                                   start_new_session=True, env=self.env())
      wait_for(lambda: os.path.exists(self.sock), START_TIMEOUT,
               "containerd socket")
      self.connect()

   def pod_procs(self):
      ps = procs()
      shims = { pid for (pid, (_, argv)) in ps.items()
                if argv and argv[0].endswith("containerd-shim-runc-v2")
                and self.sock in " ".join(argv) }
      return [(pid, argv) for (pid, (ppid, argv)) in ps.items()
              if pid in shims
              or (ppid in shims and argv and argv[0] == "/pause")]

   def stop(self):
      shims = [pid for (pid, argv) in self.pod_procs()
               if argv[0].endswith("containerd-shim-runc-v2")]
      super().stop()
      for pid in shims:
         try:
            os.kill(pid, signal.SIGKILL)
         except ProcessLookupError:
            pass


class Containerd2(Containerd):
   "containerd 2.x with runc 1.5, both from test/bin/go-tools."
   name = "containerd2"
   binary = os.path.join(TOOLS, "containerd2", "containerd")
   config = CONTAINERD2_CONFIG

   def env(self):
      # Its shim comes from beside it, not from Debian's containerd.
      return dict(os.environ, PATH=os.path.dirname(self.binary) + ":"
                  + os.environ.get("PATH", ""))


class Bench:
   "The measurements, over a list of runtimes."

   def __init__(self, rts, args, tmp):
      self.rts = rts
      self.a = args
      self.tmp = tmp
      self.res = { r.name: dict() for r in rts }
      self.seq = 0

   def put(self, rt, key, value):
      self.res[rt.name].setdefault(key, []).append(value)

   def order(self, i):
      "Return the runtimes in the order of round i: alternate who is first."
      return self.rts if i % 2 == 0 else list(reversed(self.rts))

   def pod_config(self, tag):
      self.seq += 1
      name = "b-%s-%d" % (tag, self.seq)
      pc = pb.PodSandboxConfig(
                               log_directory=os.path.join(self.tmp, "logs",
                                                          name))
      pc.metadata.name = name
      pc.metadata.namespace = "bench"
      pc.metadata.uid = name
      pc.linux.security_context.namespace_options.network = \
         pb.NamespaceMode.NODE
      return pc

   def ctr_config(self, name="c", image=BUSYBOX, command=SLEEPER):
      cc = pb.ContainerConfig(command=command, log_path=name + ".log")
      cc.metadata.name = name
      cc.image.image = image
      return cc

   def pod_up(self, rt, tag, start=True, ctr_ct=1):
      "Run a pod with ctr_ct containers; start them if start."
      pc = self.pod_config(tag)
      pid = rt.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=pc),
                                timeout=RPC_TIMEOUT).pod_sandbox_id
      cids = []
      for i in range(ctr_ct):
         cid = rt.rt.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=pid, config=self.ctr_config("c%d" % i),
            sandbox_config=pc), timeout=RPC_TIMEOUT).container_id
         if (start):
            rt.rt.StartContainer(pb.StartContainerRequest(container_id=cid),
                                 timeout=RPC_TIMEOUT)
         cids.append(cid)
      return (pid, cids)

   def pods_down(self, rt):
      "Remove every pod of rt (sequentially: clean-up is not measured)."
      items = rt.rt.ListPodSandbox(pb.ListPodSandboxRequest(),
                                   timeout=RPC_TIMEOUT).items
      def one(p):
         rt.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=p.id),
                              timeout=RPC_TIMEOUT)
         rt.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(
            pod_sandbox_id=p.id), timeout=RPC_TIMEOUT)
      with concurrent.futures.ThreadPoolExecutor(4) as ex:
         list(ex.map(one, items))

   def images_prepare(self):
      for rt in self.rts:
         for ref in (PAUSE, BUSYBOX):
            rt.im.PullImage(pb.PullImageRequest(image=pb.ImageSpec(
               image=ref)), timeout=600)

   ## Measurements ##

   def lifecycle_grpc(self):
      for i in range(self.a.reps):
         for rt in self.order(i):
            pc = self.pod_config("lc")
            t = dict()
            t0 = time.perf_counter()
            def step(name, fn):
               s = time.perf_counter()
               r = fn()
               t[name] = (time.perf_counter() - s) * 1000
               return r
            pid = step("RunPodSandbox", lambda: rt.rt.RunPodSandbox(
               pb.RunPodSandboxRequest(config=pc),
               timeout=RPC_TIMEOUT).pod_sandbox_id)
            cid = step("CreateContainer", lambda: rt.rt.CreateContainer(
               pb.CreateContainerRequest(pod_sandbox_id=pid,
                                         config=self.ctr_config(),
                                         sandbox_config=pc),
               timeout=RPC_TIMEOUT).container_id)
            step("StartContainer", lambda: rt.rt.StartContainer(
               pb.StartContainerRequest(container_id=cid),
               timeout=RPC_TIMEOUT))
            step("StopContainer", lambda: rt.rt.StopContainer(
               pb.StopContainerRequest(container_id=cid,
                                       timeout=STOP_TIMEOUT),
               timeout=RPC_TIMEOUT))
            step("RemoveContainer", lambda: rt.rt.RemoveContainer(
               pb.RemoveContainerRequest(container_id=cid),
               timeout=RPC_TIMEOUT))
            step("StopPodSandbox", lambda: rt.rt.StopPodSandbox(
               pb.StopPodSandboxRequest(pod_sandbox_id=pid),
               timeout=RPC_TIMEOUT))
            step("RemovePodSandbox", lambda: rt.rt.RemovePodSandbox(
               pb.RemovePodSandboxRequest(pod_sandbox_id=pid),
               timeout=RPC_TIMEOUT))
            t["cycle"] = (time.perf_counter() - t0) * 1000
            for (k, v) in t.items():
               self.put(rt, "grpc %s ms" % k, v)
      info("lifecycle (gRPC): %d rounds", self.a.reps)

   def lifecycle_crictl(self):
      reps = max(3, self.a.reps // 2)
      for i in range(reps):
         for rt in self.order(i):
            pc = self.pod_config("cc")
            pj = os.path.join(self.tmp, "pod-%s.json" % rt.name)
            cj = os.path.join(self.tmp, "ctr-%s.json" % rt.name)
            with open(pj, "w") as fp:
               json.dump({ "metadata": { "name": pc.metadata.name,
                                         "namespace": "bench",
                                         "uid": pc.metadata.uid },
                           "log_directory": pc.log_directory,
                           "linux": { "security_context": {
                              "namespace_options": { "network": 2 } } } },
                         fp)
            with open(cj, "w") as fp:
               json.dump({ "metadata": { "name": "c" },
                           "image": { "image": BUSYBOX },
                           "command": SLEEPER, "log_path": "c.log" }, fp)
            t = dict()
            t0 = time.perf_counter()
            def step(name, *args):
               s = time.perf_counter()
               out = rt.crictl(*args)
               t[name] = (time.perf_counter() - s) * 1000
               return out
            pid = step("runp", "runp", pj)
            cid = step("create", "create", pid, cj, pj)
            step("start", "start", cid)
            step("stop", "stop", "--timeout", str(STOP_TIMEOUT), cid)
            step("rm", "rm", cid)
            step("stopp", "stopp", pid)
            step("rmp", "rmp", pid)
            t["cycle"] = (time.perf_counter() - t0) * 1000
            for (k, v) in t.items():
               self.put(rt, "crictl %s ms" % k, v)
      info("lifecycle (crictl): %d rounds", reps)

   def concurrent_starts(self):
      n = self.a.pods
      for i in range(self.a.conc_reps):
         for rt in self.order(i):
            fails = []
            def one(k):
               try:
                  self.pod_up(rt, "cs")
               except grpc.RpcError as x:
                  fails.append("%s: %s" % (x.code().name, x.details()))
            t0 = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(n) as ex:
               list(ex.map(one, range(n)))
            # "Running" as the kubelet sees it: every container RUNNING.
            running = sum(1 for c in rt.rt.ListContainers(
               pb.ListContainersRequest(), timeout=RPC_TIMEOUT).containers
                          if c.state == pb.ContainerState.CONTAINER_RUNNING)
            dt = time.perf_counter() - t0
            self.put(rt, "%d concurrent pods s" % n, dt)
            self.put(rt, "%d concurrent pods failures" % n,
                     len(fails) + (n - len(fails) - running))
            if (fails):
               info("%s: %d failures, e.g. %s", rt.name, len(fails),
                    fails[0])
            self.pods_down(rt)
      info("concurrent starts: %d rounds of %d pods", self.a.conc_reps, n)

   def memory_idle(self):
      for rt in self.rts:
         self.put(rt, "RSS idle MB", mem_kb(rt.pid)[0] / 1024)

   def polling(self):
      "With N running pods each: kubelet-like polling, CPU, latency, RSS."
      for rt in self.rts:
         for i in range(self.a.pods):
            self.pod_up(rt, "poll")
      for rt in self.rts:
         self.put(rt, "RSS with %d pods MB" % self.a.pods,
                  mem_kb(rt.pid)[0] / 1024)
         pp = rt.pod_procs()
         rss = sum(mem_kb(p)[0] for (p, _) in pp) / 1024 / self.a.pods
         pss = sum(mem_kb(p)[1] for (p, _) in pp) / 1024 / self.a.pods
         self.put(rt, "per-pod process RSS MB", rss)
         self.put(rt, "per-pod process PSS MB", pss)
      for (i, rt) in enumerate(self.order(0) + self.order(1)):
         self.poll_one(rt, self.a.poll_seconds // 2)
      for rt in self.rts:
         self.pods_down(rt)
      info("polling: %d pods, %d s per runtime", self.a.pods,
           self.a.poll_seconds)

   def poll_one(self, rt, seconds):
      calls = {
         "ListPodSandbox": (0.6, lambda: rt.rt.ListPodSandbox(
            pb.ListPodSandboxRequest(), timeout=RPC_TIMEOUT)),
         "ListContainers": (0.6, lambda: rt.rt.ListContainers(
            pb.ListContainersRequest(), timeout=RPC_TIMEOUT)),
         "Status": (5, lambda: rt.rt.Status(pb.StatusRequest(),
                                            timeout=RPC_TIMEOUT)),
         "Version": (5, lambda: rt.rt.Version(pb.VersionRequest(),
                                              timeout=RPC_TIMEOUT)),
         "ListContainerStats": (10, lambda: rt.rt.ListContainerStats(
            pb.ListContainerStatsRequest(), timeout=RPC_TIMEOUT)),
         "ImageFsInfo": (10, lambda: rt.im.ImageFsInfo(
            pb.ImageFsInfoRequest(), timeout=RPC_TIMEOUT)) }
      lat = { k: [] for k in calls }
      stop = time.monotonic() + seconds
      def poller(name, period, fn):
         while time.monotonic() < stop:
            t = time.perf_counter()
            fn()
            lat[name].append((time.perf_counter() - t) * 1000)
            time.sleep(period)
      helpers = rt.helper_pids()
      def cpu_all():
         return cpu_s(rt.pid), sum(cpu_s(p) for p in helpers
                                   if os.path.exists("/proc/%d" % p))
      (c0, h0) = cpu_all()
      w0 = time.monotonic()
      ts = [threading.Thread(target=poller, args=(k, p, f))
            for (k, (p, f)) in calls.items()]
      for t in ts:
         t.start()
      for t in ts:
         t.join()
      (c1, h1) = cpu_all()
      wall = time.monotonic() - w0
      self.put(rt, "polling CPU % of a core", (c1 - c0) / wall * 100)
      self.put(rt, "polling CPU incl. per-pod processes %",
               (c1 - c0 + h1 - h0) / wall * 100)
      for (k, xs) in lat.items():
         self.res[rt.name].setdefault("poll %s ms" % k, []).extend(xs)

   def list_many(self):
      for total in (100, 500):
         for rt in self.rts:
            for i in range(total // 10):
               self.pod_up(rt, "lm", start=False, ctr_ct=10)
         for i in range(6):
            for rt in self.order(i):
               for _ in range(10):
                  t = time.perf_counter()
                  n = len(rt.rt.ListContainers(pb.ListContainersRequest(),
                                               timeout=RPC_TIMEOUT)
                          .containers)
                  self.put(rt, "ListContainers %d ms" % total,
                           (time.perf_counter() - t) * 1000)
               assert n == total, (rt.name, n)
         for rt in self.rts:
            self.pods_down(rt)
         info("ListContainers with %d containers", total)

   def pulls(self):
      big = os.environ.get("BENCH_BIG_IMAGE", "%s/bench/big:1" % REGISTRY)
      small = os.environ.get("BENCH_SMALL_IMAGE",
                             "%s/bench/small:1" % REGISTRY)
      # The small image's layer is its own; SHARED's is also the layer of
      # BUSYBOX, present: containerd then has it unpacked (a snapshot),
      # ch-cri downloaded (each image is one directory of its own).
      for (key, ref) in (("small", small), ("100 MB", big),
                         ("small, layer of an image present,", SHARED)):
         for i in range(self.a.pull_reps):
            for rt in self.order(i):
               rt.im.RemoveImage(pb.RemoveImageRequest(
                  image=pb.ImageSpec(image=ref)), timeout=RPC_TIMEOUT)
               t = time.perf_counter()
               rt.im.PullImage(pb.PullImageRequest(image=pb.ImageSpec(
                  image=ref)), timeout=600)
               self.put(rt, "pull %s image s" % key,
                        time.perf_counter() - t)
         for rt in self.rts:
            rt.im.RemoveImage(pb.RemoveImageRequest(
               image=pb.ImageSpec(image=ref)), timeout=RPC_TIMEOUT)
         info("pulls: %s", ref)

   def exec_sync(self):
      cids = { rt.name: self.pod_up(rt, "ex")[1][0] for rt in self.rts }
      for i in range(self.a.reps * 3):
         for rt in self.order(i):
            t = time.perf_counter()
            r = rt.rt.ExecSync(pb.ExecSyncRequest(
               container_id=cids[rt.name], cmd=["echo", "hi"], timeout=10),
               timeout=RPC_TIMEOUT)
            self.put(rt, "ExecSync ms", (time.perf_counter() - t) * 1000)
            assert r.stdout == b"hi\n", r
      for rt in self.rts:
         self.pods_down(rt)
      info("ExecSync: %d rounds", self.a.reps * 3)


def summary(res):
   "Return {figure: {runtime: {median, p99, n}}} from raw results."
   out = dict()
   for (rt, figs) in res.items():
      for (k, xs) in figs.items():
         out.setdefault(k, dict())[rt] = { "median": med(xs),
                                           "p99": pct(xs, 99), "n": len(xs) }
   return out


def main():
   ap = argparse.ArgumentParser()
   ap.add_argument("out")
   ap.add_argument("--reps", type=int, default=10)
   ap.add_argument("--pods", type=int, default=50)
   ap.add_argument("--conc-reps", type=int, default=3)
   ap.add_argument("--pull-reps", type=int, default=3)
   ap.add_argument("--poll-seconds", type=int, default=60)
   ap.add_argument("--only", default="")
   ap.add_argument("--containerd2", action="store_true",
                   help="also containerd 2.x (test/bin/go-tools containerd2 "
                        "runc)")
   a = ap.parse_args()
   os.makedirs(a.out, exist_ok=True)
   tmp = tempfile.mkdtemp(prefix="ch-cri-bench.", dir="/tmp")
   rts = [Ch_Cri(os.path.join(tmp, "ch-cri")),
          Containerd(os.path.join(tmp, "containerd"))]
   if (a.containerd2):
      rts.append(Containerd2(os.path.join(tmp, "containerd2")))
   b = Bench(rts, a, tmp)
   t0 = time.monotonic()
   try:
      for rt in rts:
         rt.start()
      b.images_prepare()
      b.memory_idle()
      steps = [("lifecycle_grpc", b.lifecycle_grpc),
               ("lifecycle_crictl", b.lifecycle_crictl),
               ("exec_sync", b.exec_sync),
               ("concurrent_starts", b.concurrent_starts),
               ("polling", b.polling),
               ("list_many", b.list_many),
               ("pulls", b.pulls)]
      for (name, fn) in steps:
         if (not a.only or name in a.only.split(",")):
            fn()
   finally:
      for rt in rts:
         try:
            b.pods_down(rt)
         except Exception as x:
            info("%s: clean-up: %s", rt.name, x)
         rt.stop()
      if (not os.environ.get("BENCH_KEEP")):
         shutil.rmtree(tmp, ignore_errors=True)
   res = { "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "seconds": round(time.monotonic() - t0),
           "args": vars(a), "raw": b.res, "summary": summary(b.res) }
   with open(os.path.join(a.out, "results.json"), "w") as fp:
      json.dump(res, fp, indent=1, sort_keys=True)
   info("done in %d s: %s", res["seconds"], a.out)
   return 0


if (__name__ == "__main__"):
   sys.exit(main())
