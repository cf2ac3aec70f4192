# Durable pods and containers: the registry, the state directory's layout
# and loading it at start-up, and what a dead keeper leaves to record.

import os
import signal
import threading
import time
import uuid
import weakref

import fsutil
import misc
import cri.errors as err
import cri.events
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


## Globals ##

log = misc.log


## Functions ##

def answer_kept(holder, objs, make):
   """Return make(list entries of objs), the answer to an unfiltered List*
      call, as holder.list_cache keeps it: the same again while no object
      came, went or changed state (the kubelet asks about twice a
      second). objs have id_, state and pb_short()."""
   key = tuple((o.id_, o.state) for o in objs)
   cached = holder.list_cache
   if (cached is None or cached[0] != key):
      cached = holder.list_cache = (key, make([o.pb_short() for o in objs]))
   return cached[1]


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

      events (a cri.events.Hub) gets the changes of containers' states
      the store records itself."""

   def __init__(self, state_dir, events=None):
      self.dir_ = state_dir
      self.lock = threading.Lock()
      self.pods = dict()
      self.containers = dict()
      self.events = events if events is not None else cri.events.Hub()
      self.gone_lock = threading.Lock()
      self.gone = weakref.WeakSet()
      for d in ("pods", "containers", "k", "trash", "quarantine"):
         fsutil.mkdirs(os.path.join(state_dir, d))

   def path(self, *parts):
      return os.path.join(self.dir_, *parts)

   def sock_path(self, pod_id):
      return self.path("k", pod_id[:SOCK_ID_LEN])

   ## Loading ##

   def load(self, pod_class, ctr_class):
      """Read every pod and container, and record the exits of those whose
         keepers died meanwhile. Return the pods whose keepers live, to
         follow (cri.monitor.Monitor)."""
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
      alive = []
      for p in list(self.pods.values()):
         if (p.keeper_alive_p()):
            alive.append(p)
         else:
            self.keeper_gone(p)
      log.info("state: %d pods, %d containers in %s", len(self.pods),
               len(self.containers), self.dir_)
      return alive

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
               self.events.ctr_publish("stopped", c)
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
         self.events.ctr_publish("stopped", c)
         log.warning("container %s: %s", c.id_, new["message"])
