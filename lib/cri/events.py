# Container events for GetContainerEvents: what happened to which pod or
# container, handed from whoever changed it to the streams subscribed.

import collections
import queue
import threading
import time

import misc


## Constants ##

EVENTS_QUEUE_MAX = 10000
KINDS = ("created", "started", "stopped", "deleted")


## Globals ##

log = misc.log


## Classes ##

# One event: kind (one of KINDS) of pod pod_id, or of its container ctr_id
# (None: of the pod itself), at time_ns (ns since the epoch). subject is
# the Pod or Container itself, whose status a stream sends when it
# delivers the event (a deleted one is no longer found by its ID).
Event = collections.namedtuple("Event", ("kind", "pod_id", "ctr_id",
                                         "time_ns", "subject"))


class Hub:
   """The subscribers to events, each a bounded queue. self.lock guards
      self.queues; a leaf lock."""

   def __init__(self):
      self.lock = threading.Lock()
      self.queues = []

   def subscribe(self, max_):
      """Return a queue that gets every event (an Event) from now on, or
         None if max_ subscribers already have one."""
      q = queue.Queue(EVENTS_QUEUE_MAX)
      with self.lock:
         if (len(self.queues) >= max_):
            return None
         self.queues.append(q)
      return q

   def unsubscribe(self, q):
      with self.lock:
         if (q in self.queues):
            self.queues.remove(q)

   def ctr_publish(self, kind, ctr):
      "Tell subscribers that container ctr was kind."
      self.publish(Event(kind, ctr.pod_id, ctr.id_, time.time_ns(), ctr))

   def pod_publish(self, kind, pod):
      "Tell subscribers that pod itself was kind."
      self.publish(Event(kind, pod.id_, None, time.time_ns(), pod))

   def publish(self, ev):
      """Hand Event ev to every subscriber. One too slow to keep
         EVENTS_QUEUE_MAX events loses the new ones (the kubelet relists
         when it notices a gap)."""
      assert ev.kind in KINDS, ev
      with self.lock:
         qs = list(self.queues)
      for q in qs:
         try:
            q.put_nowait(ev)
         except queue.Full:
            log.warning("container event subscriber too slow; event lost")
