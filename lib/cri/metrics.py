# Prometheus metrics (ch-cri serve --metrics): RPCs, image pulls, pods and
# containers by state, keepers, streaming sessions.

import ipaddress
import time

import grpc
import prometheus_client
from prometheus_client import core

import misc

from cri_api.v1 import api_pb2 as pb


## Constants ##

# Latency buckets, seconds: RPCs take from under a millisecond (lists) to
# minutes (a stop with a grace period); pulls from seconds to many minutes.
RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
               2.5, 5, 10, 30, 60, 300)
PULL_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


## Globals ##

log = misc.log

# Metrics are module-level objects, prometheus_client's way: the modules
# that count (images, streaming) then need no handle passed down to them.
# They count whether or not an Exporter serves them, which costs a lock
# and an addition per event. Our own registry, not the library's default,
# so that nothing imported by chance shows up.
REGISTRY = prometheus_client.CollectorRegistry()
# A *_created series beside every counter and histogram would double what
# a scrape carries, for a start time that process_start_time_seconds has.
prometheus_client.disable_created_metrics()
prometheus_client.ProcessCollector(registry=REGISTRY)

RPCS = prometheus_client.Counter(
   "ch_cri_grpc_requests", "CRI RPCs handled, by method and status code.",
   ["method", "code"], registry=REGISTRY)
RPC_SECONDS = prometheus_client.Histogram(
   "ch_cri_grpc_request_duration_seconds",
   "Time to handle CRI RPCs, by method and status code.",
   ["method", "code"], buckets=RPC_BUCKETS, registry=REGISTRY)
PULLS = prometheus_client.Counter(
   "ch_cri_image_pulls", "Image pulls from one registry endpoint, by "
   "result (ok, error).", ["result"], registry=REGISTRY)
PULL_BYTES = prometheus_client.Counter(
   "ch_cri_image_pull_bytes", "Bytes of images pulled, unpacked.",
   registry=REGISTRY)
PULL_SECONDS = prometheus_client.Histogram(
   "ch_cri_image_pull_duration_seconds", "Time of image pulls from one "
   "registry endpoint, by result (ok, error).", ["result"],
   buckets=PULL_BUCKETS, registry=REGISTRY)
KEEPER_DEATHS = prometheus_client.Counter(
   "ch_cri_keeper_deaths", "Pod keepers seen to die while their pod was "
   "not stopped.", registry=REGISTRY)
STREAMS = prometheus_client.Gauge(
   "ch_cri_streaming_sessions", "Streaming sessions open, by kind (exec, "
   "attach, portforward).", ["kind"], registry=REGISTRY)


## Functions ##

def code_name(context, ok):
   """Return the name of the status code the RPC ended with; ok says
      whether its method returned rather than raised."""
   c = context.code()   # set by abort() and set_code() only
   if (c is None):
      if (ok):
         c = grpc.StatusCode.OK
      elif (not context.is_active()):
         c = grpc.StatusCode.CANCELLED
      else:
         c = grpc.StatusCode.UNKNOWN   # what gRPC answers to an exception
   return c.name if isinstance(c, grpc.StatusCode) else str(c)


def keeper_deaths_watch(state):
   """Count in KEEPER_DEATHS the keepers store.Store state finds dead while
      their pod is not stopped. It calls keeper_gone() also after a stop,
      and again for a keeper already dead: only a pod alive until then
      counts."""
   inner = state.keeper_gone
   def keeper_gone(pod):
      if (pod.alive and pod.stopped_at is None):
         KEEPER_DEATHS.inc()
      return inner(pod)
   state.keeper_gone = keeper_gone


def pull_observe(seconds, size):
   """Record a pull from one endpoint that took seconds; size is the
      image's in bytes, or None if the pull failed."""
   result = "error" if size is None else "ok"
   PULLS.labels(result).inc()
   PULL_SECONDS.labels(result).observe(seconds)
   if (size is not None):
      PULL_BYTES.inc(size)


def state_name(enum, value, prefix):
   """Return the short lower-case name of enum value, prefix removed.

      >>> state_name(pb.ContainerState, 1, "CONTAINER_")
      'running'
   """
   return enum.Name(value).removeprefix(prefix).lower()


## Classes ##

