# The CRI RuntimeService: thin methods over cri.sandbox and cri.container;
# what is not implemented yet answers UNIMPLEMENTED with a message.

import json
import os
import queue
import time

import grpc

import misc
import cri.errors as err
import cri.sandbox
import cri.stats

from cri_api.v1 import api_pb2 as pb
from cri_api.v1 import api_pb2_grpc as pb_grpc


## Constants ##

API_VERSION = "v1"
# The CRI version string the kubelet and critest send and expect back.
KUBE_API_VERSION = "0.1.0"
RUNTIME_NAME = "ch-cri"

EVENT_STREAMS_MAX = 8
PENDING = { "CheckpointContainer": "checkpointing is not supported "
                                   "(Charliecloud has no checkpoint/restore)" }


## Globals ##

log = misc.log


## Classes ##

class Runtime_Servicer(pb_grpc.RuntimeServiceServicer):
   """The CRI RuntimeService. info is a dict of facts for verbose Status
      (versions, features, paths), computed once at start-up (but the pod
      network's, computed at each call)."""

   def __init__(self, version, cgroup_driver, info, pods, ctrs, stats,
                streams=None, net=None):
      self.streams = streams
      self.pods = pods
      self.ctrs = ctrs
      self.stats = stats
      self.version = version
      self.cgroup_driver = cgroup_driver
      self.net = net
      self.info = info
      # user_namespaces: a root ch-cri gives hostUsers: false pods a user
      # namespace with the kubelet's mappings (inside it ch-run still
      # makes its own one-ID namespace per container; see ch-cri(1)).
      self.handlers = [pb.RuntimeHandler(
         name="", features=pb.RuntimeHandlerFeatures(
            recursive_read_only_mounts=True,
            user_namespaces=os.geteuid() == 0))]

   @err.rpc
   def Version(self, request, context):
      return pb.VersionResponse(version=KUBE_API_VERSION,
                                runtime_name=RUNTIME_NAME,
                                runtime_version=self.version,
                                runtime_api_version=API_VERSION)

   @err.rpc
   def Status(self, request, context):
      # NetworkReady can change: the kubelet's pod CIDR arrives.
      net = self.net
      nr = pb.RuntimeCondition(type="NetworkReady", status=True)
      if (net is None or not net.ready):
         nr = pb.RuntimeCondition(
            type="NetworkReady", status=False, reason="NoPodNetwork",
            message=("pods get loopback only: %s"
                     % (net.reason if net else "no network configured")))
      status = pb.RuntimeStatus(conditions=[
         pb.RuntimeCondition(type="RuntimeReady", status=True), nr])
      res = pb.StatusResponse(status=status, runtime_handlers=self.handlers)
      res.features.supplemental_groups_policy = False
      if (request.verbose):
         # The network's source changes when the kubelet's pod CIDR comes.
         res.info["info"] = json.dumps(dict(
            self.info, network=(net.source if net is not None and net.ready
                                else None)), sort_keys=True)
      return res

   @err.rpc
   def RuntimeConfig(self, request, context):
      d = (pb.CgroupDriver.SYSTEMD if self.cgroup_driver == "systemd"
           else pb.CgroupDriver.CGROUPFS)
      return pb.RuntimeConfigResponse(
         linux=pb.LinuxRuntimeConfiguration(cgroup_driver=d))

   @err.rpc
   def UpdateRuntimeConfig(self, request, context):
      # The kubelet sends the node's pod CIDR (from the controller
      # manager's allocation) here: the built-in network takes it. It may
      # be two, IPv4 and IPv6, comma-separated; the first is used.
      cidrs = request.runtime_config.network_config.pod_cidr
      if (not cidrs):
         return pb.UpdateRuntimeConfigResponse()
      cidr = cidrs.split(",")[0].strip()
      try:
         if (getattr(self.net, "pod_cidr_set", None) is None):
            log.info("pod CIDR %s from the kubelet not used: %s", cidr,
                     getattr(self.net, "reason", None)
                     or "pods of an unprivileged ch-cri have no pod IP")
         else:
            self.net.pod_cidr_set(cidr)
      except ValueError as x:
         raise err.Invalid_Argument("runtime_config.network_config.pod_cidr: %s" % x)
      return pb.UpdateRuntimeConfigResponse()


   ## Pods ##

   @err.rpc
   def RunPodSandbox(self, request, context):
      id_ = self.pods.run(request.config, request.runtime_handler)
      return pb.RunPodSandboxResponse(pod_sandbox_id=id_)

   @err.rpc
   def StopPodSandbox(self, request, context):
      self.pods.stop(request.pod_sandbox_id)
      return pb.StopPodSandboxResponse()

   @err.rpc
   def RemovePodSandbox(self, request, context):
      pod = self.pods.find(request.pod_sandbox_id)
      if (pod is not None):
         self.pods.stop(pod.id_)
         for c in self.ctrs.of_pod(pod.id_):
            self.ctrs.remove(c.id_)
         self.pods.remove(pod)
      return pb.RemovePodSandboxResponse()

   @err.rpc
   def PodSandboxStatus(self, request, context):
      pod = self.pods.get(request.pod_sandbox_id)
      res = pb.PodSandboxStatusResponse(status=pod.pb_status(),
                                        timestamp=time.time_ns())
      if (request.verbose):
         res.info.update(self.pods.status_info(pod))
         res.containers_statuses.extend(c.pb_status() for c in
                                        self.ctrs.of_pod(pod.id_))
      return res

   @err.rpc
   def ListPodSandbox(self, request, context):
      f = request.filter if request.HasField("filter") else None
      return self.pods.list_response(f)

   ## Containers ##

   @err.rpc
   def CreateContainer(self, request, context):
      id_ = self.ctrs.create(request.pod_sandbox_id, request.config)
      return pb.CreateContainerResponse(container_id=id_)

   @err.rpc
   def StartContainer(self, request, context):
      self.ctrs.start(request.container_id)
      return pb.StartContainerResponse()

   @err.rpc
   def StopContainer(self, request, context):
      self.ctrs.stop(request.container_id, request.timeout)
      return pb.StopContainerResponse()

   @err.rpc
   def RemoveContainer(self, request, context):
      self.ctrs.remove(request.container_id)
      return pb.RemoveContainerResponse()

   @err.rpc
   def ListContainers(self, request, context):
      f = request.filter if request.HasField("filter") else None
      return self.ctrs.list_response(f)

   @err.rpc
   def ContainerStatus(self, request, context):
      c = self.ctrs.get(request.container_id)
      res = pb.ContainerStatusResponse(status=c.pb_status())
      if (request.verbose):
         res.info["info"] = json.dumps({ "spec": c.spec, "dir": c.dir_,
                                         "status": c.status,
                                         "pid": c.status.get("pid"),
                                         "sandboxID": c.pod_id },
                                       sort_keys=True)
      return res

   def GetContainerEvents(self, request, context):
      """Stream container events until the client goes away (a server
         stream: errors end it, so err.rpc does not apply)."""
      hub = self.ctrs.store.events
      q = hub.subscribe(EVENT_STREAMS_MAX)
      if (q is None):
         # Each stream holds a server thread: keep most for other RPCs.
         context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                       "GetContainerEvents: %d streams already open"
                       % EVENT_STREAMS_MAX)
      types = { "created": pb.ContainerEventType.CONTAINER_CREATED_EVENT,
                "started": pb.ContainerEventType.CONTAINER_STARTED_EVENT,
                "stopped": pb.ContainerEventType.CONTAINER_STOPPED_EVENT,
                "deleted": pb.ContainerEventType.CONTAINER_DELETED_EVENT }
      try:
         while context.is_active():
            try:
               e = q.get(timeout=1)
            except queue.Empty:
               continue
            # A pod's own events carry its ID (as a pause container's
            # would) and its containers; a container's, itself.
            pod_p = e.ctr_id is None
            ev = pb.ContainerEventResponse(
               container_id=e.pod_id if pod_p else e.ctr_id,
               container_event_type=types[e.kind], created_at=e.time_ns)
            pod = e.subject if pod_p else self.pods.find(e.pod_id)
            if (pod is not None):
               ev.pod_sandbox_status.CopyFrom(pod.pb_status())
            if (pod_p):
               ev.containers_statuses.extend(
                  x.pb_status() for x in self.ctrs.of_pod(e.pod_id))
            elif (e.kind != "deleted"):
               ev.containers_statuses.append(e.subject.pb_status())
            yield ev
      finally:
         hub.unsubscribe(q)

   @err.rpc
   def UpdateContainerResources(self, request, context):
      self.ctrs.resources_update(request.container_id, request.linux)
      return pb.UpdateContainerResourcesResponse()

   @err.rpc
   def UpdatePodSandboxResources(self, request, context):
      self.pods.resources_update(
         request.pod_sandbox_id,
         cri.sandbox.field_or_none(request, "overhead"),
         cri.sandbox.field_or_none(request, "resources"))
      return pb.UpdatePodSandboxResourcesResponse()

   @err.rpc
   def ReopenContainerLog(self, request, context):
      self.ctrs.reopen_log(request.container_id)
      return pb.ReopenContainerLogResponse()

   @err.rpc
   def ExecSync(self, request, context):
      (out, err_, code) = self.ctrs.exec_sync(request.container_id,
                                              request.cmd, request.timeout)
      return pb.ExecSyncResponse(stdout=out, stderr=err_, exit_code=code)


   ## Streaming ##

   def streams_get(self):
      if (self.streams is None):
         raise err.Unavailable("streaming server not running")
      return self.streams

   @err.rpc
   def Exec(self, request, context):
      c = self.ctrs.get(request.container_id)
      self.ctrs.running_pid(c)
      return pb.ExecResponse(url=self.streams_get().exec_url(request))

   @err.rpc
   def Attach(self, request, context):
      c = self.ctrs.get(request.container_id)
      self.ctrs.running_pid(c)
      return pb.AttachResponse(url=self.streams_get().attach_url(request))

   @err.rpc
   def PortForward(self, request, context):
      pod = self.pods.get(request.pod_sandbox_id)
      if (pod.state != pb.PodSandboxState.SANDBOX_READY):
         raise err.Failed_Precondition("pod sandbox not ready: %s"
                                       % pod.id_)
      return pb.PortForwardResponse(
         url=self.streams_get().portforward_url(request))

   ## Stats ##

   @err.rpc
   def ContainerStats(self, request, context):
      c = self.ctrs.get(request.container_id)
      stats = self.stats.containers(pb.ContainerStatsFilter(id=c.id_))
      if (not stats):   # removed since get()
         raise err.Not_Found("container not found: %s" % c.id_)
      return pb.ContainerStatsResponse(stats=stats[0])

   @err.rpc
   def ListContainerStats(self, request, context):
      f = request.filter if request.HasField("filter") else None
      return pb.ListContainerStatsResponse(stats=self.stats.containers(f))

   @err.rpc
   def PodSandboxStats(self, request, context):
      p = self.pods.get(request.pod_sandbox_id)
      stats = self.stats.pods_list(pb.PodSandboxStatsFilter(id=p.id_))
      if (not stats):   # removed since get()
         raise err.Not_Found("pod sandbox not found: %s" % p.id_)
      return pb.PodSandboxStatsResponse(stats=stats[0])

   @err.rpc
   def ListMetricDescriptors(self, request, context):
      return pb.ListMetricDescriptorsResponse(
         descriptors=cri.stats.metric_descriptors())

   @err.rpc
   def ListPodSandboxMetrics(self, request, context):
      return pb.ListPodSandboxMetricsResponse(
         pod_metrics=self.stats.metrics())

   @err.rpc
   def ListPodSandboxStats(self, request, context):
      f = request.filter if request.HasField("filter") else None
      return pb.ListPodSandboxStatsResponse(stats=self.stats.pods_list(f))


for (name, why) in PENDING.items():
   setattr(Runtime_Servicer, name, err.unimplemented(name, why))
