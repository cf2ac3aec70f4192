#!/usr/bin/env python3
# Kubelet-like polling against a live ch-cri: latency of each call and the
# server's CPU share, with N pods of one running container each; then
# ListContainers latency with many (created) containers.
#
# Usage: poll.py SOCKET SERVER_PID [--pods N] [--seconds S] [--many M]
# Needs registry.k8s.io/e2e-test-images/busybox:1.29-2 pullable.

import argparse
import statistics
import sys
import threading
import time

import grpc

from cri_api.v1 import api_pb2 as pb
from cri_api.v1 import api_pb2_grpc as pb_grpc


## Constants ##

IMAGE = "registry.k8s.io/e2e-test-images/busybox:1.29-2"
CLK_TCK = 100


## Functions ##

def cpu_s(pid):
   with open("/proc/%d/stat" % pid) as fp:
      f = fp.read().rsplit(")", 1)[1].split()
   return (int(f[11]) + int(f[12])) / CLK_TCK


def pct(xs, p):
   xs = sorted(xs)
   return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


def pods_make(rt, n, tag):
   ids = []
   for i in range(n):
      pc = pb.PodSandboxConfig()
      pc.metadata.name = "bench-%s-%d" % (tag, i)
      pc.metadata.namespace = "bench"
      pc.metadata.uid = "bench-%s-%d" % (tag, i)
      pid = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=pc)).pod_sandbox_id
      cc = pb.ContainerConfig(command=["sleep", "100000"])
      cc.metadata.name = "c"
      cc.image.image = IMAGE
      cid = rt.CreateContainer(pb.CreateContainerRequest(
         pod_sandbox_id=pid, config=cc, sandbox_config=pc)).container_id
      ids.append((pid, cid))
   return ids


def main():
   ap = argparse.ArgumentParser()
   ap.add_argument("socket")
   ap.add_argument("server_pid", type=int)
   ap.add_argument("--pods", type=int, default=50)
   ap.add_argument("--seconds", type=int, default=60)
   ap.add_argument("--many", type=int, default=0)
   a = ap.parse_args()
   ch = grpc.insecure_channel("unix://" + a.socket)
   rt = pb_grpc.RuntimeServiceStub(ch)
   im = pb_grpc.ImageServiceStub(ch)
   im.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=IMAGE)))
   t0 = time.monotonic()
   ids = pods_make(rt, a.pods, "p")
   for (_, cid) in ids:
      rt.StartContainer(pb.StartContainerRequest(container_id=cid))
   print("started %d pods in %.1f s" % (a.pods, time.monotonic() - t0))
   calls = { "ListPodSandbox": (0.6, lambda: rt.ListPodSandbox(
                                   pb.ListPodSandboxRequest())),
             "ListContainers": (0.6, lambda: rt.ListContainers(
                                   pb.ListContainersRequest())),
             "Status": (5, lambda: rt.Status(pb.StatusRequest())),
             "Version": (5, lambda: rt.Version(pb.VersionRequest())),
             "ListContainerStats": (10, lambda: rt.ListContainerStats(
                                       pb.ListContainerStatsRequest())),
             "ImageFsInfo": (10, lambda: im.ImageFsInfo(
                                pb.ImageFsInfoRequest())) }
   lat = { k: [] for k in calls }
   stop = time.monotonic() + a.seconds
   def poller(name, period, fn):
      while time.monotonic() < stop:
         t = time.perf_counter()
         fn()
         lat[name].append((time.perf_counter() - t) * 1000)
         time.sleep(period)
   c0 = cpu_s(a.server_pid)
   w0 = time.monotonic()
   ts = [threading.Thread(target=poller, args=(k, p, f))
         for (k, (p, f)) in calls.items()]
   for t in ts:
      t.start()
   for t in ts:
      t.join()
   share = (cpu_s(a.server_pid) - c0) / (time.monotonic() - w0) * 100
   print("polling %d s with %d pods: ch-cri CPU %.2f%% of a core"
         % (a.seconds, a.pods, share))
   print("%-20s %6s %8s %8s" % ("call", "n", "p50 ms", "p99 ms"))
   for (k, xs) in lat.items():
      print("%-20s %6d %8.2f %8.2f" % (k, len(xs), statistics.median(xs),
                                      pct(xs, 99)))
   with open("/proc/%d/status" % a.server_pid) as fp:
      rss = [l for l in fp if l.startswith("VmRSS")][0].split()[1]
   print("ch-cri RSS with %d pods: %d MB" % (a.pods, int(rss) // 1024))
   if (a.many):
      more = pods_make(rt, a.many, "m")
      xs = []
      for _ in range(50):
         t = time.perf_counter()
         n = len(rt.ListContainers(pb.ListContainersRequest()).containers)
         xs.append((time.perf_counter() - t) * 1000)
      print("ListContainers with %d containers: p50 %.2f ms, p99 %.2f ms"
            % (n, statistics.median(xs), pct(xs, 99)))
      ids += more
   for (pid, _) in ids:
      rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pid))
      rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pid))
   return 0


if (__name__ == "__main__"):
   sys.exit(main())
