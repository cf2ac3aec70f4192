# Container and pod statistics: from the container's cgroups where ch-cri
# made them (root), else from /proc (CPU time and memory of every process
# in the container's mount namespace); and the writable layer's size.

import os
import threading
import time

import fsutil
import misc

from cri_api.v1 import api_pb2 as pb


## Constants ##

CLK_TCK = os.sysconf("SC_CLK_TCK")
LAYER_TTL = 30          # seconds a writable-layer size is reused
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


## Globals ##

log = misc.log


# What ListPodSandboxMetrics reports per container: (name, help, type,
# value from a pb.ContainerStats). Values are whole numbers (the CRI's are
# uint64), so CPU time is in nanoseconds, named so.
METRICS = (
   ("container_cpu_usage_nanoseconds_total",
    "Cumulative CPU time consumed, in nanoseconds.", pb.MetricType.COUNTER,
    lambda s: s.cpu.usage_core_nano_seconds.value),
   ("container_memory_working_set_bytes",
    "Current working set (resident memory of the container's processes).",
    pb.MetricType.GAUGE, lambda s: s.memory.working_set_bytes.value),
   ("container_memory_rss",
    "Resident memory of the container's processes, in bytes.",
    pb.MetricType.GAUGE, lambda s: s.memory.rss_bytes.value),
   ("container_fs_usage_bytes",
    "Bytes used by the container's writable layer.", pb.MetricType.GAUGE,
    lambda s: s.writable_layer.used_bytes.value),
   ("container_fs_inodes_used",
    "Inodes used by the container's writable layer.", pb.MetricType.GAUGE,
    lambda s: s.writable_layer.inodes_used.value))
METRIC_LABELS = ("container", "pod", "namespace", "id")


## Functions ##

def metric_descriptors():
   "Return the pb.MetricDescriptor of each metric in METRICS."
   return [pb.MetricDescriptor(name=n, help=h, label_keys=METRIC_LABELS)
           for (n, h, _, _) in METRICS]




def psi_fill(s, psi, now):
   """Fill the PSI of ContainerStats s from Cgroups.psi()'s psi (cgroup v2;
      the kubelet reads it). The CRI's totals are microseconds, as in
      the kernel's files."""
   for (res, part) in (("cpu", s.cpu), ("memory", s.memory), ("io", None)):
      if (res not in psi):
         continue
      if (part is None):
         s.io.timestamp = now
         part = s.io
      for (kind, dst) in (("some", part.psi.Some), ("full", part.psi.Full)):
         d = psi[res].get(kind)
         if (d is None):
            continue
         dst.Total = int(d.get("total", 0))
         (dst.Avg10, dst.Avg60, dst.Avg300) = (d.get("avg10", 0.0),
                                               d.get("avg60", 0.0),
                                               d.get("avg300", 0.0))


def attrs_fill(a, id_, config):
   "Fill stats attributes a from a pod or container's ID and CRI config."
   a.id = id_
   a.metadata.CopyFrom(config.metadata)
   a.labels.update(config.labels)
   a.annotations.update(config.annotations)


def ns_map():
   """Return {mount namespace link: [(pid, stat fields after the name)]}
      for every process we may inspect: one pass over /proc."""
   out = dict()
   for d in os.listdir("/proc"):
      if (not d.isdigit()):
         continue
      try:
         ns = os.readlink("/proc/%s/ns/mnt" % d)
         with open("/proc/%s/stat" % d, "rb") as fp:
            stat = fp.read()
      except OSError:
         continue
      out.setdefault(ns, []).append(
         (int(d), stat[stat.rindex(b")") + 2:].split()))
   return out


## Classes ##

