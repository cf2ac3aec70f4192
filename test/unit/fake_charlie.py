# A fake Charliecloud adapter for the unit tests: the interface of
# charlie.Charliecloud that cri/images.py uses, backed by a temporary
# storage directory and a dict standing in for the registries.

import hashlib
import json
import os
import threading
import uuid

import charlie
import fsutil


## Constants ##

# Longest a gated pull or config read waits before giving up, so a broken
# test fails instead of hanging.
GATE_TIMEOUT = 20


## Functions ##

def config_bytes(user="", salt=""):
   """Return the bytes of an image config with User user; salt makes
      otherwise equal configs differ (and so have different IDs)."""
   c = { "architecture": "amd64", "os": "linux",
         "config": { "Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"],
                     "User": user, "Labels": { "salt": salt } },
         "rootfs": { "type": "layers", "diff_ids": [] } }
   return json.dumps(c, sort_keys=True).encode("utf-8")


def digest_of(data):
   "Return the manifest digest the fake reports for config bytes data."
   return "sha256:" + hashlib.sha256(b"manifest\n" + data).hexdigest()


def id_of(data):
   "Return the image ID of config bytes data, as Charliecloud computes it."
   return hashlib.sha256(data).hexdigest()


## Classes ##

class Fake_Charlie:
   """Stands in for charlie.Charliecloud below cri/images.py. registry maps
      source references ("host/path:tag" or "host/path@sha256:...") to
      config bytes; a pull writes a small image tree in the real layout
      (img/ch-cri%<ID>/ch/config.pulled.json). Pods get real keepers;
      containers are sleepers on the host, never the requested command,
      and exec only echoes.

      Test hooks: pulls lists every pull call's arguments; failures maps
      source references to a message for a failure other than "not
      found"; if gate is an Event, a pull waits for it (pull_started is
      released as each pull begins); if config_gate is an Event,
      image_config waits for it.

      self.lock guards pulls and the storage changes of a pull (a leaf,
      like the real adapter's lock)."""

   def __init__(self, storage, registry=None):
      self.storage = os.path.abspath(storage)
      self.registry = dict(registry or {})
      self.failures = dict()
      self.lock = threading.Lock()
      self.pulls = []
      self.gate = None
      self.config_gate = None
      self.pull_started = threading.Semaphore(0)
      # What the real adapter's trash_empty() uses (its download cache
      # stays empty here).
      self.trash_lock = threading.Lock()
      self.trashing = dict()
      self.blobs_path = os.path.join(self.storage, "dlcache-blobs.json")
      self.dlcache_dir = os.path.join(self.storage, "dlcache")
      fsutil.mkdirs(self.img_dir)

   @property
   def img_dir(self):
      return os.path.join(self.storage, "img")

   @property
   def pull_ct(self):
      with self.lock:
         return len(self.pulls)

   def image_config(self, img_path):
      if (self.config_gate is not None):
         if (not self.config_gate.wait(GATE_TIMEOUT)):
            raise RuntimeError("fake: config gate never opened")
      with open(os.path.join(img_path, "ch", "config.pulled.json"),
                "rb") as fp:
         data = fp.read()
      return (data, json.loads(data))

   def image_ids(self):
      return { m.group(1) for m in map(charlie.ID_DIR_RE.match,
                                       os.listdir(self.img_dir)) if m }

   def image_path(self, id_):
      return os.path.join(self.img_dir, charlie.IMG_PREFIX + id_)

   def image_trash(self, id_, forms=("dir", "squash")):
      # Storage layout is the real adapter's: so is this.
      charlie.Charliecloud.image_trash(self, id_, forms)

   def image_forms(self, id_):
      return charlie.forms_of(self.img_dir, id_)

   def sqfs_path(self, id_):
      return charlie.Charliecloud.sqfs_path(self, id_)

   def sqfs_make(self, id_, make):
      # A real SquashFS file (make is cri.squash's) of the fake's image.
      return charlie.Charliecloud.sqfs_make(self, id_, make)

   def keeper_argv(self, python, keeper_py, pod_dir, net_p, uts_p, ipc_p,
                   self_ns_p=False):
      # The real keeper in its real namespaces: only ch-run is faked.
      return charlie.Charliecloud.keeper_argv(self, python, keeper_py,
                                              pod_dir, net_p, uts_p, ipc_p,
                                              self_ns_p)

   def run_argv(self, root, argv, env, cwd, uid, gid, binds, write_p):
      # Never the requested command on the host: a sleeper that logs a
      # line and ends at SIGTERM like a well-behaved container.
      return ["sh", "-c", "echo fake-started; exec sleep 300"]

   def exec_argv(self, root, pid, argv, env, cwd):
      return ["echo", "fake-exec"]

   def run_env(self):
      return { "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
               "LANG": "C" }

   def remote_digest(self, src_ref, tls_verify=True, ca_file=None,
                     username=None, password=None):
      "The digest a pull of src_ref would record now, or None."
      if (src_ref in self.failures):
         raise charlie.Pull_Error("fake: %s: %s"
                                  % (src_ref, self.failures[src_ref]))
      data = self.registry.get(src_ref)
      return None if data is None else digest_of(data)

   def pull(self, src_ref, tls_verify=True, ca_file=None, username=None,
            password=None, timeout=None, arch=None, stall=None):
      with self.lock:
         self.pulls.append({ "src": src_ref, "tls_verify": tls_verify,
                             "ca_file": ca_file, "username": username,
                             "password": password })
      self.pull_started.release()
      if (self.gate is not None and not self.gate.wait(GATE_TIMEOUT)):
         raise charlie.Pull_Error("fake: gate never opened: %s" % src_ref)
      if (src_ref in self.failures):
         raise charlie.Pull_Error("fake: %s: %s"
                                  % (src_ref, self.failures[src_ref]))
      data = self.registry.get(src_ref)
      if (data is None):
         raise charlie.Pull_Error("fake: %s: not in registry" % src_ref,
                                  True)
      id_ = id_of(data)
      tmp = os.path.join(self.img_dir,
                         charlie.PULL_PREFIX + uuid.uuid4().hex)
      with self.lock:
         fsutil.mkdirs(os.path.join(tmp, "ch"))
         fsutil.mkdirs(os.path.join(tmp, "bin"))
         with open(os.path.join(tmp, "ch", "config.pulled.json"),
                   "wb") as fp:
            fp.write(data)
         with open(os.path.join(tmp, "bin", "sh"), "wb") as fp:
            fp.write(data * 7)
         (size, inodes) = fsutil.tree_size(tmp)
         final = self.image_path(id_)
         if (os.path.isdir(final)):
            fsutil.rmtree(tmp)
         else:
            os.rename(tmp, final)
      return (id_, digest_of(data), json.loads(data), size, inodes)

   def storage_gc(self):
      for n in os.listdir(self.img_dir):
         if (n.startswith(charlie.PULL_PREFIX)):
            fsutil.rmtree(os.path.join(self.img_dir, n))
      self.trash_empty()

   def trash_empty(self):
      charlie.Charliecloud.trash_empty(self)

   def dlcache_prune(self):
      charlie.Charliecloud.dlcache_prune(self)

   def blobs_read(self):
      return charlie.Charliecloud.blobs_read(self)
