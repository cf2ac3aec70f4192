# Durable pods and containers: the state directory's layout, loading it at
# start-up, and following the keepers' exit events.

import json
import os
import queue
import selectors
import signal
import threading
import time
import traceback
import uuid
import weakref

import fsutil
import misc
import cri.errors as err
import cri.keeper.client as kc
from cri.keeper.proc import alive_p, ns_kill, zombie_p


## Constants ##

# State directory layout (see doc/ch-cri.rst, "Files"):
#   pods/ID/          config.json (ours, written once), state.json (ours),
#                     keeper-args.json, keeper.json (the keeper's),
#                     keeper.log, hosts, resolv.conf, hostname
#   containers/ID/    config.json (ours, written once), status.json (the
#                     keeper's; ours only once its keeper is dead),
#                     rootfs/{upper,work,merged}
#   k/ID[:12]         keeper sockets (short: sun_path has 108 bytes)
#   trash/            directories being removed
#   quarantine/       unreadable state, moved aside with a log line
SOCK_ID_LEN = 12

# Longest wait for a keeper whose connection broke to be gone from /proc
# (it is most often on its way out); after that it lives, and is busy.
DEATH_WAIT = 1
EVENTS_QUEUE_MAX = 10000
# The monitor's waits between tries to follow the events of a keeper that
# lives but gives none (busy, or it ended its stream), doubling from MIN
# to MAX; and its longest wait for one keeper's answer (it waits for no
# other's meanwhile).
FOLLOW_LIMIT = 1
FOLLOW_RETRY_MAX = 5
FOLLOW_RETRY_MIN = 0.05


## Globals ##

log = misc.log


## Functions ##

def labels_match(labels, selector):
   """Return True if labels has every key/value of selector.

      >>> labels_match({"a": "1", "b": "2"}, {"a": "1"})
      True
      >>> labels_match({"a": "1"}, {"a": "2"})
      False
   """
   return all(labels.get(k) == v for (k, v) in selector.items())


def running_p(status):
   "Return True if container status says it started and has not exited."
   return bool(status.get("started_at") and not status.get("finished_at"))


## Classes ##

