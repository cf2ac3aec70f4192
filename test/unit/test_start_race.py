# A container that exits at once: its exit, recorded by the monitor thread
# from the keeper's event, may come before StartContainer reads the
# keeper's reply. The reply must not take the exit back (the container
# then stayed RUNNING, with its exit lost, until ch-cri restarted).

import time

from cri_api.v1 import api_pb2 as pb

from conftest import RPC_TIMEOUT
from test_keeper_faults import ctr_fake, keeper_proc, pod_fake  # noqa: F401


## Tests ##

def test_exit_before_start_reply(serve, keeper_proc, monkeypatch):
   s = serve()
   store = s.state_store
   pod = pod_fake(store, keeper_proc.pid)
   c = ctr_fake(store, pod, running=False)
   started = time.time_ns()
   def start_call(c_, *args):
      # The keeper started it; its exit event wins the race to ch-cri.
      with store.lock:
         c_.status = { "pid": 4242, "started_at": started,
                       "finished_at": started + 1, "exit_code": 5,
                       "reason": "Error" }
      return { "status": { "pid": 4242, "started_at": started } }
   monkeypatch.setattr(s.ctrs, "start_call", start_call)
   s.runtime.StartContainer(pb.StartContainerRequest(container_id=c.id_),
                            timeout=RPC_TIMEOUT)
   st = s.runtime.ContainerStatus(pb.ContainerStatusRequest(
      container_id=c.id_), timeout=RPC_TIMEOUT).status
   assert st.state == pb.ContainerState.CONTAINER_EXITED
   assert st.exit_code == 5
