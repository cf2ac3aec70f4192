# The ch-cri server: wires the adapter, stores and servicers to a gRPC
# server on a unix socket, and runs until SIGTERM/SIGINT.

import concurrent.futures
import grp
import os
import signal
import socket
import stat
import tempfile
import threading

import grpc

import charlie
import fsutil
import misc
import cri.cdi
import cri.cgroups
import cri.cni
import cri.config
import cri.container
import cri.errors
import cri.images
import cri.metrics
import cri.monitor
import cri.runtime
import cri.sandbox
import cri.slirp
import cri.squash
import cri.stats
import cri.store
import cri.stream.backend
import cri.stream.server

from cri_api.v1 import api_pb2_grpc as pb_grpc


## Constants ##

GRACE = 5          # seconds in-flight RPCs get at shutdown
MSG_MAX = 16 * 2**20
SUN_PATH_MAX = 107   # longest unix socket path in bytes (then a NUL)
WORKERS = 32


## Globals ##

log = misc.log


## Exceptions ##

class Start_Error(Exception):
   "The server cannot start; the message says why and what to do."


## Functions ##

def build(cfg, version, python, init=None, ch=None, cg=None, info=None):
   """Assemble ch-cri from settings cfg, short of gRPC: the adapter (ch, or
      the real one, checked), image and state stores, the keeper-event
      monitor (following the live keepers), network, cgroups (cg, or the
      host's), pods, containers, the streaming server and, if configured,
      the metrics exporter, the last three started. Return a Parts; raise
      Start_Error. info replaces what verbose Status says of the setup."""
   if (ch is None):
      ch = charlie.Charliecloud(cfg["storage_dir"], cfg["state_dir"],
                                python=python)
      try:
         ch.check()
         fsutil.mkdirs(cfg["state_dir"])
         ch.storage_init()
      except (charlie.Charliecloud_Error, OSError) as x:
         raise Start_Error(str(x))
      log.info("Charliecloud: ch-run %s, images by %s %s, storage %s",
               ch.version,
               ("its library in our worker, from %s," % ch.libdir
                if ch.worker is not None else "ch-image"),
               ch.image_version, ch.storage)
      missing = [k for (k, v) in ch.run_features.items() if not v]
      if (missing):
         log.warning("ch-run lacks options: %s", ", ".join(missing))
   p = Parts()
   p.ch = ch
   ch.pull_stall = cfg.get("pull_progress_timeout", charlie.PULL_STALL)
   ch.pull_layers = cfg.get("pull_layers", charlie.PULL_LAYERS)
   cri.cdi.configure(cfg.get("cdi", {}))
   p.squash = cri.squash.Squash(cfg["state_dir"],
                                cfg.get("image_format", "dir"),
                                cfg.get("squash_mounter", "auto"), python)
   p.images = cri.images.Image_Store(
      ch, cri.config.Registries(cfg["registry"]), cfg["state_dir"],
      cfg["pinned_images"], cfg.get("image_stores", ()), p.squash)
   p.images.load()
   p.state = cri.store.Store(cfg["state_dir"])
   p.monitor = cri.monitor.Monitor(p.state)
   for pod in p.state.load(cri.sandbox.Pod, cri.container.Container):
      p.monitor.follow(pod)
   p.monitor.start()
   nc = cfg["network"]
   if (os.geteuid() == 0):
      p.net = cri.cni.Network(nc["cni_conf_dir"], nc["cni_bin_dirs"],
                              cfg["state_dir"], nc["subnet"], nc["bridge"],
                              nc["masquerade"])
   else:
      p.net = cri.slirp.Slirp(nc["slirp4netns"], cfg["state_dir"])
   if (p.net.ready):
      log.info("pod network: %s from %s", p.net.conf["name"], p.net.source)
   else:
      log.warning("no pod network: %s; pods not on the host network get "
                  "loopback only", p.net.reason)
   p.cg = cg or cri.cgroups.Cgroups(driver=cfg["cgroup_driver"])
   if (not p.cg.usable):
      log.warning("container resources not enforced: %s", p.cg.reason)
   else:
      n = p.cg.sweep(set(p.state.pods) | set(p.state.containers))
      if (n):
         log.info("removed %d empty cgroups of pods and containers gone", n)
   p.squash.rebuild({ c.id_: c.spec["squash"]
                      for c in p.state.containers.values()
                      if (c.spec or {}).get("squash") })
   p.pods = cri.sandbox.Pods(p.state, p.monitor, ch, python, p.net, init,
                             p.cg, p.squash)
   p.ctrs = cri.container.Containers(p.state, ch, p.pods, p.images, p.cg,
                                     init, p.squash)
   p.images.in_use = p.ctrs.image_user
   if (info is None):
      info = info_of(cfg, version, ch, p.cg, init, p.squash)
   p.interceptors = [cri.errors.Request_Decoder()]
   if (cfg.get("metrics")):
      try:
         p.exporter = cri.metrics.Exporter(
            cri.config.metrics_parse(cfg["metrics"]), p.state)
      except OSError as x:
         raise Start_Error("metrics on %s: %s" % (cfg["metrics"], x))
      p.interceptors.insert(0, p.exporter.interceptor)   # see Rpc_Metrics
   sc = cfg["streaming"]
   p.streams = cri.stream.server.Stream_Server(
      cri.stream.backend.Keeper_Backend(ch, p.ctrs, p.pods), sc["address"],
      sc["port"], sc["token_ttl"], sc["idle_timeout"],
      allow_remote=sc.get("allow_remote", False))
   try:
      p.streams.start()
   except (OSError, ValueError) as x:
      raise Start_Error("streaming server: %s" % x)
   p.stats = cri.stats.Stats(p.state, p.pods, p.ctrs, p.cg)
   p.runtime = cri.runtime.Runtime_Servicer(
      version, cfg["cgroup_driver"], info, p.pods, p.ctrs, p.stats,
      p.streams, p.net)
   p.image = cri.images.Image_Servicer(p.images)
   return p