class Stats:
   """Answers the stats RPCs. self.lock guards the previous CPU samples
      (for usage_nano_cores) and the writable-layer size cache."""

   def __init__(self, store, pods, ctrs, cg=None):
      self.cg = cg if (cg is not None and cg.usable) else None
      self.store = store
      self.pods = pods
      self.ctrs = ctrs
      self.lock = threading.Lock()
      self.cpu_prev = dict()    # container ID -> (ns timestamp, cpu ns)
      self.layers = dict()      # container ID -> (monotonic, bytes, inodes)

   def container(self, c, nsmap, now):
      "Return pb.ContainerStats of container c."
      s = pb.ContainerStats()
      attrs_fill(s.attributes, c.id_, c.config)
      cpu_ns = 0
      rss = 0
      st = c.status
      if (c.state == pb.ContainerState.CONTAINER_RUNNING and st.get("mntns")):
         for (pid, f) in nsmap.get(st["mntns"], []):
            ticks = int(f[11]) + int(f[12])
            if (pid == st.get("pid")):
               ticks += int(f[13]) + int(f[14])   # its reaped children
            cpu_ns += ticks * 10**9 // CLK_TCK
            rss += int(f[21]) * PAGE_SIZE
      mem = (rss, rss, rss)
      cg = (self.cg.usage(self.ctrs.cg_key(c)) if self.cg is not None
            else None)
      if (cg is not None and c.state == pb.ContainerState.CONTAINER_RUNNING):
         # Counted once per page, and including what has exited.
         (cpu_ns, mem) = (cg[0], cg[1:])
      s.cpu.timestamp = now
      s.cpu.usage_core_nano_seconds.value = cpu_ns
      with self.lock:
         prev = self.cpu_prev.get(c.id_)
         self.cpu_prev[c.id_] = (now, cpu_ns)
      if (prev is not None and now > prev[0] and cpu_ns >= prev[1]):
         s.cpu.usage_nano_cores.value = ((cpu_ns - prev[1]) * 10**9
                                         // (now - prev[0]))
      s.memory.timestamp = now
      s.memory.usage_bytes.value = mem[0]
      s.memory.working_set_bytes.value = mem[1]
      s.memory.rss_bytes.value = mem[2]
      if (cg is not None and c.state == pb.ContainerState.CONTAINER_RUNNING):
         psi_fill(s, self.cg.psi(self.ctrs.cg_key(c)), now)
      (size, inodes) = self.layer(c)
      s.writable_layer.timestamp = now
      s.writable_layer.fs_id.mountpoint = self.store.dir_
      s.writable_layer.used_bytes.value = size
      s.writable_layer.inodes_used.value = inodes
      return s

   def layer(self, c):
      """Return (bytes, inodes) of c's writable layer, recomputed at most
         every LAYER_TTL seconds (walking it is not cheap)."""
      t = time.monotonic()
      with self.lock:
         hit = self.layers.get(c.id_)
      if (hit is not None and t - hit[0] < LAYER_TTL):
         return hit[1:]
      res = fsutil.tree_size(os.path.join(c.dir_, "rootfs", "upper"))
      with self.lock:
         self.layers[c.id_] = (t,) + res
      return res

   def forget(self):
      "Drop cached samples of containers that no longer exist."
      with self.store.lock:
         ids = set(self.store.containers)
      with self.lock:
         for d in (self.cpu_prev, self.layers):
            for k in [k for k in d if k not in ids]:
               del d[k]

   def containers(self, f):
      """Return pb.ContainerStats of the containers matching filter f (a
         ContainerStatsFilter or None)."""
      cf = None
      if (f is not None):
         cf = pb.ContainerFilter(id=f.id, pod_sandbox_id=f.pod_sandbox_id,
                                 label_selector=f.label_selector)
      nsmap = ns_map()
      now = time.time_ns()
      out = [self.container(c, nsmap, now) for c in self.ctrs.matching(cf)]
      self.forget()
      return out

   def pod(self, pod, nsmap, now):
      "Return pb.PodSandboxStats of pod: its containers', summed."
      s = pb.PodSandboxStats()
      attrs_fill(s.attributes, pod.id_, pod.config)
      cs = [self.container(c, nsmap, now) for c in self.ctrs.of_pod(pod.id_)]
      lx = s.linux
      lx.cpu.timestamp = now
      lx.cpu.usage_core_nano_seconds.value = sum(
         c.cpu.usage_core_nano_seconds.value for c in cs)
      lx.cpu.usage_nano_cores.value = sum(c.cpu.usage_nano_cores.value
                                          for c in cs)
      lx.memory.timestamp = now
      lx.memory.working_set_bytes.value = sum(
         c.memory.working_set_bytes.value for c in cs)
      lx.process.timestamp = now
      lx.process.process_count.value = sum(
         len(nsmap.get(c.status.get("mntns"), []))
         for c in self.ctrs.of_pod(pod.id_)
         if c.state == pb.ContainerState.CONTAINER_RUNNING)
      lx.containers.extend(cs)
      return s

   def pods_list(self, f):
      """Return pb.PodSandboxStats of the pods matching filter f (a
         PodSandboxStatsFilter or None)."""
      pf = None
      if (f is not None):
         pf = pb.PodSandboxFilter(id=f.id, label_selector=f.label_selector)
      nsmap = ns_map()
      now = time.time_ns()
      return [self.pod(p, nsmap, now) for p in self.pods.matching(pf)]

   ## Metrics (ListMetricDescriptors, ListPodSandboxMetrics) ##

   def metrics(self):
      """Return pb.PodSandboxMetrics of every ready pod, from the same
         samples as the stats (see METRICS)."""
      nsmap = ns_map()
      now = time.time_ns()
      out = []
      for pod in self.pods.matching(None):
         if (pod.state != pb.PodSandboxState.SANDBOX_READY):
            continue
         pm = pb.PodSandboxMetrics(pod_sandbox_id=pod.id_)
         md = pod.config.metadata
         for c in self.ctrs.of_pod(pod.id_):
            if (c.state != pb.ContainerState.CONTAINER_RUNNING):
               continue
            cs = self.container(c, nsmap, now)
            labels = [c.config.metadata.name, md.name, md.namespace, c.id_]
            cm = pb.ContainerMetrics(container_id=c.id_)
            for (name, _, type_, get) in METRICS:
               m = cm.metrics.add(name=name, timestamp=now,
                                  metric_type=type_, label_values=labels)
               m.value.value = get(cs)
            pm.container_metrics.append(cm)
         out.append(pm)
      self.forget()
      return out