class Exporter:
   """The metrics endpoint: HTTP on (host, port) address serving REGISTRY
      at /metrics, and what counts only while it runs: the RPC
      interceptor (self.interceptor, for grpc.server), pods and
      containers of store.Store state, and keeper deaths."""

   def __init__(self, address, state):
      (host, port) = address
      self.collector = State_Collector(state)
      REGISTRY.register(self.collector)
      try:
         (self.httpd, _) = prometheus_client.start_http_server(
            port, host, registry=REGISTRY)
      except OSError:
         REGISTRY.unregister(self.collector)
         raise
      self.interceptor = Rpc_Metrics()
      for kind in ("exec", "attach", "portforward"):
         STREAMS.labels(kind)   # a series from the start, not first use
      keeper_deaths_watch(state)
      (host, port) = self.httpd.server_address[:2]
      self.url = "http://%s:%d/metrics" % (("[%s]" % host if ":" in host
                                            else host), port)
      try:
         loopback_p = ipaddress.ip_address(host).is_loopback
      except ValueError:
         loopback_p = False
      if (loopback_p):
         log.info("metrics on %s", self.url)
      else:
         log.warning("metrics on %s, open to other hosts (no "
                     "authentication)", self.url)

   def stop(self):
      self.httpd.shutdown()
      self.httpd.server_close()
      REGISTRY.unregister(self.collector)


class Rpc_Metrics(grpc.ServerInterceptor):
   """Server interceptor counting and timing every RPC, by method and the
      status code it ends with. Put it first among the interceptors, so
      that it sees the requests the others refuse."""

   def intercept_service(self, continuation, details):
      h = continuation(details)
      if (h is None or h.request_streaming):
         return h   # unknown method (gRPC answers it); CRI has no others
      method = details.method.rsplit("/", 1)[-1]
      def observe(context, ok, t0):
         code = code_name(context, ok)
         RPCS.labels(method, code).inc()
         RPC_SECONDS.labels(method, code).observe(time.monotonic() - t0)
      if (h.response_streaming):
         inner = h.unary_stream
         def stream(request, context):
            t0 = time.monotonic()
            ok = False
            try:
               yield from inner(request, context)
               ok = True
            finally:
               observe(context, ok, t0)
         return grpc.unary_stream_rpc_method_handler(
            stream, request_deserializer=h.request_deserializer,
            response_serializer=h.response_serializer)
      inner = h.unary_unary
      def unary(request, context):
         t0 = time.monotonic()
         ok = False
         try:
            res = inner(request, context)
            ok = True
            return res
         finally:
            observe(context, ok, t0)
      return grpc.unary_unary_rpc_method_handler(
         unary, request_deserializer=h.request_deserializer,
         response_serializer=h.response_serializer)


class State_Collector:
   """Pods and containers by state, live keepers and OOM-killed containers,
      counted at each scrape from store.Store state's memory (never from
      disk: a scrape must not cost a pod's worth of file reads)."""

   def __init__(self, state):
      self.state = state

   def collect(self):
      st = self.state
      with st.lock:   # guards the dicts and the containers' status
         pods = [(p.state, p.alive) for p in st.pods.values()]
         ctrs = [(c.state, c.status.get("reason"))
                 for c in st.containers.values()]
      g = core.GaugeMetricFamily("ch_cri_pods", "Pods by state (ready, "
                                 "notready).", labels=["state"])
      for v in pb.PodSandboxState.values():
         g.add_metric([state_name(pb.PodSandboxState, v, "SANDBOX_")],
                      sum(1 for (s, _) in pods if s == v))
      yield g
      g = core.GaugeMetricFamily("ch_cri_containers", "Containers by state "
                                 "(created, running, exited, unknown).",
                                 labels=["state"])
      for v in pb.ContainerState.values():
         g.add_metric([state_name(pb.ContainerState, v, "CONTAINER_")],
                      sum(1 for (s, _) in ctrs if s == v))
      yield g
      yield core.GaugeMetricFamily(
         "ch_cri_keepers_alive", "Pod keepers running.",
         value=sum(1 for (_, a) in pods if a))
      yield core.GaugeMetricFamily(
         "ch_cri_containers_oom_killed", "Containers whose status says "
         "OOMKilled (until they are removed).",
         value=sum(1 for (_, r) in ctrs if r == "OOMKilled"))
