# Containers: created from a CRI ContainerConfig into a run specification
# (the ch-run command and what the keeper must mount), run by the pod's
# keeper, durable in the state directory.

import base64
import os
import secrets
import signal
import threading
import time

from google.protobuf import json_format

import fsutil
import misc
import cri.errors as err
import cri.keeper_conn as kc
import cri.sandbox as sb

from cri_api.v1 import api_pb2 as pb


## Constants ##

# Paths ch-run itself mounts from the host; a request mount there is
# bound by ch-run (read-write only) or, for /dev, cannot be made at all.
CHRUN_FILES = ("/etc/hosts", "/etc/resolv.conf", "/etc/hostname")
EXEC_OUTPUT_MAX = 16 * 2**20
FOREVER = 10 * 365 * 86400
KILL_WAIT = 10


## Globals ##

log = misc.log


## Functions ##

def env_merge(image_env, envs):
   """Return the container's environment as "K=V" strings: the image's,
      then the request's (a later key replaces an earlier one, in place).

      >>> env_merge(["PATH=/bin", "A=1"], [pb.KeyValue(key="A", value="2"),
      ...                                  pb.KeyValue(key="B", value="")])
      ['PATH=/bin', 'A=2', 'B=']
   """
   d = dict()
   for kv in image_env or []:
      (k, _, v) = kv.partition("=")
      d[k] = v
   for (i, kv) in enumerate(envs):
      if (not kv.key or "=" in kv.key or "\0" in kv.key + kv.value):
         raise err.Invalid_Argument("config.envs[%d]: bad variable %r"
                                    % (i, kv.key))
      d[kv.key] = kv.value
   return ["%s=%s" % kv for kv in d.items()]


def path_check(path, field):
   "Refuse a path that is not absolute and clean."
   if (not path.startswith("/") or "\0" in path
       or any(p == ".." for p in path.split("/"))):
      raise err.Invalid_Argument("%s: must be an absolute path without "
                                 "\"..\": %r" % (field, path))


def db_lookup(path, key, by_name):
   """Return the fields of the first entry of passwd/group file path whose
      name (by_name) or ID matches key, or None."""
   try:
      with open(path, errors="replace") as fp:
         for line in fp:
            f = line.rstrip("\n").split(":")
            if (len(f) >= 4 and f[0 if by_name else 2] == str(key)):
               return f
   except OSError:
      pass
   return None


def signal_parse(name):
   """Return the number of a signal given as "SIGQUIT", "QUIT" or "3";
      SIGTERM if empty or unknown.

      >>> signal_parse("SIGQUIT") == signal.SIGQUIT
      True
      >>> signal_parse("") == signal.SIGTERM
      True
   """
   name = (name or "").upper()
   if (name.isdigit()):
      return int(name)
   if (name and not name.startswith("SIG")):
      name = "SIG" + name
   return int(getattr(signal.Signals, name, signal.SIGTERM)) \
      if name in signal.Signals.__members__ else int(signal.SIGTERM)


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
      return pb.Container(id=self.id_, pod_sandbox_id=self.pod_id,
                          metadata=self.config.metadata,
                          image=self.config.image,
                          image_ref="sha256:" + self.image_id,
                          image_id="sha256:" + self.image_id,
                          state=self.state, created_at=self.created_at,
                          labels=self.config.labels,
                          annotations=self.config.annotations)

   def pb_status(self):
      s = self.status
      st = pb.ContainerStatus(
         id=self.id_, metadata=self.config.metadata, state=self.state,
         created_at=self.created_at, started_at=s.get("started_at", 0),
         finished_at=s.get("finished_at", 0),
         exit_code=s.get("exit_code", 0), image=self.config.image,
         image_ref="sha256:" + self.image_id,
         image_id="sha256:" + self.image_id,
         reason=s.get("reason", ""), message=s.get("message", ""),
         labels=self.config.labels, annotations=self.config.annotations,
         mounts=self.config.mounts, log_path=self.spec["log"])
      st.user.linux.uid = self.spec["uid"]
      st.user.linux.gid = self.spec["gid"]
      st.user.linux.supplemental_groups.append(self.spec["gid"])
      if (self.resources is not None):
         st.resources.linux.CopyFrom(self.resources)
      return st