class Store:
   """Every pod and container, in memory and on disk.

      self.lock guards self.pods, self.containers and the status dicts of
      containers. Take it briefly: never across a keeper call or another
      lock. Lifecycle operations on one pod or container are serialised by
      that object's op_lock instead, which is held across keeper calls
      (they are what it serialises) and taken before self.lock, never
      after it.

      self.gone_lock serialises keeper_gone() and guards self.gone (the
      pods it has run for); taken after op_lock, before self.lock.
      self.follow_lock guards self.follows (event streams for the monitor
      thread to take, the only thread that uses self.sel); taken alone.
      self.retries (keepers to follow again) is the monitor's alone."""

   def __init__(self, state_dir):
      self.dir_ = state_dir
      self.lock = threading.Lock()
      self.pods = dict()
      self.containers = dict()
      self.sel = selectors.DefaultSelector()
      self.wake_r, self.wake_w = os.pipe()
      os.set_blocking(self.wake_r, False)
      os.set_blocking(self.wake_w, False)
      self.sel.register(self.wake_r, selectors.EVENT_READ, None)
      self.stop_ev = threading.Event()
      self.ev_lock = threading.Lock()   # guards ev_queues; a leaf
      self.ev_queues = []
      self.gone_lock = threading.Lock()
      self.gone = weakref.WeakSet()
      self.follow_lock = threading.Lock()
      self.follows = []        # (pod, (socket, rest) or None: try again)
      self.retries = dict()    # pod ID -> (pod, when, pause)
      for d in ("pods", "containers", "k", "trash", "quarantine"):
         fsutil.mkdirs(os.path.join(state_dir, d))

   def path(self, *parts):
      return os.path.join(self.dir_, *parts)

   def sock_path(self, pod_id):
      return self.path("k", pod_id[:SOCK_ID_LEN])

   ## Loading ##

   def load(self, pod_class, ctr_class):
      "Read every pod and container; reconnect to live keepers."
      fsutil.rmtree(self.path("trash"))
      fsutil.mkdirs(self.path("trash"))
      for id_ in sorted(os.listdir(self.path("pods"))):
         try:
            self.pods[id_] = pod_class.load(self, id_)
         except (OSError, ValueError, KeyError, fsutil.State_Error) as x:
            self.quarantine("pods", id_, x)
      for id_ in sorted(os.listdir(self.path("containers"))):
         try:
            c = ctr_class.load(self, id_)
         except (OSError, ValueError, KeyError, fsutil.State_Error) as x:
            self.quarantine("containers", id_, x)
            continue
         if (c.pod_id not in self.pods):
            log.warning("container %s: its pod %s is gone; removing", id_,
                        c.pod_id)
            self.dir_remove(c.dir_)
            continue
         self.containers[id_] = c
      self.socks_prune()
      for p in list(self.pods.values()):
         if (p.keeper_alive_p()):
            self.follow(p)
         else:
            self.keeper_gone(p)
      log.info("state: %d pods, %d containers in %s", len(self.pods),
               len(self.containers), self.dir_)

   def socks_prune(self):
      """Remove keeper sockets of pods we no longer have: a kill between
         removing a pod's directory and its socket leaves one behind."""
      with self.lock:
         mine = { self.sock_path(id_) for id_ in self.pods }
      for n in os.listdir(self.path("k")):
         p = self.path("k", n)
         if (p not in mine):
            log.info("removing stale keeper socket %s", p)
            try:
               os.unlink(p)
            except OSError as x:
               log.warning("can't remove %s: %s", p, x)

   def quarantine(self, kind, id_, why):
      dst = self.path("quarantine", "%s-%s-%d" % (kind, id_, time.time_ns()))
      log.error("unreadable %s %s (%s); moved to %s", kind[:-1], id_, why,
                dst)
      os.rename(self.path(kind, id_), dst)
      if (kind == "pods"):
         self.orphan_stop(id_, dst)

   def orphan_stop(self, id_, dir_):
      """Stop the keeper of quarantined pod id_ (its files now in dir_) if
         it runs: nobody can manage it or its containers any more."""
      try:
         kc.Keeper_Client(self.sock_path(id_)).shutdown(limit=30)
         log.warning("pod %s: quarantined; its keeper was shut down", id_)
         return
      except kc.Keeper_Error as x:
         why = x   # dead or busy: its PID says
      try:
         k = fsutil.json_read(os.path.join(dir_, "keeper.json"))
      except (OSError, fsutil.State_Error):
         return
      if (alive_p(k.get("pid"), k.get("pid_start"))):
         log.warning("pod %s: quarantined; killing its keeper %d: %s", id_,
                     k["pid"], why)
         try:
            os.kill(k["pid"], signal.SIGKILL)
         except OSError:
            pass

   def dir_create(self, kind, id_, config):
      """Create directory kind/id_ holding config.json with config, all at
         once: built in the trash (emptied at start-up) and renamed into
         place, so a crash never leaves a half-made pod or container."""
      tmp = self.path("trash", "new-%s-%s" % (kind, id_))
      fsutil.mkdirs(tmp)
      fsutil.json_write_atomic(os.path.join(tmp, "config.json"), config)
      if (kind == "containers"):
         for d in ("upper", "work", "merged"):
            fsutil.mkdirs(os.path.join(tmp, "rootfs", d))
      dst = self.path(kind, id_)
      os.rename(tmp, dst)
      fsutil.dir_fsync(self.path(kind))
      return dst

   def dir_remove(self, path):
      """Remove directory path: one rename into the trash (so a crash
         leaves either all of it or nothing in place), then delete."""
      dst = self.path("trash", uuid.uuid4().hex)
      try:
         os.rename(path, dst)
      except FileNotFoundError:
         return
      fsutil.rmtree(dst)

   ## Keeper events ##

   def follow(self, pod):
      """Subscribe to pod's keeper events and take the current statuses
         of its containers. The monitor thread takes the stream (it alone
         uses the selector). A keeper that gives none is tried again
         later, until its PID is gone: failing to answer is no death."""
      try:
         (s, statuses, rest) = kc.Keeper_Client(
            self.sock_path(pod.id_)).events()
      except kc.Keeper_Error as x:
         if (self.keeper_dead_p(pod)):
            self.keeper_gone(pod)
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
      if (self.keeper_dead_p(pod)):
         self.keeper_gone(pod)
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
         with self.lock:
            mine = self.pods.get(id_) is pod
         if (not mine or self.keeper_dead_p(pod)):
            del self.retries[id_]
            if (mine):
               self.keeper_gone(pod)
            continue
         try:
            (s, statuses, rest) = kc.Keeper_Client(
               self.sock_path(id_)).events(limit=FOLLOW_LIMIT)
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
      with self.lock:
         for (cid, st) in statuses.items():
            c = self.containers.get(cid)
            if (c is not None and c.pod_id == pod.id_):
               if (running_p(c.status) and st.get("finished_at")):
                  stopped.append(c)
               c.status = st
      for c in stopped:
         self.event_publish("stopped", c)

   def monitor(self):
      "Follow keeper events until stop(). Runs in its own thread."
      while not self.stop_ev.is_set():
         try:
            self.monitor_once()
         except Exception:
            # Keep following the other pods' keepers.
            log.error("keeper events: unexpected error:\n%s",
                      traceback.format_exc())
            self.stop_ev.wait(1)

   def monitor_once(self):
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

   ## Keepers, dead or busy ##

   def keeper_dead_p(self, pod, wait=0):
      """Return True if pod's keeper is dead: recorded so, or its process
         gone (a zombie is gone), waiting up to wait seconds for it to go.
         A keeper is dead only then, never because a call failed."""
      deadline = time.monotonic() + wait
      while True:
         # Under the lock: keeper_alive_p() remembers what it finds, which
         # must not undo keeper_gone() running meanwhile.
         with self.gone_lock:
            if (pod in self.gone or not pod.keeper_alive_p()
                or zombie_p(pod.keeper_pid)):
               return True
         if (time.monotonic() >= deadline):
            return False
         time.sleep(0.01)

   def keeper_fail(self, pod, x):
      """Decide what failed keeper call x (a kc.Keeper_Error) means for
         pod, the one place that does. The keeper is dead only if its PID
         is gone: then record it (keeper_gone) and return True. Return
         False if it answered, refusing the call (the caller says what
         that means). Otherwise it lives but is busy, and is never killed
         for that: raise Deadline_Exceeded if it took the call and did not
         answer in time, else Unavailable."""
      if (x.refused_p):
         return False
      # A busy keeper is there; a broken connection is most often a keeper
      # on its way out, so give it a moment to be gone.
      if (self.keeper_dead_p(pod, 0 if x.busy_p else DEATH_WAIT)):
         self.keeper_gone(pod)
         return True
      msg = ("pod %s: keeper busy (pid %s lives): %s"
             % (pod.id_, pod.keeper_pid, x))
      if (x.timeout_p):
         raise err.Deadline_Exceeded(msg)
      raise err.Unavailable(msg + "; try again")

   ## Container events (GetContainerEvents) ##

   def events_subscribe(self, max_):
      """Return a queue that gets every container event from now on, or
         None if max_ subscribers already have one."""
      q = queue.Queue(EVENTS_QUEUE_MAX)
      with self.ev_lock:
         if (len(self.ev_queues) >= max_):
            return None
         self.ev_queues.append(q)
      return q

   def events_unsubscribe(self, q):
      with self.ev_lock:
         if (q in self.ev_queues):
            self.ev_queues.remove(q)

   def event_publish(self, kind, ctr):
      """Tell subscribers that container ctr was kind ("created",
         "started", "stopped", "deleted"). A subscriber too slow to keep
         EVENTS_QUEUE_MAX events loses the new ones (the kubelet relists
         when it notices a gap)."""
      with self.ev_lock:
         qs = list(self.ev_queues)
      for q in qs:
         try:
            q.put_nowait((kind, ctr, time.time_ns()))
         except queue.Full:
            log.warning("container event subscriber too slow; event lost")

   def event(self, pod, line):
      try:
         ev = json.loads(line)
      except ValueError:
         log.warning("pod %s: bad event from keeper: %r", pod.id_, line[:200])
         return
      if (ev.get("ev") == "exit"):
         with self.lock:
            c = self.containers.get(ev.get("id"))
            if (c is not None):
               c.status = ev["status"]
         if (c is not None):
            self.event_publish("stopped", c)
         log.info("container %s exited: code %s", ev.get("id"),
                  ev["status"].get("exit_code"))

   def keeper_gone(self, pod):
      """Pod's keeper is dead (or exited after StopPodSandbox). Containers
         it had not recorded as exited are killed and recorded here, now
         that nobody else writes their status. Once per pod: a call while
         another runs (an event stream's end and an RPC, say) waits for
         it and finds the work done."""
      with self.gone_lock:
         if (pod not in self.gone):
            self.keeper_gone_locked(pod)
            self.gone.add(pod)

   def keeper_gone_locked(self, pod):
      pod.keeper_dead()
      with self.lock:
         ctrs = [c for c in self.containers.values() if c.pod_id == pod.id_]
      for c in ctrs:
         was_running = running_p(c.status)
         c.status_reload()
         st = c.status
         if (not st.get("started_at") or st.get("finished_at")):
            if (was_running and st.get("finished_at")):
               self.event_publish("stopped", c)
            continue
         killed = False
         if (st.get("mntns") and alive_p(st.get("pid"), st.get("pid_start"))):
            try:
               killed = ns_kill(st["mntns"], signal.SIGKILL) > 0
            except OSError:
               pass
         new = dict(st, finished_at=time.time_ns(), reason="Error",
                    exit_code=(137 if killed else 255),
                    message=("keeper of pod %s died; container killed"
                             % pod.id_ if killed else
                             "keeper of pod %s died; exit status unknown"
                             % pod.id_))
         fsutil.json_write_atomic(os.path.join(c.dir_, "status.json"), new)
         with self.lock:
            c.status = new
         self.event_publish("stopped", c)
         log.warning("container %s: %s", c.id_, new["message"])

   def start(self):
      t = threading.Thread(target=self.monitor, name="keeper-events",
                           daemon=True)
      t.start()

   def stop(self):
      self.stop_ev.set()
      self.wake()
