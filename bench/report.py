#!/usr/bin/env python3
# Turn bench.py's results.json into a markdown table (results.md) of
# medians, ch-cri/containerd ratios and the targets, and a PNG chart
# (results.png) of the ratios. Needs matplotlib only for the chart (Debian's
# python3-matplotlib); without it the table is still written.
#
# Usage: report.py OUT_DIR

import json
import os
import platform
import sys


## Constants ##

# figure -> (statistic, target on ch-cri's value or ratio, description)
TARGETS = {
   "grpc cycle ms": ("ratio", 0.5, "whole cycle <= 0.5x containerd"),
   "grpc StartContainer ms": ("value", 40, "StartContainer <= 40 ms"),
   "50 concurrent pods failures": ("value", 0, "no failure"),
   "polling CPU % of a core": ("value", 1, "<= 1% of a core"),
   "poll ListPodSandbox ms": ("p99", 5, "p99 <= 5 ms"),
   "poll ListContainers ms": ("p99", 5, "p99 <= 5 ms"),
   "RSS idle MB": ("value", 60, "<= 60 MB"),
   "RSS with 50 pods MB": ("value", 60, "<= 60 MB"),
   "per-pod process RSS MB": ("value", 8, "<= 8 MB"),
   "per-pod process PSS MB": ("value", 8, "<= 8 MB (PSS)"),
   "pull small image s": ("ratio", 1.5, "<= 1.5x containerd"),
   "pull 100 MB image s": ("ratio", 0.8, "<= 0.8x containerd"),
}
ORDER = ["grpc %s ms" % s for s in (
   "RunPodSandbox", "CreateContainer", "StartContainer", "StopContainer",
   "RemoveContainer", "StopPodSandbox", "RemovePodSandbox", "cycle")] + \
   ["crictl %s ms" % s for s in (
      "runp", "create", "start", "stop", "rm", "stopp", "rmp", "cycle")]
LABELS = { "per-pod process RSS MB": "per-pod RSS MB (keeper / shim+pause)",
           "per-pod process PSS MB": "per-pod PSS MB (keeper / shim+pause)" }


## Functions ##

def fmt(x):
   if (x is None):
      return "-"
   if (abs(x) >= 100):
      return "%.0f" % x
   if (abs(x) >= 10):
      return "%.1f" % x
   return "%.2f" % x


def rows(res):
   "Yield (figure, ch-cri, containerd, ratio, p99s, target, met)."
   s = res["summary"]
   keys = [k for k in ORDER if k in s] + sorted(k for k in s
                                                if k not in ORDER)
   for k in keys:
      a = s[k].get("ch-cri", {})
      b = s[k].get("containerd", {})
      (ma, mb) = (a.get("median"), b.get("median"))
      ratio = ma / mb if (ma is not None and mb) else None
      p99 = ("%s / %s" % (fmt(a.get("p99")), fmt(b.get("p99")))
             if k.startswith("poll ") or k.startswith("ListContainers")
             else "")
      (target, met) = ("", "")
      if (k in TARGETS):
         (stat, limit, target) = TARGETS[k]
         v = { "ratio": ratio, "value": ma, "p99": a.get("p99") }[stat]
         met = "" if v is None else ("yes" if v <= limit else "no")
      yield (LABELS.get(k, k), ma, mb, ratio, p99, target, met)


def table(res):
   out = ["| figure (median) | ch-cri | containerd | ratio | p99 ch-cri / "
          "containerd | target | met |", "|---|---|---|---|---|---|---|"]
   for (k, a, b, r, p99, t, m) in rows(res):
      out.append("| %s | %s | %s | %s | %s | %s | %s |"
                 % (k, fmt(a), fmt(b), fmt(r), p99, t, m))
   return "\n".join(out) + "\n" + table2(res)


def table2(res):
   """Return the ratios against containerd 2.x, if it ran (bench.py
      --containerd2), as a second table."""
   s = res["summary"]
   if (not any("containerd2" in v for v in s.values())):
      return ""
   names = { LABELS.get(k, k): k for k in s }   # label -> figure
   out = ["", "Against containerd 2.x (runc 1.5), same run:", "",
          "| figure (median) | ch-cri | containerd 2.x | ratio |",
          "|---|---|---|---|"]
   for (k, a, _, _, _, _, _) in rows(res):
      b = s[names.get(k, k)].get("containerd2", {}).get("median")
      out.append("| %s | %s | %s | %s |"
                 % (k, fmt(a), fmt(b),
                    fmt(a / b if (a is not None and b) else None)))
   return "\n".join(out) + "\n"


def machine():
   with open("/proc/cpuinfo") as fp:
      cpus = [l.split(":", 1)[1].strip() for l in fp
              if l.startswith("model name")]
   with open("/proc/meminfo") as fp:
      mem = int(fp.readline().split()[1]) // 1024 // 1024
   return ("%d x %s, %d GiB, kernel %s, Python %s"
           % (len(cpus), cpus[0] if cpus else "?", mem, platform.release(),
              platform.python_version()))


def chart(res, path):
   try:
      import matplotlib
      matplotlib.use("Agg")
      import matplotlib.pyplot as plt
   except ImportError:
      print("report.py: no matplotlib; no chart (apt-get install "
            "python3-matplotlib)", file=sys.stderr)
      return False
   rs = [(k, r) for (k, _, _, r, _, _, _) in rows(res)
         if r is not None and r > 0 and "failures" not in k]
   fig, ax = plt.subplots(figsize=(9, 0.32 * len(rs) + 1.5))
   ys = range(len(rs))
   ax.barh(ys, [r for (_, r) in rs],
           color=["tab:green" if r <= 1 else "tab:red" for (_, r) in rs])
   ax.set_yticks(list(ys))
   ax.set_yticklabels([k for (k, _) in rs], fontsize=8)
   ax.invert_yaxis()
   ax.axvline(1, color="black", linewidth=0.8)
   ax.set_xscale("log")
   ax.set_xlabel("ch-cri / containerd (median; < 1: ch-cri is lower)")
   ax.set_title("ch-cri vs containerd 1.6 (%s)" % res["when"], fontsize=10)
   fig.tight_layout()
   fig.savefig(path, dpi=100)
   return True


def main():
   out = sys.argv[1]
   with open(os.path.join(out, "results.json")) as fp:
      res = json.load(fp)
   md = ("Run %s (%d s), %s. Medians of alternating rounds; ratio = "
         "ch-cri / containerd.\n\n" % (res["when"], res["seconds"],
                                       machine())) + table(res)
   with open(os.path.join(out, "results.md"), "w") as fp:
      fp.write(md)
   print(md)
   if (chart(res, os.path.join(out, "results.png"))):
      print("chart: %s" % os.path.join(out, "results.png"))
   return 0


if (__name__ == "__main__"):
   sys.exit(main())
