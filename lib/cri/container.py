# Containers: lifecycle operations, run by the pod's keeper from the run
# specification made at creation (cri.spec); durable in the state directory.

import base64
import os
import secrets
import signal
import threading
import time

from google.protobuf import json_format

import fsutil
import misc
import cri.cgroups as cgroups
import cri.ctrstart as ctrstart
import cri.errors as err
import cri.keeper.client as kc
import cri.sandbox as sb
import cri.security
import cri.store as st
import cri.spec
import cri.squash

from cri_api.v1 import api_pb2 as pb


## Constants ##

# ExecSync's stdout and stderr together: under gRPC's 16 MiB reply limit,
# with room for the rest of the reply.
EXEC_OUTPUT_MAX = 16 * 2**20 - 64 * 2**10
KILL_WAIT = 10


## Globals ##

log = misc.log


## Functions ##

def image_spec(im):
   """Return image spec im as status reports it: the name the user gave,
      where the kubelet passed one (user_specified_image; its image field
      is then the image ID it resolved), as containerd and CRI-O answer;
      the kubelet shows it as the pod's containerStatuses[].image."""
   if (not im.user_specified_image or im.image == im.user_specified_image):
      return im
   out = pb.ImageSpec()
   out.CopyFrom(im)
   out.image = im.user_specified_image
   return out


## Classes ##

class Container:
   """A container: its CRI config, run specification, and status (the
      keeper's record: pid, started_at, finished_at, exit_code, ...).
      op_lock serialises its lifecycle operations (see store.Store)."""

   def __init__(self, store, id_, pod_id, config, created_at, image_id, spec):
      self.store = store
      self.id_ = id_
      self.pod_id = pod_id
      self.config = config
      self.created_at = created_at
      self.image_id = image_id
      self.spec = spec
      self.dir_ = store.path("containers", id_)
      self.status = dict()
      self.resources = None
      self.cg_key = None       # its cgroup's key, once known to exist
      self.short = None        # (state, pb.Container), see pb_short
      self.image_spec = image_spec(config.image)   # as status names it
      self.op_lock = threading.Lock()

   @classmethod
   def load(class_, store, id_):
      d = fsutil.json_read(store.path("containers", id_, "config.json"))
      config = json_format.ParseDict(d["config"], pb.ContainerConfig())
      c = class_(store, id_, d["pod_id"], config, d["created_at"],
                 d["image_id"], d["spec"])
      c.status_reload()
      try:
         r = fsutil.json_read(os.path.join(c.dir_, "resources.json"))
         c.resources = json_format.ParseDict(r["resources"],
                                             pb.LinuxContainerResources())
      except FileNotFoundError:
         pass
      return c

   def status_reload(self):
      try:
         s = fsutil.json_read(os.path.join(self.dir_, "status.json"))
      except FileNotFoundError:
         s = dict()
      with self.store.lock:
         self.status = s

   @property
   def state(self):
      s = self.status
      if (s.get("finished_at")):
         return pb.ContainerState.CONTAINER_EXITED
      if (s.get("started_at")):
         return pb.ContainerState.CONTAINER_RUNNING
      return pb.ContainerState.CONTAINER_CREATED

   def pb_short(self):
      """Return the pb.Container that ListContainers answers with, kept
         until the container's state changes (all else is fixed at
         creation, and the kubelet asks about twice a second)."""
      state = self.state
      short = self.short
      if (short is None or short[0] != state):
         short = self.short = (state, pb.Container(
            id=self.id_, pod_sandbox_id=self.pod_id,
            metadata=self.config.metadata, image=self.image_spec,
            image_ref="sha256:" + self.image_id,
            image_id="sha256:" + self.image_id, state=state,
            created_at=self.created_at, labels=self.config.labels,
            annotations=self.config.annotations))
      return short[1]

   def pb_status(self):
      s = self.status
      st = pb.ContainerStatus(
         id=self.id_, metadata=self.config.metadata, state=self.state,
         created_at=self.created_at, started_at=s.get("started_at", 0),
         finished_at=s.get("finished_at", 0),
         exit_code=s.get("exit_code", 0), image=self.image_spec,
         image_ref="sha256:" + self.image_id,
         image_id="sha256:" + self.image_id,
         reason=s.get("reason", ""), message=s.get("message", ""),
         labels=self.config.labels, annotations=self.config.annotations,
         mounts=self.config.mounts, log_path=self.spec["log"])
      st.user.linux.uid = self.spec["uid"]
      st.user.linux.gid = self.spec["gid"]
      st.user.linux.supplemental_groups.extend(
         self.spec.get("groups", [self.spec["gid"]]))
      if (self.resources is not None):
         st.resources.linux.CopyFrom(self.resources)
      return st


