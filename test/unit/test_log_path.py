# Container log paths: the CRI defines ContainerConfig.log_path relative to
# the pod's log_directory, so one that is absolute or climbs out with ".."
# is refused, never written outside it.

import os

import grpc
import pytest

from cri_api.v1 import api_pb2 as pb

import fake_charlie
from conftest import RPC_TIMEOUT
from test_keeper_faults import keeper_proc, pod_fake  # noqa: F401


## Constants ##

BUSYBOX = fake_charlie.config_bytes(salt="busybox")
REGISTRY = { "registry-1.docker.io/library/busybox:latest": BUSYBOX }


## Tests ##

@pytest.mark.parametrize(("log_path", "ok"), [
   ("c.log", True), ("c/0.log", True), ("", True),
   ("/abs.log", False), ("//abs.log", False), ("../outside.log", False),
   ("a/../../outside.log", False), ("..", False), ("c/../0.log", False),
   ("c\0.log", False)])
@pytest.mark.parametrize("log_dir_p", [True, False])
def test_log_path(serve, root, keeper_proc, log_path, ok, log_dir_p):
   s = serve(registry=REGISTRY)
   s.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(
      image="busybox")), timeout=RPC_TIMEOUT)
   logs = os.path.join(root, "logs", "p")
   pc = pb.PodSandboxConfig(log_directory=(logs if log_dir_p else ""))
   pod = pod_fake(s.state_store, keeper_proc.pid, pc)
   cc = pb.ContainerConfig(image=pb.ImageSpec(image="busybox"),
                           command=["true"], log_path=log_path,
                           metadata=pb.ContainerMetadata(name="c"))
   req = pb.CreateContainerRequest(pod_sandbox_id=pod.id_, config=cc)
   if (ok):
      id_ = s.runtime.CreateContainer(req, timeout=RPC_TIMEOUT).container_id
      st = s.runtime.ContainerStatus(pb.ContainerStatusRequest(
         container_id=id_), timeout=RPC_TIMEOUT).status
      assert st.log_path == (os.path.join(logs, log_path)
                             if log_path and log_dir_p else "")
      return
   with pytest.raises(grpc.RpcError) as x:
      s.runtime.CreateContainer(req, timeout=RPC_TIMEOUT)
   assert x.value.code() == grpc.StatusCode.INVALID_ARGUMENT
   assert x.value.details().startswith("config.log_path: "), \
          x.value.details()
   assert s.runtime.ListContainers(pb.ListContainersRequest(),
                                   timeout=RPC_TIMEOUT).containers == []