def info_of(cfg, version, ch, cg, init, squash=None):
   """Return what verbose Status says of how ch-cri is set up (the pod
      network it adds itself: that changes)."""
   return { "version": version,
            "charliecloud": { "ch_run": ch.ch_run, "version": ch.version,
                              "ch_image": ch.ch_image,
                              "ch_image_version": ch.image_version,
                              "library": (ch.libdir if ch.worker is not None
                                          else None),
                              "run_features": ch.run_features,
                              "storage": ch.storage },
            "euid": os.geteuid(),
            "init": init,
            # Verbose Status says what limits are enforced, and if none,
            # why (as the start-up log does).
            "cgroups": { "version": 2 if cg.v2 else 1, "root": cg.root,
                         "enforced": cg.usable, "reason": cg.reason,
                         "controllers": list(cg.controllers),
                         "delegated": cg.delegated },
            "squashfs": squash.info() if squash is not None else None,
            "config": cfg["config"],
            "state_dir": cfg["state_dir"] }


def serve(cfg, version, python, init):
   """Run the server with settings cfg until a signal asks it to stop.
      init is ch-cri-init's path."""
   p = build(cfg, version, python, init)
   server = grpc.server(
      concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS,
                                            thread_name_prefix="rpc"),
      interceptors=p.interceptors,
      options=[("grpc.max_receive_message_length", MSG_MAX),
               ("grpc.max_send_message_length", MSG_MAX)])
   pb_grpc.add_RuntimeServiceServicer_to_server(p.runtime, server)
   pb_grpc.add_ImageServiceServicer_to_server(p.image, server)
   sock = cfg["socket"]
   socket_listen(server, sock, cfg["socket_mode"], cfg["socket_group"])
   server.start()
   log.info("ch-cri %s serving on %s (pid %d)", version, sock, os.getpid())
   stop = threading.Event()
   def handler(signum, frame):
      log.info("got %s; shutting down", signal.Signals(signum).name)
      stop.set()
   signal.signal(signal.SIGTERM, handler)
   signal.signal(signal.SIGINT, handler)
   while not stop.wait(3600):
      pass
   server.stop(GRACE).wait()
   p.stop()
   try:
      os.unlink(sock)
   except OSError:
      pass
   log.info("stopped")


def socket_listen(server, path, mode, group):
   """Have gRPC server listen on unix socket path, which has mode and
      group from its first moment: the socket is made in a private
      directory beside path, given both there, and renamed into place.
      (Made at path, it would be reachable with whatever mode the umask
      gives until changed.)"""
   socket_prepare(path)
   tmp = tempfile.mkdtemp(prefix=".", dir=os.path.dirname(path))   # 0700
   sock = os.path.join(tmp, "s")
   try:
      if (len(os.fsencode(sock)) > SUN_PATH_MAX):
         raise Start_Error("socket path too long: %s (ch-cri makes it "
                           "first as %s, at most %d bytes)"
                           % (path, sock, SUN_PATH_MAX))
      if (server.add_insecure_port("unix://" + sock) == 0):
         raise Start_Error("can't listen on socket %s" % path)
      socket_perms(sock, mode, group)
      os.rename(sock, path)
   finally:
      try:
         os.unlink(sock)
      except FileNotFoundError:
         pass
      os.rmdir(tmp)


def socket_perms(path, mode, group):
   "Set the socket's mode and, if named, its group."
   if (group):
      try:
         gid = grp.getgrnam(group).gr_gid
      except KeyError:
         raise Start_Error("socket_group: no such group: %s" % group)
      os.chown(path, -1, gid)
   os.chmod(path, mode)


def socket_prepare(path):
   """Make the socket's directory and remove a stale socket; refuse to
      remove anything that is not a socket."""
   fsutil.mkdirs(os.path.dirname(path), 0o755)
   try:
      st = os.lstat(path)
   except FileNotFoundError:
      return
   if (not stat.S_ISSOCK(st.st_mode)):
      raise Start_Error("not a socket, won't remove: %s" % path)
   s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
   try:
      s.settimeout(2)
      s.connect(path)
      raise Start_Error("another server is listening on %s" % path)
   except (ConnectionRefusedError, FileNotFoundError):
      pass
   finally:
      s.close()
   log.info("removing stale socket: %s", path)
   os.unlink(path)


## Classes ##

class Parts:
   """ch-cri assembled (see build()): ch, images (Image_Store), state
      (Store), monitor, net, cg, pods, ctrs, stats, streams, exporter (or
      None), the servicers runtime and image, and the gRPC interceptors
      they want."""

   def __init__(self):
      self.exporter = None

   def stop(self):
      "Stop what build() started."
      self.streams.stop()
      if (self.exporter is not None):
         self.exporter.stop()
      self.monitor.stop()
