# The keeper-event monitor: one thread that follows every live keeper's
# event stream, records the exits it tells of, and notices a keeper gone.

import json
import os
import selectors
import threading
import time
import traceback

import misc
import cri.keeper.client as kc
from cri.store import running_p


## Constants ##

# The monitor's waits between tries to follow the events of a keeper that
# lives but gives none (busy, or it ended its stream), doubling from MIN
# to MAX; and its longest wait for one keeper's answer (it waits for no
# other's meanwhile).
FOLLOW_LIMIT = 1
FOLLOW_RETRY_MAX = 5
FOLLOW_RETRY_MIN = 0.05


## Globals ##

log = misc.log


## Classes ##

class Monitor:
   """Follows the keepers of store's pods (a cri.store.Store), in its own
      thread (start(), stop()), the only one that uses self.sel.

      self.follow_lock guards self.follows (event streams for the thread
      to take); taken alone, or under the store's locks. self.retries
      (keepers to follow again) is the thread's alone."""

   def __init__(self, store):
      self.store = store
      self.sel = selectors.DefaultSelector()
      self.wake_r, self.wake_w = os.pipe()
      os.set_blocking(self.wake_r, False)
      os.set_blocking(self.wake_w, False)
      self.sel.register(self.wake_r, selectors.EVENT_READ, None)
      self.stop_ev = threading.Event()
      self.follow_lock = threading.Lock()
      self.follows = []        # (pod, (socket, rest) or None: try again)
      self.retries = dict()    # pod ID -> (pod, when, pause)

   def start(self):
      t = threading.Thread(target=self.run, name="keeper-events",
                           daemon=True)
      t.start()

   def stop(self):
      self.stop_ev.set()
      self.wake()

   def follow(self, pod):
      """Subscribe to pod's keeper events and take the current statuses
         of its containers. The monitor thread takes the stream (it alone
         uses the selector). A keeper that gives none is tried again
         later, until its PID is gone: failing to answer is no death."""
      try:
         (s, statuses, rest) = kc.Keeper_Client(
            self.store.sock_path(pod.id_)).events()
      except kc.Keeper_Error as x:
         if (self.store.keeper_dead_p(pod)):
            self.store.keeper_gone(pod)
            return
         log.warning("pod %s: %s; trying again", pod.id_, x)
         self.follow_queue(pod, None)
         return
      self.statuses_take(pod, statuses)
      self.follow_queue(pod, (s, rest))

   def follow_queue(self, pod, opened):
      "Hand pod's event stream opened (or None: try again) to the monitor."
      with self.follow_lock:
         self.follows.append((pod, opened))
      self.wake()

   def follows_take(self):
      "Take the streams follow() queued (monitor thread)."
      with self.follow_lock:
         (fs, self.follows) = (self.follows, [])
      for (pod, opened) in fs:
         if (opened is None):
            self.retry_later(pod)
         else:
            self.retries.pop(pod.id_, None)
            self.stream_add(pod, *opened)

   def follow_lost(self, pod):
      """Pod's event stream ended or broke (monitor thread): record the
         keeper dead if its PID is gone, else follow it again later."""
      if (self.store.keeper_dead_p(pod)):
         self.store.keeper_gone(pod)
      else:
         self.retry_later(pod)

   def retry_later(self, pod):
      "Try to follow pod's keeper again after a while (monitor thread)."
      pause = self.retries.get(pod.id_, (None, None, FOLLOW_RETRY_MIN / 2))[2]
      pause = min(2 * pause, FOLLOW_RETRY_MAX)
      self.retries[pod.id_] = (pod, time.monotonic() + pause, pause)

   def retries_run(self):
      """Try again to follow the keepers due (monitor thread). Return the
         seconds until the next is due, at most 5."""
      for (id_, (pod, when, _)) in list(self.retries.items()):
         if (when > time.monotonic()):
            continue
         with self.store.lock:
            mine = self.store.pods.get(id_) is pod
         if (not mine or self.store.keeper_dead_p(pod)):
            del self.retries[id_]
            if (mine):
               self.store.keeper_gone(pod)
            continue
         try:
            (s, statuses, rest) = kc.Keeper_Client(
               self.store.sock_path(id_)).events(limit=FOLLOW_LIMIT)
         except kc.Keeper_Error as x:
            log.log(misc.LOG_LEVELS["verbose"], "pod %s: %s; trying again",
                    id_, x)
            self.retry_later(pod)
            continue
         del self.retries[id_]
         log.info("pod %s: following its keeper's events again", id_)
         self.statuses_take(pod, statuses)
         self.stream_add(pod, s, rest)
      whens = [r[1] for r in self.retries.values()]
      return max(0, min(whens + [time.monotonic() + 5]) - time.monotonic())

   def stream_add(self, pod, s, rest):
      "Follow pod's event stream s (monitor thread); rest was read already."
      buf = bytearray(rest)
      self.sel.register(s, selectors.EVENT_READ, (pod, buf))
      self.lines_take(pod, buf)

   def lines_take(self, pod, buf):
      while b"\n" in buf:
         i = buf.index(b"\n")
         line = bytes(buf[:i])
         del buf[:i+1]
         self.event(pod, line)

   def statuses_take(self, pod, statuses):
      """Take the statuses of pod's containers its keeper sent with a new
         stream; say which exited meanwhile."""
      stopped = []
      with self.store.lock:
         for (cid, st) in statuses.items():
            c = self.store.containers.get(cid)
            if (c is not None and c.pod_id == pod.id_):
               if (running_p(c.status) and st.get("finished_at")):
                  stopped.append(c)
               c.status = st
      for c in stopped:
         self.store.events.ctr_publish("stopped", c)

   def event(self, pod, line):
      try:
         ev = json.loads(line)
      except ValueError:
         log.warning("pod %s: bad event from keeper: %r", pod.id_, line[:200])
         return
      if (ev.get("ev") == "exit"):
         with self.store.lock:
            c = self.store.containers.get(ev.get("id"))
            if (c is not None):
               c.status = ev["status"]
         if (c is not None):
            self.store.events.ctr_publish("stopped", c)
         log.info("container %s exited: code %s", ev.get("id"),
                  ev["status"].get("exit_code"))

   def run(self):
      "Follow keeper events until stop(). Runs in its own thread."
      while not self.stop_ev.is_set():
         try:
            self.once()
         except Exception:
            # Keep following the other pods' keepers.
            log.error("keeper events: unexpected error:\n%s",
                      traceback.format_exc())
            self.stop_ev.wait(1)

   def once(self):
      self.follows_take()
      for (key, _) in self.sel.select(self.retries_run()):
         if (key.data is None):
            try:
               os.read(self.wake_r, 4096)
            except BlockingIOError:
               pass
            continue
         (pod, buf) = key.data
         try:
            data = key.fileobj.recv(1 << 20)
         except BlockingIOError:
            continue
         except OSError:
            data = b""
         if (not data):
            self.sel.unregister(key.fileobj)
            key.fileobj.close()
            self.follow_lost(pod)
            continue
         buf += data
         self.lines_take(pod, buf)

   def wake(self):
      "Wake the monitor from its select()."
      try:
         os.write(self.wake_w, b"x")
      except BlockingIOError:
         pass   # the pipe is full: it will wake anyway
