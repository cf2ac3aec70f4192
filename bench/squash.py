#!/usr/bin/env python3
# Container start from a SquashFS image against the same image as a
# directory, on one ch-cri (root): CreateContainer + StartContainer, over
# gRPC, alternating the two forms. "warm": another container of the image
# keeps its one mount up (the usual case on a busy node); "cold": no
# container uses the image, so the start includes mounting it (and, when
# the last container goes, unmounting). Also the one-time cost of making
# the SquashFS file from the directory.
#
# Usage: sudo bench/squash.py OUT_DIR [--reps N] [--image REF]
#
# Environment as for bench.py (its Ch_Cri runs the server).

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
from bench import RPC_TIMEOUT, SLEEPER, info, pb  # noqa: E402


## Constants ##

ANNOTATION = "ch-cri.charliecloud.io/image-format"
IMAGE = "registry.k8s.io/e2e-test-images/nginx:1.14-2"


## Classes ##

class Squash_Bench:

   def __init__(self, rt, image, tmp):
      self.rt = rt
      self.image = image
      self.tmp = tmp
      self.seq = 0
      self.pods = dict()

   def pod(self, form):
      "Return (ID, config) of this run's pod whose images are form."
      if (form not in self.pods):
         pc = pb.PodSandboxConfig(log_directory=os.path.join(
            self.tmp, "logs", form))
         pc.metadata.name = pc.metadata.uid = "sq-" + form
         pc.metadata.namespace = "bench"
         pc.annotations[ANNOTATION] = form
         pc.linux.security_context.namespace_options.network = \
            pb.NamespaceMode.NODE
         id_ = self.rt.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=pc),
                                        timeout=RPC_TIMEOUT).pod_sandbox_id
         self.pods[form] = (id_, pc)
      return self.pods[form]

   def start(self, form):
      "Create and start a container from form; return (ID, seconds)."
      (pid, pc) = self.pod(form)
      self.seq += 1
      cc = pb.ContainerConfig(command=SLEEPER, log_path="c%d.log" % self.seq)
      cc.metadata.name = "c%d" % self.seq
      cc.image.image = self.image
      t0 = time.perf_counter()
      cid = self.rt.rt.CreateContainer(pb.CreateContainerRequest(
         pod_sandbox_id=pid, config=cc, sandbox_config=pc),
         timeout=RPC_TIMEOUT).container_id
      self.rt.rt.StartContainer(pb.StartContainerRequest(container_id=cid),
                                timeout=RPC_TIMEOUT)
      return (cid, time.perf_counter() - t0)

   def remove(self, cid):
      self.rt.rt.StopContainer(pb.StopContainerRequest(container_id=cid,
                                                       timeout=10),
                               timeout=RPC_TIMEOUT)
      self.rt.rt.RemoveContainer(pb.RemoveContainerRequest(
         container_id=cid), timeout=RPC_TIMEOUT)

   def run(self, reps):
      res = { "warm": { "dir": [], "squash": [] },
              "cold": { "dir": [], "squash": [] } }
      self.rt.im.PullImage(pb.PullImageRequest(
         image=pb.ImageSpec(image=self.image)), timeout=600)
      # The first SquashFS container makes the file from the directory.
      (c, s) = self.start("squash")
      res["make_and_first_start"] = s
      self.remove(c)
      for i in range(reps):
         for form in (("dir", "squash") if i % 2 == 0
                      else ("squash", "dir")):
            (c, s) = self.start(form)
            res["cold"][form].append(s)
            self.remove(c)
      keep = [self.start(f)[0] for f in ("dir", "squash")]
      for i in range(reps):
         for form in (("dir", "squash") if i % 2 == 0
                      else ("squash", "dir")):
            (c, s) = self.start(form)
            res["warm"][form].append(s)
            self.remove(c)
      for c in keep:
         self.remove(c)
      return res

   def pods_down(self):
      for (id_, _) in self.pods.values():
         self.rt.rt.StopPodSandbox(pb.StopPodSandboxRequest(
            pod_sandbox_id=id_), timeout=RPC_TIMEOUT)
         self.rt.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(
            pod_sandbox_id=id_), timeout=RPC_TIMEOUT)


## Functions ##

def main():
   ap = argparse.ArgumentParser()
   ap.add_argument("out")
   ap.add_argument("--reps", type=int, default=15)
   ap.add_argument("--image", default=IMAGE)
   a = ap.parse_args()
   os.makedirs(a.out, exist_ok=True)
   tmp = tempfile.mkdtemp(prefix="ch-cri-bench-squash.", dir="/tmp")
   rt = bench.Ch_Cri(os.path.join(tmp, "ch-cri"))
   sb = Squash_Bench(rt, a.image, tmp)
   try:
      rt.start()
      res = sb.run(a.reps)
   finally:
      try:
         sb.pods_down()
      except Exception as x:
         info("clean-up: %s", x)
      rt.stop()
      if (not os.environ.get("BENCH_KEEP")):
         shutil.rmtree(tmp, ignore_errors=True)
   med = statistics.median
   summary = { k: { "dir_ms": round(med(v["dir"]) * 1000, 1),
                    "squash_ms": round(med(v["squash"]) * 1000, 1),
                    "ratio": round(med(v["squash"]) / med(v["dir"]), 2) }
               for (k, v) in res.items() if isinstance(v, dict) }
   summary["make_and_first_start_s"] = round(res["make_and_first_start"], 2)
   out = { "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "image": a.image, "reps": a.reps, "raw": res,
           "summary": summary }
   with open(os.path.join(a.out, "squash.json"), "w") as fp:
      json.dump(out, fp, indent=1, sort_keys=True)
   for k in ("warm", "cold"):
      s = summary[k]
      print("start %-4s (median of %d): directory %.1f ms, SquashFS %.1f ms:"
            " %.2fx" % (k, a.reps, s["dir_ms"], s["squash_ms"], s["ratio"]))
   print("first SquashFS start, making the file: %.2f s"
         % summary["make_and_first_start_s"])
   info("done: %s", os.path.join(a.out, "squash.json"))
   return 0


if (__name__ == "__main__"):
   sys.exit(main())
