# Pods (CRI "pod sandboxes"): each is a keeper process holding the pod's
# namespaces, and a directory in the state directory.

import json
import os
import secrets
import threading
import time

from google.protobuf import json_format

import fsutil
import misc
import cri.cgroups as cgroups
import cri.cni as cni
import cri.errors as err
import cri.keeper.client as kc
import cri.keeper.proc as proc
import cri.podspec as podspec
import cri.slirp as slirp
import cri.store as st

from cri_api.v1 import api_pb2 as pb


## Constants ##

KEEPER_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                         "keeper", "keeper.py")
KEEPER_START_TIMEOUT = 10
SHUTDOWN_TIMEOUT = 30
HOSTS_POD = ("127.0.0.1\tlocalhost\n"
             "::1\tlocalhost ip6-localhost ip6-loopback\n")


## Globals ##

log = misc.log


## Functions ##

def pb_dict(msg):
   return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def field_or_none(msg, name):
   "Return message field name of msg if it is set, else None."
   return getattr(msg, name) if msg.HasField(name) else None


## Classes ##

class Pod:
   """A pod: its config (the CRI PodSandboxConfig), directory and keeper.
      op_lock serialises its lifecycle operations (see store.Store)."""

   def __init__(self, store, id_, config, created_at, handler):
      self.store = store
      self.id_ = id_
      self.config = config
      self.created_at = created_at
      self.handler = handler
      self.dir_ = store.path("pods", id_)
      self.sock = store.sock_path(id_)
      self.op_lock = threading.Lock()
      self.stopped_at = None
      self.keeper_pid = None
      self.keeper_error = None
      self.alive = False
      self.net = None          # what CNI ADD returned (network.json)
      self.userns_proc = None  # (pid, start) holding its user namespace
      self.short = None        # (state, pb.PodSandbox), see pb_short

   @classmethod
   def load(class_, store, id_):
      d = fsutil.json_read(store.path("pods", id_, "config.json"))
      config = json_format.ParseDict(d["config"], pb.PodSandboxConfig())
      p = class_(store, id_, config, d["created_at"], d.get("handler", ""))
      try:
         p.stopped_at = fsutil.json_read(os.path.join(p.dir_, "state.json")) \
                        .get("stopped_at")
      except FileNotFoundError:
         pass
      try:
         p.net = fsutil.json_read(os.path.join(p.dir_, "network.json"))
      except FileNotFoundError:
         pass
      return p

   @property
   def ns_opts(self):
      return self.config.linux.security_context.namespace_options

   @property
   def host_net_p(self):
      return self.ns_opts.network == pb.NamespaceMode.NODE

   @property
   def state(self):
      if (self.stopped_at is None and self.alive):
         return pb.PodSandboxState.SANDBOX_READY
      return pb.PodSandboxState.SANDBOX_NOTREADY

   def keeper_alive_p(self):
      "Find out from disk and /proc whether our keeper runs; remember."
      try:
         k = fsutil.json_read(os.path.join(self.dir_, "keeper.json"))
      except (FileNotFoundError, fsutil.State_Error):
         self.alive = False
         return False
      self.keeper_error = k.get("error")
      self.keeper_pid = k.get("pid")
      if (k.get("userns_pid")):
         self.userns_proc = (k["userns_pid"], k.get("userns_start"))
      self.alive = proc.alive_p(k.get("pid"), k.get("pid_start"))
      return self.alive

   def keeper_dead(self):
      self.alive = False

   @property
   def userns_p(self):
      "True if the pod has a user namespace of its own (hostUsers: false)."
      return (self.ns_opts.HasField("userns_options")
              and self.ns_opts.userns_options.mode == pb.NamespaceMode.POD)

   def userns_open(self):
      """Return a descriptor of the pod's own user namespace; raise
         Failed_Precondition if its holder is gone."""
      (pid, start) = self.userns_proc or (None, None)
      if (not proc.alive_p(pid, start)):
         raise err.Failed_Precondition("pod %s: its user namespace is gone"
                                       % self.id_)
      try:
         return os.open("/proc/%d/ns/user" % pid, os.O_RDONLY | os.O_CLOEXEC)
      except OSError as x:
         raise err.Failed_Precondition("pod %s: user namespace: %s"
                                       % (self.id_, x.strerror))

   def pb_short(self):
      """Return the pb.PodSandbox that ListPodSandbox answers with, kept
         until the pod's state changes."""
      state = self.state
      short = self.short
      if (short is None or short[0] != state):
         short = self.short = (state, pb.PodSandbox(
            id=self.id_, metadata=self.config.metadata, state=state,
            created_at=self.created_at, labels=self.config.labels,
            annotations=self.config.annotations,
            runtime_handler=self.handler))
      return short[1]

   def pb_status(self):
      s = pb.PodSandboxStatus(id=self.id_, metadata=self.config.metadata,
                              state=self.state, created_at=self.created_at,
                              labels=self.config.labels,
                              annotations=self.config.annotations,
                              runtime_handler=self.handler)
      (ip, others) = cni.result_ip((self.net or {}).get("result") or {})
      if (ip):
         # Without one, no network at all: the kubelet replaces a pod
         # whose network has an empty IP, again and again.
         s.network.ip = ip
         s.network.additional_ips.extend(pb.PodIP(ip=i) for i in others)
      s.linux.namespaces.options.CopyFrom(self.ns_opts)
      return s

   def state_save(self):
      fsutil.json_write_atomic(os.path.join(self.dir_, "state.json"),
                               { "stopped_at": self.stopped_at })