class Containers(ctrstart.Start_Path):
   "Container operations over a Store."

   def __init__(self, store, ch, pods, images, cg=None, init=None,
                squash=None):
      self.init = init         # ch-cri-init on the host
      self.squash = squash     # cri.squash.Squash, or None
      self.store = store
      self.ch = ch
      self.pods = pods
      self.images = images
      self.cg = cg             # cgroups.Cgroups, or None: not enforced
      self.list_cache = None   # (key, response), see list_response

   def get(self, id_, field="container_id"):
      """Return the container id_ names (full ID or unique prefix); raise
         Not_Found."""
      if (not id_):
         raise err.Invalid_Argument("%s: empty" % field)
      with self.store.lock:
         c = self.store.containers.get(id_)
         if (c is None and len(id_) < 64):
            ms = [v for (k, v) in self.store.containers.items()
                  if k.startswith(id_)]
            c = ms[0] if len(ms) == 1 else None
      if (c is None):
         raise err.Not_Found("container not found: %s" % id_)
      return c

   def find(self, id_):
      try:
         return self.get(id_)
      except err.Not_Found:
         return None

   def image_user(self, image_id):
      """Return the ID of a container using image image_id (as its image or
         as an image volume), or None."""
      with self.store.lock:
         for c in self.store.containers.values():
            if (c.image_id == image_id
                or any(m.get("image_id") == image_id
                       for m in (c.spec or {}).get("mounts", ()))):
               return c.id_
      return None

   def of_pod(self, pod_id):
      with self.store.lock:
         return [c for c in self.store.containers.values()
                 if c.pod_id == pod_id]

   ## Create ##

   def create(self, pod_id, config):
      pod = self.pods.get(pod_id)
      if (pod.state != pb.PodSandboxState.SANDBOX_READY):
         raise err.Failed_Precondition("pod sandbox not ready: %s" % pod_id)
      md = config.metadata
      if (not md.name):
         raise err.Invalid_Argument("config.metadata.name: empty")
      img = self.images.find(config.image.image, "config.image.image")
      if (img is None):
         raise err.Not_Found("image not found: %s (pull it first)"
                             % config.image.image)
      id_ = secrets.token_hex(32)
      sqfs = self.squash_acquire(id_, pod, img)
      try:
         spec = cri.spec.make(self.ch, self.images, pod, config, img.id_,
                              root=(self.squash.view(self.squash.mnt(sqfs))
                                    if sqfs else None))
         if (sqfs):
            spec["squash"] = sqfs
         self.create_record(id_, pod_id, config, img, spec)
      except BaseException:
         if (sqfs):
            self.squash.release(id_, sqfs)
         raise
      log.info("container %s (%s) created in pod %s%s", id_, md.name,
               pod_id, " from SquashFS" if sqfs else "")
      return id_

   def squash_acquire(self, id_, pod, img):
      """Return the SquashFS file container id_ of pod runs from, mounted
         and counted, or None if it runs from a directory."""
      if (self.squash is None):
         return None
      want = cri.squash.format_of(pod.config.annotations,
                                  self.squash.default,
                                  "pod config.annotations")
      if (self.images.form_run(img.id_, want, "config.image.image")
          != "squash"):
         return None
      sqfs = self.images.sqfs_path(img.id_)
      self.squash.acquire(id_, sqfs)
      return sqfs

   def create_record(self, id_, pod_id, config, img, spec):
      "Record new container id_ in memory and on disk."
      md = config.metadata
      with self.store.lock:
         for c in self.store.containers.values():
            if (c.pod_id == pod_id and c.config.metadata.name == md.name
                and c.config.metadata.attempt == md.attempt):
               raise err.Already_Exists(
                  "container name %s (attempt %d) is in use by %s in pod %s"
                  % (md.name, md.attempt, c.id_, pod_id))
         c = Container(self.store, id_, pod_id, config, time.time_ns(),
                       img.id_, spec)
         self.store.containers[id_] = c
      try:
         self.store.dir_create("containers", id_,
                               { "config": sb.pb_dict(config),
                                 "pod_id": pod_id,
                                 "created_at": c.created_at,
                                 "image_id": img.id_, "spec": spec })
      except BaseException:
         with self.store.lock:
            del self.store.containers[id_]
         self.store.dir_remove(c.dir_)
         raise
      self.store.events.ctr_publish("created", c)

   ## Lifecycle ##

   def start(self, id_):
      c = self.get(id_)
      with c.op_lock:
         if (c.state != pb.ContainerState.CONTAINER_CREATED):
            raise err.Failed_Precondition(
               "container %s is %s, not CREATED"
               % (id_, pb.ContainerState.Name(c.state)))
         pod = self.pods.get(c.pod_id)
         if (pod.state != pb.PodSandboxState.SANDBOX_READY):
            raise err.Failed_Precondition("pod sandbox not ready: %s"
                                          % c.pod_id)
         s = c.spec
         merged = os.path.join(c.dir_, "rootfs", "merged")
         sec = s.get("security") if self.init else None
         privileged = c.config.linux.security_context.privileged
         uns = pod.userns_open() if pod.userns_p else None
         fds = []
         try:
            res = self.start_call(c, pod, s, sec, privileged, merged, uns,
                                  fds)
         finally:
            for fd in fds + ([uns] if uns is not None else []):
               os.close(fd)
         with self.store.lock:
            # A container that exits at once may have its exit recorded
            # (the keeper's event, on the monitor thread) before this
            # reply is read: never take the exit back.
            if (not (c.status.get("finished_at") and c.status.get("pid")
                     == res["status"].get("pid"))):
               c.status = res["status"]
      self.store.events.ctr_publish("started", c)
      log.info("container %s started, pid %s", id_, c.status.get("pid"))

   def stop(self, id_, timeout):
      c = self.find(id_)
      if (c is None):
         return
      with c.op_lock:
         self.stop_locked(c, timeout)

   def stop_locked(self, c, timeout):
      if (c.state != pb.ContainerState.CONTAINER_RUNNING):
         return
      pod = self.pods.find(c.pod_id)
      if (pod is None):
         return
      if (not pod.alive):
         self.store.keeper_gone(pod)   # records the exit
         return
      try:
         keeper = kc.Keeper_Client(pod.sock)
         if (timeout > 0):
            keeper.signal(c.id_, c.spec["stop_signal"])
            res = keeper.wait(c.id_, timeout)
            if (res.get("exited")):
               return self.status_take(c, res)
         keeper.signal(c.id_, int(signal.SIGKILL), all_=True)
         res = keeper.wait(c.id_, KILL_WAIT)
         if (not res.get("exited")):
            raise err.Internal("container %s: still running %ds after "
                               "SIGKILL" % (c.id_, KILL_WAIT))
         self.status_take(c, res)
      except kc.Keeper_Error as x:
         if (self.store.keeper_fail(pod, x)):
            return   # dead: the exit is recorded
         raise err.Internal("container %s: stop: %s" % (c.id_, x))

   def status_take(self, c, res):
      if (res.get("status")):
         with self.store.lock:
            c.status = res["status"]

   def remove(self, id_):
      c = self.find(id_)
      if (c is None):
         return
      with c.op_lock:
         self.stop_locked(c, 0)
         pod = self.pods.find(c.pod_id)
         if (pod is not None and pod.alive):
            try:
               kc.Keeper_Client(pod.sock).remove(c.id_)
            except kc.Keeper_Error as x:
               if (not self.store.keeper_fail(pod, x)):
                  raise err.Internal("container %s: remove: %s" % (id_, x))
         with self.store.lock:
            self.store.containers.pop(c.id_, None)
         self.store.dir_remove(c.dir_)
         if (self.cg is not None and self.cg.usable):
            self.cg.remove(self.cg_key(c))
         if (self.squash is not None and (c.spec or {}).get("squash")):
            self.squash.release(c.id_, c.spec["squash"])
      self.store.events.ctr_publish("deleted", c)
      log.info("container %s removed", id_)

   def matching(self, f):
      "Return the Containers that ContainerFilter f (or None) selects."
      with self.store.lock:
         ctrs = list(self.store.containers.values())
      if (f is None):
         return ctrs
      return [c for c in ctrs
              if (c.id_.startswith(f.id)
                  and c.pod_id.startswith(f.pod_sandbox_id)
                  and (not f.HasField("state") or c.state == f.state.state)
                  and st.labels_match(c.config.labels, f.label_selector))]

   def list(self, f):
      return [c.pb_short() for c in self.matching(f)]

   def list_response(self, f):
      """Return ListContainers' answer for filter f. Unfiltered (the
         kubelet's, about twice a second), the last answer is given again
         while no container came, went or changed state."""
      if (f is not None and f != pb.ContainerFilter()):
         return pb.ListContainersResponse(containers=self.list(f))
      with self.store.lock:
         ctrs = list(self.store.containers.values())
      return st.answer_kept(self, ctrs, lambda cs:
                            pb.ListContainersResponse(containers=cs))

   def exec_sync(self, id_, cmd, timeout):
      c = self.get(id_)
      if (not cmd):
         raise err.Invalid_Argument("cmd: empty")
      if (timeout < 0):
         raise err.Invalid_Argument("timeout: negative")
      pid = self.running_pid(c)
      pod = self.pods.get(c.pod_id)
      s = c.spec
      argv = self.exec_argv(c, pid, cmd, s["env"])
      try:
         res = kc.Keeper_Client(pod.sock).exec(
            c.id_, argv, self.ch.run_env(), timeout, EXEC_OUTPUT_MAX)
      except kc.Keeper_Error as x:
         self.store.keeper_fail(pod, x)
         raise err.Failed_Precondition("container %s: exec failed: %s"
                                       % (id_, x))
      if (res.get("timed_out")):
         raise err.Deadline_Exceeded("command %r timed out after %ds"
                                     % (list(cmd)[0], timeout))
      return (base64.b64decode(res["stdout"]), base64.b64decode(res["stderr"]),
              res["exit_code"])

   def exec_argv(self, c, pid, cmd, env):
      """Return the argv running cmd in running container c (main process
         pid) with environment env, under the container's security."""
      return self.ch.exec_argv(os.path.join(c.dir_, "rootfs", "merged"), pid,
                               cri.security.init_argv(
                                  ctrstart.INIT_PATH, c.spec.get("security")
                                  if self.init else None, exec_p=True)
                               + list(cmd), env, c.spec["cwd"])

   def running_pid(self, c):
      if (c.state != pb.ContainerState.CONTAINER_RUNNING):
         raise err.Failed_Precondition(
            "container not running: %s (state %s)"
            % (c.id_, pb.ContainerState.Name(c.state)))
      return c.status["pid"]

   def reopen_log(self, id_):
      c = self.get(id_)
      self.running_pid(c)
      pod = self.pods.get(c.pod_id)
      try:
         kc.Keeper_Client(pod.sock).reopen(c.id_)
      except kc.Keeper_Error as x:
         self.store.keeper_fail(pod, x)
         raise err.Failed_Precondition("container %s: reopen log: %s"
                                       % (id_, x))

   def cg_key(self, c):
      """Return the key of container c's cgroup (see cgroups.Cgroups): in
         its pod's, or ch-cri/ID for one an older ch-cri started. Kept on
         c once its cgroup exists (stats ask every 10 s)."""
      if (c.cg_key is not None):
         return c.cg_key
      pod = self.pods.find(c.pod_id)
      k = self.pods.cg_key(pod) if pod is not None else None
      key = (k[0] if k else cgroups.PARENT + "/" + c.pod_id) + "/" + c.id_
      legacy = cgroups.PARENT + "/" + c.id_
      if (os.path.isdir(self.cg.dir_("memory", key))):
         c.cg_key = key
      elif (os.path.isdir(self.cg.dir_("memory", legacy))):
         c.cg_key = key = legacy
      return key

   def resources_update(self, id_, resources):
      """Record resources and, if the container has cgroups (it started
         with ch-cri able to write them), apply them at once."""
      c = self.get(id_)
      with c.op_lock:
         live = (self.cg is not None and self.cg.usable
                 and c.state != pb.ContainerState.CONTAINER_CREATED
                 and os.path.isdir(self.cg.dir_("memory", self.cg_key(c))))
         if (live):
            try:
               self.cg.apply(self.cg_key(c), resources)
            except cgroups.Cgroup_Error as x:
               raise err.Invalid_Argument("linux: %s" % x)
         fsutil.json_write_atomic(os.path.join(c.dir_, "resources.json"),
                                  { "resources": sb.pb_dict(resources) })
         c.resources = resources
      log.info("container %s: resources %s", id_,
               "applied" if live else "recorded (applied at start)"
               if self.cg is not None and self.cg.usable
               else "recorded, not enforced: %s"
                    % (self.cg.reason if self.cg else "no cgroups"))
