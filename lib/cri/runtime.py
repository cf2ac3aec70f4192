# The CRI RuntimeService: runtime information now; pods and containers
# answer UNIMPLEMENTED until they land.

import json

import misc
import cri.errors as err

from cri_api.v1 import api_pb2 as pb
from cri_api.v1 import api_pb2_grpc as pb_grpc


## Constants ##

API_VERSION = "v1"
# The CRI version string the kubelet and critest send and expect back.
KUBE_API_VERSION = "0.1.0"
RUNTIME_NAME = "ch-cri"

NOT_YET = "pods and containers are not implemented in this ch-cri version"
PENDING = { "RunPodSandbox": NOT_YET, "StopPodSandbox": NOT_YET,
            "RemovePodSandbox": NOT_YET, "PodSandboxStatus": NOT_YET,
            "ListPodSandbox": NOT_YET, "CreateContainer": NOT_YET,
            "StartContainer": NOT_YET, "StopContainer": NOT_YET,
            "RemoveContainer": NOT_YET, "ListContainers": NOT_YET,
            "ContainerStatus": NOT_YET, "UpdateContainerResources": NOT_YET,
            "ReopenContainerLog": NOT_YET, "ExecSync": NOT_YET,
            "Exec": NOT_YET, "Attach": NOT_YET, "PortForward": NOT_YET,
            "ContainerStats": NOT_YET, "ListContainerStats": NOT_YET,
            "PodSandboxStats": NOT_YET, "ListPodSandboxStats": NOT_YET,
            "GetContainerEvents": NOT_YET, "ListMetricDescriptors": NOT_YET,
            "ListPodSandboxMetrics": NOT_YET,
            "UpdatePodSandboxResources": NOT_YET,
            "CheckpointContainer": "checkpointing is not supported "
                                   "(Charliecloud has no checkpoint/restore)" }


## Globals ##

log = misc.log


## Classes ##

class Runtime_Servicer(pb_grpc.RuntimeServiceServicer):
   """The CRI RuntimeService. info is a dict of facts for verbose Status
      (versions, features, paths), computed once at start-up."""

   def __init__(self, version, cgroup_driver, info):
      self.version = version
      self.cgroup_driver = cgroup_driver
      self.info_json = json.dumps(info, sort_keys=True)
      self.status = pb.RuntimeStatus(conditions=[
         pb.RuntimeCondition(type="RuntimeReady", status=True),
         pb.RuntimeCondition(type="NetworkReady", status=True)])
      # No feature below is supported yet; advertise none rather than lie.
      self.handlers = [pb.RuntimeHandler(
         name="", features=pb.RuntimeHandlerFeatures(
            recursive_read_only_mounts=False, user_namespaces=False))]

   @err.rpc
   def Version(self, request, context):
      return pb.VersionResponse(version=KUBE_API_VERSION,
                                runtime_name=RUNTIME_NAME,
                                runtime_version=self.version,
                                runtime_api_version=API_VERSION)

   @err.rpc
   def Status(self, request, context):
      res = pb.StatusResponse(status=self.status,
                              runtime_handlers=self.handlers)
      res.features.supplemental_groups_policy = False
      if (request.verbose):
         res.info["info"] = self.info_json
      return res

   @err.rpc
   def RuntimeConfig(self, request, context):
      d = (pb.CgroupDriver.SYSTEMD if self.cgroup_driver == "systemd"
           else pb.CgroupDriver.CGROUPFS)
      return pb.RuntimeConfigResponse(
         linux=pb.LinuxRuntimeConfiguration(cgroup_driver=d))

   @err.rpc
   def UpdateRuntimeConfig(self, request, context):
      # The kubelet sends the pod CIDR here; ch-cri has no CNI to pass it to.
      log.info("UpdateRuntimeConfig: pod CIDR %r noted, not used",
               request.runtime_config.network_config.pod_cidr)
      return pb.UpdateRuntimeConfigResponse()


for (name, why) in PENDING.items():
   setattr(Runtime_Servicer, name, err.unimplemented(name, why))