class Containers:
   "Container operations over a Store."

   def __init__(self, store, ch, pods, images):
      self.store = store
      self.ch = ch
      self.pods = pods
      self.images = images

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
      spec = self.spec_make(pod, config, img.id_)
      with self.store.lock:
         for c in self.store.containers.values():
            if (c.pod_id == pod_id and c.config.metadata.name == md.name
                and c.config.metadata.attempt == md.attempt):
               raise err.Already_Exists(
                  "container name %s (attempt %d) is in use by %s in pod %s"
                  % (md.name, md.attempt, c.id_, pod_id))
         id_ = secrets.token_hex(32)
         c = Container(self.store, id_, pod_id, config, time.time_ns(),
                       img.id_, spec)
         self.store.containers[id_] = c
      try:
         for d in ("upper", "work", "merged"):
            fsutil.mkdirs(os.path.join(c.dir_, "rootfs", d))
         fsutil.json_write_atomic(os.path.join(c.dir_, "config.json"),
                                  { "config": sb.pb_dict(config),
                                    "pod_id": pod_id,
                                    "created_at": c.created_at,
                                    "image_id": img.id_, "spec": spec })
      except BaseException:
         with self.store.lock:
            del self.store.containers[id_]
         self.store.dir_remove(c.dir_)
         raise
      log.info("container %s (%s) created in pod %s", id_, md.name, pod_id)
      return id_

   def spec_make(self, pod, config, image_id):
      """Return the run specification of a container: everything StartContainer
         and ExecSync need, resolved once from the request and the image."""
      icfg = self.images.config(image_id).get("config") or {}
      if (config.command):
         argv = list(config.command) + list(config.args)
      else:
         argv = (list(icfg.get("Entrypoint") or [])
                 + (list(config.args) or list(icfg.get("Cmd") or [])))
      if (not argv):
         raise err.Invalid_Argument("config.command: empty, and the image "
                                    "has no ENTRYPOINT or CMD")
      if (any("\0" in a for a in argv)):
         raise err.Invalid_Argument("config.command/args: NUL in argument")
      env = env_merge(icfg.get("Env"), config.envs)
      cwd = config.working_dir or icfg.get("WorkingDir") or "/"
      path_check(cwd, "config.working_dir")
      root = self.ch.image_path(image_id)
      (uid, gid) = self.user_resolve(config, icfg.get("User") or "", root)
      log_path = ""
      if (config.log_path and pod.config.log_directory):
         path_check("/" + config.log_path, "config.log_path")
         log_path = os.path.join(pod.config.log_directory, config.log_path)
      (mounts, binds, mkpaths) = self.mounts_make(pod, config)
      mkpaths.append((cwd, "dir"))
      return { "argv": argv, "env": env, "cwd": cwd, "uid": uid, "gid": gid,
               "log": log_path, "tty": config.tty, "stdin": config.stdin,
               "write": not config.linux.security_context.readonly_rootfs,
               "mounts": mounts, "binds": binds, "mkpaths": mkpaths,
               "stop_signal": signal_parse(icfg.get("StopSignal")) }

   def user_resolve(self, config, image_user, root):
      """Return (uid, gid) the container runs as: the request's
         run_as_user/run_as_username/run_as_group, else the image's USER,
         names looked up in the image's /etc/passwd and /etc/group."""
      sc = config.linux.security_context
      passwd = os.path.join(root, "etc", "passwd")
      group = os.path.join(root, "etc", "group")
      if (sc.HasField("run_as_group") and not (sc.HasField("run_as_user")
                                               or sc.run_as_username)):
         raise err.Invalid_Argument("config.linux.security_context."
                                    "run_as_group: needs run_as_user or "
                                    "run_as_username")
      (user, _, grp) = image_user.partition(":")
      field = "image USER"
      if (sc.HasField("run_as_user")):
         (user, grp, field) = (str(sc.run_as_user.value), "",
                               "config.linux.security_context.run_as_user")
      elif (sc.run_as_username):
         (user, grp, field) = (sc.run_as_username, "",
                               "config.linux.security_context."
                               "run_as_username")
      uid = 0
      gid = None
      if (user):
         ent = db_lookup(passwd, user, not user.isdigit())
         if (user.isdigit()):
            uid = int(user)
         elif (ent is None):
            raise err.Invalid_Argument("%s: no user %r in the image's "
                                       "/etc/passwd" % (field, user))
         else:
            uid = int(ent[2])
         if (ent is not None):
            gid = int(ent[3])
      if (sc.HasField("run_as_group")):
         gid = sc.run_as_group.value
      elif (grp):
         if (grp.isdigit()):
            gid = int(grp)
         else:
            ent = db_lookup(group, grp, True)
            if (ent is None):
               raise err.Invalid_Argument("image USER: no group %r in the "
                                          "image's /etc/group" % grp)
            gid = int(ent[2])
      if (uid < 0 or (gid is not None and gid < 0)):
         raise err.Invalid_Argument("%s: negative ID" % field)
      return (uid, gid if gid is not None else 0)

   def mounts_make(self, pod, config):
      """Return (keeper mounts, ch-run binds, paths to create) for the
         request's mounts and the pod's /etc files."""
      mounts = []
      binds = []
      mkpaths = []
      targets = set()
      for (i, m) in enumerate(config.mounts):
         f = "config.mounts[%d]" % i
         path_check(m.container_path, f + ".container_path")
         path_check(m.host_path, f + ".host_path")
         dst = os.path.normpath(m.container_path)
         if (m.propagation != pb.MountPropagation.PROPAGATION_PRIVATE):
            raise err.Invalid_Argument(
               "%s.propagation: only PROPAGATION_PRIVATE is supported (the "
               "pod's mount namespace is private)" % f)
         if (m.recursive_read_only):
            raise err.Invalid_Argument("%s.recursive_read_only: not "
                                       "supported" % f)
         if (m.HasField("image") and m.image.image):
            raise err.Unimplemented("%s.image: image volumes are not "
                                    "supported" % f)
         if (m.selinux_relabel):
            log.info("%s: SELinux relabel ignored (no SELinux)", f)
         if (dst == "/dev" or dst.startswith("/dev/")):
            # ch-run mounts the host's /dev; nothing can be bound in it.
            log.warning("%s: %s skipped: Charliecloud binds the host's /dev",
                        f, dst)
            continue
         if (dst in ("/proc", "/sys") or dst.startswith(("/proc/", "/sys/"))):
            raise err.Invalid_Argument("%s.container_path: %s is mounted by "
                                       "Charliecloud from the host" % (f, dst))
         if (not os.path.exists(m.host_path)):
            try:
               os.makedirs(m.host_path, 0o755)
            except OSError as x:
               raise err.Invalid_Argument("%s.host_path: can't create %s: %s"
                                          % (f, m.host_path, x.strerror))
         targets.add(dst)
         if (dst in CHRUN_FILES or dst == "/tmp" or dst.startswith("/tmp/")):
            if (m.readonly):
               raise err.Invalid_Argument("%s.readonly: %s can only be "
                                          "mounted read-write" % (f, dst))
            binds.append((m.host_path, dst))
            if (not dst.startswith("/tmp")):
               mkpaths.append((dst, "dir" if os.path.isdir(m.host_path)
                                     else "file"))
         else:
            mounts.append({ "src": m.host_path, "dst": dst,
                            "ro": m.readonly })
      for name in ("hosts", "resolv.conf", "hostname"):
         dst = "/etc/" + name
         if (dst not in targets):
            binds.append((os.path.join(pod.dir_, name), dst))
            mkpaths.append((dst, "file"))
      return (mounts, binds, mkpaths)

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
         argv = self.ch.run_argv(merged, s["argv"], s["env"], s["cwd"],
                                 s["uid"], s["gid"], s["binds"], s["write"])
         rootfs = { "lower": self.ch.image_path(c.image_id),
                    "upper": os.path.join(c.dir_, "rootfs", "upper"),
                    "work": os.path.join(c.dir_, "rootfs", "work"),
                    "merged": merged }
         try:
            res = kc.call(pod.sock, "start", id=c.id_, dir=c.dir_, argv=argv,
                          env=self.ch.run_env(), log=s["log"], tty=s["tty"],
                          stdin=s["stdin"], rootfs=rootfs,
                          mounts=s["mounts"], mkpaths=s["mkpaths"])
         except kc.Keeper_Error as x:
            raise err.Failed_Precondition("container %s: start failed: %s"
                                          % (id_, x))
         with self.store.lock:
            c.status = res["status"]
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
         if (timeout > 0):
            kc.call(pod.sock, "signal", id=c.id_,
                    signal=c.spec["stop_signal"])
            res = kc.call(pod.sock, "wait", limit=timeout + 10, id=c.id_,
                          timeout=timeout)
            if (res.get("exited")):
               return self.status_take(c, res)
         kc.call(pod.sock, "signal", id=c.id_, signal=int(signal.SIGKILL),
                 all=True)
         res = kc.call(pod.sock, "wait", limit=KILL_WAIT + 10, id=c.id_,
                       timeout=KILL_WAIT)
         if (not res.get("exited")):
            raise err.Internal("container %s: still running %ds after "
                               "SIGKILL" % (c.id_, KILL_WAIT))
         self.status_take(c, res)
      except kc.Keeper_Error as x:
         if (x.gone_p):
            self.store.keeper_gone(pod)
            return
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
               kc.call(pod.sock, "remove", id=c.id_)
            except kc.Keeper_Error as x:
               if (not x.gone_p):
                  raise err.Internal("container %s: remove: %s" % (id_, x))
         with self.store.lock:
            self.store.containers.pop(c.id_, None)
         self.store.dir_remove(c.dir_)
      log.info("container %s removed", id_)

   def list(self, f):
      with self.store.lock:
         ctrs = list(self.store.containers.values())
      out = []
      for c in ctrs:
         if (f is not None):
            if (f.id and not c.id_.startswith(f.id)):
               continue
            if (f.pod_sandbox_id and not c.pod_id.startswith(f.pod_sandbox_id)):
               continue
            if (f.HasField("state") and c.state != f.state.state):
               continue
            if (any(c.config.labels.get(k) != v
                    for (k, v) in f.label_selector.items())):
               continue
         out.append(c.pb_short())
      return out

   def exec_sync(self, id_, cmd, timeout):
      c = self.get(id_)
      if (not cmd):
         raise err.Invalid_Argument("cmd: empty")
      if (timeout < 0):
         raise err.Invalid_Argument("timeout: negative")
      pid = self.running_pid(c)
      pod = self.pods.get(c.pod_id)
      s = c.spec
      argv = self.ch.exec_argv(os.path.join(c.dir_, "rootfs", "merged"), pid,
                               list(cmd), s["env"], s["cwd"])
      try:
         res = kc.call(pod.sock, "exec", limit=(timeout or FOREVER) + 30,
                       id=c.id_, argv=argv, env=self.ch.run_env(),
                       timeout=timeout, max=EXEC_OUTPUT_MAX)
      except kc.Keeper_Error as x:
         raise err.Failed_Precondition("container %s: exec failed: %s"
                                       % (id_, x))
      if (res.get("timed_out")):
         raise err.Deadline_Exceeded("command %r timed out after %ds"
                                     % (list(cmd)[0], timeout))
      return (base64.b64decode(res["stdout"]), base64.b64decode(res["stderr"]),
              res["exit_code"])

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
         kc.call(pod.sock, "reopen", id=c.id_)
      except kc.Keeper_Error as x:
         raise err.Failed_Precondition("container %s: reopen log: %s"
                                       % (id_, x))

   def resources_update(self, id_, resources):
      c = self.get(id_)
      with c.op_lock:
         fsutil.json_write_atomic(os.path.join(c.dir_, "resources.json"),
                                  { "resources": sb.pb_dict(resources) })
         c.resources = resources
      log.info("container %s: resources recorded (not enforced yet)", id_)
