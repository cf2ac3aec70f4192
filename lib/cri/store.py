# Durable pods and containers: the state directory's layout, loading it at
# start-up, and following the keepers' exit events.

import json
import os
import queue
import selectors
import signal
import threading
import time
import uuid

import fsutil
import misc
import cri.keeper_conn as kc
from cri.keeper_io import ns_pids, proc_start


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


## Globals ##

log = misc.log


EVENTS_QUEUE_MAX = 10000


## Functions ##

def alive_p(pid, start):
   "Return True if pid is running and is the process that started at start."
   return pid is not None and start is not None and proc_start(pid) == start


def labels_match(labels, selector):
   """Return True if labels has every key/value of selector.

      >>> labels_match({"a": "1", "b": "2"}, {"a": "1"})
      True
      >>> labels_match({"a": "1"}, {"a": "2"})
      False
   """
   return all(labels.get(k) == v for (k, v) in selector.items())


## Classes ##

class Store:
   """Every pod and container, in memory and on disk.

      self.lock guards self.pods, self.containers and the status dicts of
      containers. Take it briefly: never across a keeper call or another
      lock. Lifecycle operations on one pod or container are serialised by
      that object's op_lock instead, which is held across keeper calls
      (they are what it serialises) and taken before self.lock, never
      after it."""

   def __init__(self, state_dir):
      self.dir_ = state_dir
      self.lock = threading.Lock()
      self.pods = dict()
      self.containers = dict()
      self.sel = selectors.DefaultSelector()
      self.wake_r, self.wake_w = os.pipe()
      os.set_blocking(self.wake_r, False)
      self.sel.register(self.wake_r, selectors.EVENT_READ, None)
      self.stop_ev = threading.Event()
      self.ev_lock = threading.Lock()   # guards ev_queues; taken alone
      self.ev_queues = []
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
         kc.call(self.sock_path(id_), "shutdown", limit=30)
         log.warning("pod %s: quarantined; its keeper was shut down", id_)
         return
      except kc.Keeper_Error as x:
         if (x.gone_p):
            return
         why = x
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
         of its containers."""
      try:
         (s, statuses, rest) = kc.events_open(self.sock_path(pod.id_))
      except kc.Keeper_Error as x:
         log.warning("pod %s: %s", pod.id_, x)
         self.keeper_gone(pod)
         return
      with self.lock:
         for (cid, st) in statuses.items():
            c = self.containers.get(cid)
            if (c is not None):
               c.status = st
      self.sel.register(s, selectors.EVENT_READ, (pod, bytearray(rest)))
      os.write(self.wake_w, b"x")   # wake the monitor's select

   def monitor(self):
      "Follow keeper events until stop(). Runs in its own thread."
      while not self.stop_ev.is_set():
         for (key, _) in self.sel.select(5):
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
               self.keeper_gone(pod)
               continue
            buf += data
            while b"\n" in buf:
               i = buf.index(b"\n")
               line = bytes(buf[:i])
               del buf[:i+1]
               self.event(pod, line)

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
         that nobody else writes their status."""
      pod.keeper_dead()
      with self.lock:
         ctrs = [c for c in self.containers.values() if c.pod_id == pod.id_]
      for c in ctrs:
         was_running = (c.status.get("started_at")
                        and not c.status.get("finished_at"))
         c.status_reload()
         st = c.status
         if (not st.get("started_at") or st.get("finished_at")):
            if (was_running and st.get("finished_at")):
               self.event_publish("stopped", c)
            continue
         killed = False
         if (st.get("mntns") and alive_p(st.get("pid"), st.get("pid_start"))):
            for pid in ns_pids(st["mntns"]):
               try:
                  os.kill(pid, signal.SIGKILL)
                  killed = True
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
      os.write(self.wake_w, b"x")
