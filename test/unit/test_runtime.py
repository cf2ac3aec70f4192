# Unit tests of the CRI RuntimeService (lib/cri/runtime.py) through a real
# in-process gRPC server.

import json
import os
import time

import grpc
import pytest

import cri.runtime

from cri_api.v1 import api_pb2 as pb

from conftest import RPC_TIMEOUT, RUNTIME_VERSION


## Constants ##

SERVICE = pb.DESCRIPTOR.services_by_name["RuntimeService"]
IMPLEMENTED = { "Version", "Status", "RuntimeConfig", "UpdateRuntimeConfig",
                "RunPodSandbox", "StopPodSandbox", "RemovePodSandbox",
                "PodSandboxStatus", "ListPodSandbox", "CreateContainer",
                "StartContainer", "StopContainer", "RemoveContainer",
                "ListContainers", "ContainerStatus",
                "UpdateContainerResources", "ReopenContainerLog",
                "ExecSync", "ContainerStats", "ListContainerStats",
                "PodSandboxStats", "ListPodSandboxStats", "Exec", "Attach",
                "PortForward", "GetContainerEvents",
                "ListMetricDescriptors", "ListPodSandboxMetrics",
                "UpdatePodSandboxResources" }


## Functions ##

def call(s, name, req=None):
   """Call RuntimeService method name with req (default: an empty request
      of the right type); return the response, or all the responses of a
      streaming method."""
   m = SERVICE.methods_by_name[name]
   if (req is None):
      req = getattr(pb, m.input_type.name)()
   res = getattr(s.runtime, name)(req, timeout=RPC_TIMEOUT)
   return list(res) if m.server_streaming else res


## Tests ##

def test_version(serve):
   s = serve()
   v = call(s, "Version", pb.VersionRequest(version="0.1.0"))
   assert v.version == "0.1.0"
   assert v.runtime_name == "ch-cri"
   assert v.runtime_version == RUNTIME_VERSION
   assert v.runtime_api_version == "v1"


def test_status(serve):
   s = serve()
   res = call(s, "Status")
   conds = { c.type: c for c in res.status.conditions }
   assert conds["RuntimeReady"].status
   # The unit server has no pod network: it must say so, and why.
   assert not conds["NetworkReady"].status
   assert conds["NetworkReady"].reason == "NoPodNetwork"
   assert "loopback only" in conds["NetworkReady"].message
   assert dict(res.info) == {}
   assert [h.name for h in res.runtime_handlers] == [""]
   # A root ch-cri gives hostUsers: false pods their own user namespace.
   assert (res.runtime_handlers[0].features.user_namespaces
           == (os.geteuid() == 0))


def test_status_verbose(serve, root):
   s = serve()
   res = call(s, "Status", pb.StatusRequest(verbose=True))
   assert json.loads(res.info["info"]) \
          == { "root": root, "unit": True, "network": None }
   assert { c.type for c in res.status.conditions } \
          == { "RuntimeReady", "NetworkReady" }


@pytest.mark.parametrize(("driver", "want"), [
   ("cgroupfs", pb.CgroupDriver.CGROUPFS),
   ("systemd", pb.CgroupDriver.SYSTEMD)])
def test_runtime_config(serve, driver, want):
   s = serve(cgroup_driver=driver)
   assert call(s, "RuntimeConfig").linux.cgroup_driver == want


def test_update_runtime_config(serve):
   s = serve()
   req = pb.UpdateRuntimeConfigRequest()
   req.runtime_config.network_config.pod_cidr = "10.88.0.0/16"
   assert call(s, "UpdateRuntimeConfig", req) \
          == pb.UpdateRuntimeConfigResponse()
   assert call(s, "Version").runtime_name == "ch-cri"


def test_update_runtime_config_bad_cidr(serve):
   s = serve()
   req = pb.UpdateRuntimeConfigRequest()
   req.runtime_config.network_config.pod_cidr = "10.88.0.7/16"
   with pytest.raises(grpc.RpcError) as x:
      call(s, "UpdateRuntimeConfig", req)
   assert x.value.code() == grpc.StatusCode.INVALID_ARGUMENT
   assert "network_config.pod_cidr" in x.value.details()


def test_every_method_covered():
   # A method of the proto that is neither implemented nor pending would
   # answer gRPC's bare default; make adding it to the API visible.
   names = { m.name for m in SERVICE.methods }
   assert names == IMPLEMENTED | set(cri.runtime.PENDING)


@pytest.mark.parametrize("name", sorted(cri.runtime.PENDING))
def test_pending_unimplemented(serve, name):
   s = serve()
   with pytest.raises(grpc.RpcError) as ei:
      call(s, name)
   assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED
   msg = ei.value.details()
   assert msg == "%s not implemented: %s" % (name, cri.runtime.PENDING[name])
   assert msg != "Method not implemented!"
   # the server carries on
   assert call(s, "Version").runtime_api_version == "v1"


def test_get_container_events_streaming(serve):
   s = serve()
   assert SERVICE.methods_by_name["GetContainerEvents"].server_streaming
   it = s.runtime.GetContainerEvents(pb.GetEventsRequest(),
                                     timeout=RPC_TIMEOUT)
   # Nothing happens: the stream waits, and ends at the client's deadline.
   with pytest.raises(grpc.RpcError) as ei:
      next(s.runtime.GetContainerEvents(pb.GetEventsRequest(), timeout=0.5))
   assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
   # An event published in the store reaches the subscriber.
   deadline = time.monotonic() + 5
   while (not s.state_store.events.queues and time.monotonic() < deadline):
      time.sleep(0.01)
   assert s.state_store.events.queues
   class Fake:
      id_ = "c" * 64
      pod_id = "p" * 64
      def pb_status(self):
         return pb.ContainerStatus(id=self.id_)
   s.state_store.events.ctr_publish("deleted", Fake())
   ev = next(it)
   assert ev.container_id == "c" * 64
   assert ev.container_event_type \
          == pb.ContainerEventType.CONTAINER_DELETED_EVENT
   assert not ev.containers_statuses


