# Stats of a container or pod removed between its lookup and its stats
# (lib/cri/runtime.py): NOT_FOUND, as for one that never was.

import grpc
import pytest

from cri_api.v1 import api_pb2 as pb

from conftest import RPC_TIMEOUT
from test_keeper_faults import ctr_fake, keeper_proc, pod_fake  # noqa: F401


## Tests ##

def test_stats_of_removed(serve, keeper_proc, monkeypatch):
   """A container or pod removed between its lookup and its stats is
      NOT_FOUND, not an internal error."""
   s = serve()
   store = s.state_store
   pod = pod_fake(store, keeper_proc.pid)
   c = ctr_fake(store, pod)
   def removing(get, table):
      def wrapper(id_, *args):
         obj = get(id_, *args)
         with store.lock:
            table.pop(obj.id_, None)
         return obj
      return wrapper
   monkeypatch.setattr(s.ctrs, "get", removing(s.ctrs.get, store.containers))
   with pytest.raises(grpc.RpcError) as x:
      s.runtime.ContainerStats(pb.ContainerStatsRequest(container_id=c.id_),
                               timeout=RPC_TIMEOUT)
   assert x.value.code() == grpc.StatusCode.NOT_FOUND, x.value.details()
   assert c.id_ in x.value.details()
   monkeypatch.setattr(s.pods, "get", removing(s.pods.get, store.pods))
   with pytest.raises(grpc.RpcError) as x:
      s.runtime.PodSandboxStats(pb.PodSandboxStatsRequest(
         pod_sandbox_id=pod.id_), timeout=RPC_TIMEOUT)
   assert x.value.code() == grpc.StatusCode.NOT_FOUND, x.value.details()
   assert pod.id_ in x.value.details()