class Pods:
   "Pod operations over a Store."

   def __init__(self, store, monitor, ch, python, net=None, init=None,
                cg=None, squash=None):
      self.init = init         # ch-cri-init, the pod init where shared
      self.squash = squash     # cri.squash.Squash, or None
      self.monitor = monitor   # cri.monitor.Monitor: follows the keepers
      self.cg = cg if (cg is not None and cg.usable) else None
      self.store = store
      self.ch = ch
      self.python = python
      self.net = net           # cni.Network, or None: loopback only
      self.list_cache = None   # (key, response), see list_response

   def get(self, id_, field="pod_sandbox_id"):
      """Return the pod id_ names (a full ID or a unique prefix); raise
         Not_Found naming field."""
      if (not id_):
         raise err.Invalid_Argument("%s: empty" % field)
      with self.store.lock:
         p = self.store.pods.get(id_)
         if (p is None and len(id_) < 64):
            ms = [v for (k, v) in self.store.pods.items()
                  if k.startswith(id_)]
            p = ms[0] if len(ms) == 1 else None
      if (p is None):
         raise err.Not_Found("pod sandbox not found: %s" % id_)
      return p

   def find(self, id_):
      "Like get(), but return None if missing (for idempotent calls)."
      try:
         return self.get(id_)
      except err.Not_Found:
         return None

   def run(self, config, handler):
      md = config.metadata
      for (v, f) in ((md.name, "name"), (md.namespace, "namespace"),
                     (md.uid, "uid")):
         if (not v):
            raise err.Invalid_Argument("config.metadata.%s: empty" % f)
      if (handler):
         raise err.Not_Found("runtime handler %r not supported: ch-cri has "
                             "only the default handler \"\"" % handler)
      podspec.line_check(config.hostname, "config.hostname")
      for s in (list(config.dns_config.servers)
                + list(config.dns_config.searches)
                + list(config.dns_config.options)):
         podspec.line_check(s, "config.dns_config")
      if (config.log_directory and not os.path.isabs(config.log_directory)):
         raise err.Invalid_Argument("config.log_directory: not absolute: %s"
                                    % config.log_directory)
      ns = config.linux.security_context.namespace_options
      podspec.sysctls_check(config.linux.sysctls, ns)
      podspec.port_mappings_check(config.port_mappings)
      podspec.userns_check(ns)
      if (config.linux.cgroup_parent):
         try:
            cgroups.parent_path(config.linux.cgroup_parent,
                                self.cg.driver if self.cg else "cgroupfs")
         except cgroups.Cgroup_Error as x:
            raise err.Invalid_Argument("config.linux.%s" % x)
      if (ns.network == pb.NamespaceMode.TARGET
          or ns.ipc == pb.NamespaceMode.TARGET):
         raise err.Invalid_Argument("config.linux.security_context."
                                    "namespace_options: TARGET is only for "
                                    "pid")
      with self.store.lock:
         for p in self.store.pods.values():
            m = p.config.metadata
            if ((m.name, m.namespace, m.uid, m.attempt)
                == (md.name, md.namespace, md.uid, md.attempt)):
               raise err.Already_Exists(
                  "pod sandbox name %s_%s_%s_%d is in use by %s"
                  % (md.name, md.namespace, md.uid, md.attempt, p.id_))
         while True:
            id_ = secrets.token_hex(32)
            if (not any(k[:st.SOCK_ID_LEN] == id_[:st.SOCK_ID_LEN]
                        for k in self.store.pods)):
               break
         pod = Pod(self.store, id_, config, time.time_ns(), handler)
         self.store.pods[id_] = pod   # reserves the name
      try:
         with pod.op_lock:
            self.keeper_start(pod)
      except BaseException:
         with self.store.lock:
            del self.store.pods[id_]
         self.store.dir_remove(pod.dir_)
         self.cg_remove(pod)
         raise
      self.store.events.pod_publish("created", pod)
      self.store.events.pod_publish("started", pod)
      log.info("pod %s (%s/%s) ready, keeper pid %s", id_, md.namespace,
               md.name, pod.keeper_pid)
      return id_

   def keeper_start(self, pod):
      config = pod.config
      self.store.dir_create("pods", pod.id_,
                            { "config": pb_dict(config),
                              "created_at": pod.created_at,
                              "handler": pod.handler })
      (overhead, resources) = (field_or_none(config.linux, f)
                               for f in ("overhead", "resources"))
      if (overhead or resources):
         try:
            self.resources_apply(pod, overhead, resources)
         except cgroups.Cgroup_Error as x:
            raise err.Invalid_Argument("config.linux.resources: %s" % x)
      host_net = pod.host_net_p
      hostname = config.hostname or os.uname().nodename
      resolv = podspec.resolv_conf(config.dns_config)
      if (resolv is None):
         with open("/etc/resolv.conf") as fp:
            resolv = fp.read()
      if (not host_net and getattr(self.net, "dns", None)):
         # The host's, or the kubelet's copy of them (dns_config).
         resolv = slirp.resolv_fix(resolv)
      if (host_net):
         with open("/etc/hosts") as fp:
            hosts = fp.read()
      else:
         hosts = HOSTS_POD
      for (name, text) in (("hosts", hosts), ("resolv.conf", resolv),
                           ("hostname", hostname + "\n")):
         fsutil.file_write_atomic(os.path.join(pod.dir_, name),
                                  text.encode(), 0o644)
      if (config.log_directory):
         try:
            os.makedirs(config.log_directory, 0o755, exist_ok=True)
         except OSError as x:
            log.warning("pod %s: can't make log directory %s: %s", pod.id_,
                        config.log_directory, x)
      fsutil.json_write_atomic(os.path.join(pod.dir_, "keeper-args.json"),
                               { "socket": pod.sock,
                                 "hostname": (None if host_net else hostname),
                                 "net": not host_net,
                                 "pidns": ("pod" if pod.ns_opts.pid
                                           == pb.NamespaceMode.POD
                                           else None),
                                 "init": self.init,
                                 "sysctls": dict(config.linux.sysctls),
                                 "uts": not host_net,
                                 "ipc": (pod.ns_opts.ipc
                                         != pb.NamespaceMode.NODE),
                                 "userns": podspec.userns_maps(),
                                 "pod_userns": podspec.userns_pod_maps(
                                    pod.ns_opts) })
      argv = self.ch.keeper_argv(
         self.python, KEEPER_PY, pod.dir_, net_p=not host_net,
         uts_p=not host_net,
         ipc_p=pod.ns_opts.ipc != pb.NamespaceMode.NODE,
         self_ns_p=os.geteuid() == 0)
      if (self.squash is not None):
         # An ordinary user's keeper starts below the SquashFS namespace,
         # so that the images mounted there reach the pod.
         argv[2:2] = self.squash.keeper_prefix()
      klog = os.path.join(pod.dir_, "keeper.log")
      try:
         misc.cmd_detach(argv, klog, KEEPER_START_TIMEOUT)
      except misc.Command_Error as x:
         raise err.Internal("pod keeper failed to start: %s" % x)
      deadline = time.monotonic() + KEEPER_START_TIMEOUT
      while not pod.keeper_alive_p():
         if (pod.keeper_error):
            raise err.Failed_Precondition("pod keeper failed: %s"
                                          % pod.keeper_error)
         if (time.monotonic() > deadline):
            with open(klog, errors="replace") as fp:
               why = misc.stderr_tail(fp.read()) or "no output"
            # It may yet come up, with nobody to stop it: stop it now.
            n = proc.keeper_kill(pod.dir_)
            raise err.Internal("pod keeper did not start in %ds (%d "
                               "process%s killed): %s"
                               % (KEEPER_START_TIMEOUT, n,
                                  "" if n == 1 else "es", why))
         time.sleep(0.005)
      if (not host_net and self.net is not None and self.net.ready):
         self.network_add(pod)
      self.monitor.follow(pod)

   def network_add(self, pod):
      "Connect the pod to the network, or stop its keeper and raise."
      try:
         pod.net = self.net.add(
            pod.id_, "/proc/%d/ns/net" % pod.keeper_pid,
            pod.config.port_mappings,
            hold=kc.Keeper_Client(pod.sock).hold)
         fsutil.json_write_atomic(os.path.join(pod.dir_, "network.json"),
                                  pod.net)
      except (cni.Cni_Error, kc.Keeper_Error, OSError) as x:
         try:
            kc.Keeper_Client(pod.sock).shutdown(limit=SHUTDOWN_TIMEOUT)
         except kc.Keeper_Error:
            pass
         if (isinstance(x, slirp.Port_Error)):
            raise err.Failed_Precondition(str(x))
         raise err.Internal("pod network: %s" % x)

   def network_del(self, pod):
      "Disconnect the pod (its netns, if the keeper still runs)."
      if (pod.net is None or self.net is None):
         return
      ns = "/proc/%d/ns/net" % pod.keeper_pid if pod.alive else ""
      self.net.delete(pod.id_, ns, pod.net)
      try:
         os.unlink(os.path.join(pod.dir_, "network.json"))
      except FileNotFoundError:
         pass
      pod.net = None

   def stop(self, id_):
      pod = self.find(id_)
      if (pod is None):
         return
      with pod.op_lock:
         if (pod.stopped_at is not None):
            return
         self.network_del(pod)
         if (pod.alive):
            try:
               kc.Keeper_Client(pod.sock).shutdown(limit=SHUTDOWN_TIMEOUT)
            except kc.Keeper_Error as x:
               if (not self.store.keeper_fail(pod, x)):
                  raise err.Internal("pod %s: stop: %s" % (id_, x))
         pod.stopped_at = time.time_ns()
         pod.state_save()
         pod.alive = False
      # The keeper recorded every exit before answering; make sure we show
      # them now rather than when its events arrive.
      self.store.keeper_gone(pod)
      self.store.events.pod_publish("stopped", pod)
      log.info("pod %s stopped", id_)

   def remove(self, pod):
      "Remove stopped pod's directory and forget it."
      with pod.op_lock:
         self.network_del(pod)     # if stop could not (keeper gone)
         with self.store.lock:
            self.store.pods.pop(pod.id_, None)
         self.store.dir_remove(pod.dir_)
         self.cg_remove(pod)
         try:
            os.unlink(pod.sock)
         except OSError:
            pass
      self.store.events.pod_publish("deleted", pod)
      log.info("pod %s removed", pod.id_)

   def cg_key(self, pod):
      """Return (key, owned) of pod's cgroup (see cgroups.Cgroups), or
         None without cgroups."""
      if (self.cg is None):
         return None
      try:
         return self.cg.pod_key(pod.config.linux.cgroup_parent, pod.id_)
      except cgroups.Cgroup_Error:
         return None

   def cg_remove(self, pod):
      "Remove the pod's cgroup if ch-cri made it."
      k = self.cg_key(pod)
      if (k is not None and k[1]):
         self.cg.remove(k[0])

   def resources_apply(self, pod, overhead, resources):
      """Apply resources plus overhead to pod's cgroup if ch-cri owns it
         (the kubelet writes the cgroup_parent it gives); return whether
         they were. Raise Cgroup_Error."""
      k = self.cg_key(pod)
      if (k is None or not k[1]):
         return False
      self.cg.create(k[0], cgroups.sum_resources(resources, overhead))
      return True

   def resources_update(self, id_, overhead, resources):
      "UpdatePodSandboxResources: record, and apply where ch-cri may."
      pod = self.get(id_)
      with pod.op_lock:
         applied = False
         if (pod.stopped_at is None):
            try:
               applied = self.resources_apply(pod, overhead, resources)
            except cgroups.Cgroup_Error as x:
               raise err.Invalid_Argument("resources: %s" % x)
         fsutil.json_write_atomic(
            os.path.join(pod.dir_, "resources.json"),
            { "overhead": pb_dict(overhead) if overhead else None,
              "resources": pb_dict(resources) if resources else None })
      k = self.cg_key(pod)
      log.info("pod %s: resources %s", pod.id_,
               "applied" if applied
               else "recorded, not enforced: %s"
                    % ("no cgroups" if k is None
                       else "pod stopped" if pod.stopped_at is not None
                       else "the kubelet manages cgroup %s" % k[0]))

   def matching(self, f):
      "Return the Pods that PodSandboxFilter f (or None) selects."
      with self.store.lock:
         pods = list(self.store.pods.values())
      if (f is None):
         return pods
      return [p for p in pods
              if (p.id_.startswith(f.id)
                  and (not f.HasField("state") or p.state == f.state.state)
                  and st.labels_match(p.config.labels, f.label_selector))]

   def list(self, f):
      return [p.pb_short() for p in self.matching(f)]

   def list_response(self, f):
      """Return ListPodSandbox's answer for filter f; unfiltered, the last
         one again while no pod came, went or changed state."""
      if (f is not None and f != pb.PodSandboxFilter()):
         return pb.ListPodSandboxResponse(items=self.list(f))
      with self.store.lock:
         pods = list(self.store.pods.values())
      return st.answer_kept(self, pods, lambda ps:
                            pb.ListPodSandboxResponse(items=ps))

   def status_info(self, pod):
      "Return the verbose info of PodSandboxStatus."
      return { "info": json.dumps({
         "pid": pod.keeper_pid if pod.alive else None,
         "netns": ("/proc/%d/ns/net" % pod.keeper_pid
                   if pod.alive and not pod.host_net_p else None),
         "dir": pod.dir_,
         "config": pb_dict(pod.config) }, sort_keys=True) }