def test_pod_and_container_bad_input(serve):
   s = serve()
   req = pb.RunPodSandboxRequest()
   req.config.metadata.name = "p"
   req.config.metadata.namespace = "default"
   with pytest.raises(grpc.RpcError) as ei:
      s.runtime.RunPodSandbox(req, timeout=RPC_TIMEOUT)
   assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
   assert ei.value.details() == "config.metadata.uid: empty"
   req.config.metadata.uid = "u"
   req.runtime_handler = "kata"
   with pytest.raises(grpc.RpcError) as ei:
      s.runtime.RunPodSandbox(req, timeout=RPC_TIMEOUT)
   assert ei.value.code() == grpc.StatusCode.NOT_FOUND
   assert "runtime handler 'kata'" in ei.value.details()
   with pytest.raises(grpc.RpcError) as ei:
      s.runtime.ExecSync(pb.ExecSyncRequest(container_id="c", cmd=["true"],
                                            timeout=1),
                         timeout=RPC_TIMEOUT)
   assert ei.value.code() == grpc.StatusCode.NOT_FOUND
   assert "container not found: c" in ei.value.details()
   with pytest.raises(grpc.RpcError) as ei:
      s.runtime.ContainerStatus(pb.ContainerStatusRequest(), timeout=RPC_TIMEOUT)
   assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
   assert ei.value.details() == "container_id: empty"
   with pytest.raises(grpc.RpcError) as ei:
      s.runtime.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id="x"),
                                timeout=RPC_TIMEOUT)
   assert ei.value.code() == grpc.StatusCode.NOT_FOUND
   # Stop and remove of what is missing succeed (CRI idempotence).
   s.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id="x"),
                            timeout=RPC_TIMEOUT)
   s.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id="x"),
                              timeout=RPC_TIMEOUT)
   s.runtime.StopContainer(pb.StopContainerRequest(container_id="x"),
                           timeout=RPC_TIMEOUT)
   s.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id="x"),
                             timeout=RPC_TIMEOUT)
   assert not s.runtime.ListContainers(pb.ListContainersRequest(),
                                       timeout=RPC_TIMEOUT).containers
   assert not s.runtime.ListPodSandbox(pb.ListPodSandboxRequest(),
                                       timeout=RPC_TIMEOUT).items


def test_metrics(serve):
   s = serve()
   d = s.runtime.ListMetricDescriptors(pb.ListMetricDescriptorsRequest(),
                                       timeout=RPC_TIMEOUT).descriptors
   names = [x.name for x in d]
   assert "container_memory_working_set_bytes" in names
   assert all(list(x.label_keys) == ["container", "pod", "namespace", "id"]
              for x in d)
   # No pods: no metrics, and no error.
   assert not s.runtime.ListPodSandboxMetrics(
      pb.ListPodSandboxMetricsRequest(), timeout=RPC_TIMEOUT).pod_metrics


def test_event_streams_capped(serve):
   s = serve()
   its = [s.runtime.GetContainerEvents(pb.GetEventsRequest(),
                                       timeout=RPC_TIMEOUT)
          for _ in range(cri.runtime.EVENT_STREAMS_MAX)]
   deadline = time.monotonic() + 10
   while (len(s.state_store.events.queues) < cri.runtime.EVENT_STREAMS_MAX
          and time.monotonic() < deadline):
      time.sleep(0.01)
   with pytest.raises(grpc.RpcError) as ei:
      next(s.runtime.GetContainerEvents(pb.GetEventsRequest(),
                                        timeout=RPC_TIMEOUT))
   assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
   for it in its:
      it.cancel()
   # Cancelled streams give their places back; the server still answers.
   deadline = time.monotonic() + 10
   while (s.state_store.events.queues and time.monotonic() < deadline):
      time.sleep(0.05)
   assert not s.state_store.events.queues
   assert call(s, "Version").runtime_api_version == "v1"


def test_update_pod_sandbox_resources(serve):
   s = serve()
   for (pid, code, msg) in (("", grpc.StatusCode.INVALID_ARGUMENT,
                             "pod_sandbox_id: empty"),
                            ("0123abcd", grpc.StatusCode.NOT_FOUND,
                             "pod sandbox not found: 0123abcd")):
      with pytest.raises(grpc.RpcError) as ei:
         s.runtime.UpdatePodSandboxResources(
            pb.UpdatePodSandboxResourcesRequest(pod_sandbox_id=pid),
            timeout=RPC_TIMEOUT)
      assert (ei.value.code(), ei.value.details()) == (code, msg)
   # A malformed cgroup_parent is refused by name.
   req = pb.RunPodSandboxRequest()
   req.config.metadata.name = "p"
   req.config.metadata.namespace = "default"
   req.config.metadata.uid = "u"
   req.config.linux.cgroup_parent = "/kubepods/../x"
   with pytest.raises(grpc.RpcError) as ei:
      s.runtime.RunPodSandbox(req, timeout=RPC_TIMEOUT)
   assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
   assert ei.value.details().startswith("config.linux.cgroup_parent: ")
