# The Charliecloud adapter: the only module that builds ch-run/ch-image
# command lines or knows Charliecloud's storage layout.

import contextlib
import fcntl
import hashlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import fsutil
import misc


## Constants ##

VERSION_MIN = (0, 31)

# ch-run options ch-cri uses, detected from "ch-run --help" (feature name ->
# option text).
RUN_OPTIONS = { "unset_env":  "--unset-env",
                "set_env":    "--set-env",
                "env_no_expand": "--env-no-expand",
                "join_pid":   "--join-pid",
                "write":      "--write",
                "cd":         "--cd",
                "storage":    "--storage" }

# Image directories ch-cri owns in the shared storage: "ch-cri%<64 hex>"
# (reference "ch-cri/<ID>"), temporary pull targets "ch-cri%pull-<hex>" and
# removed images awaiting deletion "ch-cri%trash-<hex>" (in img/ so the
# rename stays on one filesystem; ch-image refuses extra files in the
# storage root). Everything else in img/ belongs to the user and is never
# touched.
IMG_PREFIX = "ch-cri%"
PULL_PREFIX = IMG_PREFIX + "pull-"
TRASH_PREFIX = IMG_PREFIX + "trash-"
ID_DIR_RE = re.compile(r"ch-cri%([0-9a-f]{64})(\.sqfs)?\Z")
# An image kept as SquashFS is "ch-cri%<ID>.sqfs" beside (or instead of)
# its directory, with its config in "ch-cri%<ID>.sqfs.json" (written
# first: the image exists once the SquashFS file does).
SQFS_SUFFIX = ".sqfs"
SQFS_CONFIG_SUFFIX = ".sqfs.json"
# Content-addressed files of the download cache (layers, configs).
BLOB_RE = re.compile(r"[0-9a-f]{64}\.(tar\.gz|json)\Z")

# In ch-cri's state directory while a pull runs; found at start-up, it means
# a pull was killed.
PULL_MARKER = "pulling"

# In ch-cri's state directory: {image ID: [hex digests of the blobs in the
# download cache its pull used]}.
BLOBS_FILE = "dlcache-blobs.json"

LOCK_WAIT = 30
PULL_TIMEOUT = 3600     # ch-image fallback only: the worker's pulls end
                        # when they stop making progress (PULL_STALL)
PULL_STALL = 300        # seconds without a byte or CPU time (containerd's
                        # image_pull_progress_timeout is 5 minutes)
PULL_LOG_EVERY = 10     # seconds between progress lines of a long pull
PULL_LAYERS = 3         # layers of one image fetched at once (containerd: 3)
QUICK_TIMEOUT = 60

# The worker that runs Charliecloud's library in-process (cri/chworker.py).
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cri",
                      "chworker.py")


## Globals ##

log = misc.log


## Exceptions ##

class Charliecloud_Error(Exception):
   "Charliecloud is missing, too old, or a command failed."


class Pull_Error(Charliecloud_Error):
   """A pull failed. not_found_p says whether the registry said the image
      does not exist (or that we may not have it)."""

   def __init__(self, msg, not_found_p=False):
      super().__init__(msg)
      self.not_found_p = not_found_p


## Functions ##

def version_parse(text):
   """Return a tuple of ints from a version string.

      >>> version_parse("0.31")
      (0, 31)
      >>> version_parse("0.38~pre+1.abc")
      (0, 38)
   """
   m = re.match(r"\s*(\d+(?:\.\d+)*)", text)
   if (m is None):
      raise ValueError("unparseable version: %r" % text)
   return tuple(int(i) for i in m.group(1).split("."))


def forms_of(img_dir, id_):
   """Return the forms ("dir", "squash") of image id_ in Charliecloud image
      directory img_dir (ours or a store's)."""
   base = os.path.join(img_dir, IMG_PREFIX + id_)
   return tuple(f for (f, ok) in (("dir", os.path.isdir(base)),
                                  ("squash",
                                   os.path.isfile(base + SQFS_SUFFIX)))
                if ok)


def config_of(img_dir, id_):
   """Return (config bytes, parsed dict) of image id_ in img_dir: from its
      directory, or beside its SquashFS file."""
   base = os.path.join(img_dir, IMG_PREFIX + id_)
   path = os.path.join(base, "ch", "config.pulled.json")
   if (not os.path.isdir(base)):
      path = base + SQFS_CONFIG_SUFFIX
   with open(path, "rb") as fp:
      data = fp.read()
   return (data, json.loads(data))


def tree_hash(root):
   """Return a SHA-256 (hex) of the names, modes, sizes and modification
      times of the files under root (not their contents: fast, and what
      a rebuild changes)."""
   h = hashlib.sha256()
   for (d, dirs, files) in os.walk(root):
      dirs.sort()
      for n in sorted(dirs + files):
         p = os.path.join(d, n)
         try:
            st = os.lstat(p)
         except OSError:
            continue
         h.update(("%s\0%o\0%d\0%d\n" % (os.path.relpath(p, root),
                                          st.st_mode, st.st_size,
                                          st.st_mtime_ns)).encode(
                                             errors="surrogateescape"))
   return h.hexdigest()


## Classes ##

class Worker:
   """ch-cri's side of cri/chworker.py: a long-lived process that imports
      Charliecloud's library (libdir) once and runs each image operation
      in a forked child, several at once. A reader thread hands each reply
      to the call waiting for it; a worker that died is started again at
      the next call."""

   def __init__(self, python, libdir, bindir, env, storage):
      # storage: only to name the worker in ps (it serves any storage).
      self.argv = [python, "-I", WORKER, libdir, bindir, storage]
      self.env = env
      self.proc = None
      self.version = None
      self.lock = threading.Lock()   # guards proc, waiting, next_id
      self.waiting = dict()          # request ID -> Reply
      self.next_id = 0

   def start(self):
      """Start the worker (call with self.lock held); raise
         Charliecloud_Error if it can't load the library."""
      self.stop()
      proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, env=self.env,
                              stderr=subprocess.DEVNULL, bufsize=0,
                              start_new_session=True)
      fd = proc.stdout.fileno()
      line = b""
      deadline = time.monotonic() + QUICK_TIMEOUT
      while (not line.endswith(b"\n")):
         left = deadline - time.monotonic()
         if (left <= 0 or not select.select([fd], [], [], left)[0]):
            break
         c = os.read(fd, 1)     # byte by byte: the rest is the reader's
         if (not c):
            break
         line += c
      try:
         hello = json.loads(line)
      except ValueError:
         hello = { "error": "no greeting (%r)" % line[:200] }
      if (not hello.get("ok")):
         proc.kill()
         proc.wait()
         raise Charliecloud_Error("Charliecloud's library: %s"
                                  % hello.get("error"))
      self.version = hello.get("version")
      self.proc = proc
      threading.Thread(target=self.read_loop, args=(proc,), daemon=True,
                       name="ch-worker").start()

   def stop(self):
      if (self.proc is not None):
         try:
            self.proc.kill()
            self.proc.wait()
         except OSError:
            pass
      self.proc = None

   def read_loop(self, proc):
      "Hand the replies of worker proc to their callers, until it exits."
      buf = b""
      fd = proc.stdout.fileno()
      while True:
         try:
            data = os.read(fd, 65536)
         except OSError:
            data = b""
         if (not data):
            break
         buf += data
         while b"\n" in buf:
            (line, buf) = buf.split(b"\n", 1)
            try:
               r = json.loads(line)
            except ValueError:
               continue
            with self.lock:
               w = self.waiting.get(r.get("id"))
            if (w is not None):
               w.put(r)
      with self.lock:
         gone = [w for w in self.waiting.values() if w.proc is proc]
      for w in gone:
         w.put({ "rc": None, "error": "Charliecloud worker exited" })
      proc.stdout.close()

   def run(self, op, storage, env=None, args=None, watch=None):
      """Run op ("pull", "init") on storage with environment changes env
         ({name: value, or None to unset}) and args; return (exit status,
         its output). watch, if given, is called with the child's PID about
         every second; a string it returns is why the child is killed
         (exit status -9, and the reason ends the output)."""
      (fd, log_path) = tempfile.mkstemp(prefix="ch-cri-worker.")
      os.close(fd)
      try:
         with self.lock:
            if (self.proc is None or self.proc.poll() is not None):
               self.start()
            self.next_id += 1
            id_ = self.next_id
            w = self.waiting[id_] = Reply(self.proc)
            req = { "id": id_, "op": op, "storage": storage,
                    "log": log_path, "env": env or {}, "args": args or {} }
            try:
               self.proc.stdin.write((json.dumps(req) + "\n").encode())
            except OSError as x:
               del self.waiting[id_]
               self.stop()
               raise Charliecloud_Error("Charliecloud worker: %s" % x)
         try:
            r = w.get(QUICK_TIMEOUT)
            if (r is None or "pid" not in r):
               raise Charliecloud_Error("Charliecloud worker: %s"
                                        % ((r or {}).get("error")
                                           or "no answer"))
            pid = r["pid"]
            why = None
            while True:
               r = w.get(1.0)
               if (r is not None):
                  break
               if (watch is not None and why is None):
                  why = watch(pid)
                  if (why is not None):
                     try:
                        os.kill(pid, signal.SIGKILL)
                     except ProcessLookupError:
                        pass
            if (r.get("rc") is None):
               raise Charliecloud_Error(r.get("error") or "worker failed")
            with open(log_path, errors="replace") as fp:
               out = fp.read()
            return (r["rc"], out + ("error: %s\n" % why if why else ""))
         finally:
            with self.lock:
               self.waiting.pop(id_, None)
      finally:
         os.unlink(log_path)


class Pull_Watch:
   """Watches a pull in the worker (called with its PID about every
      second): logs its progress now and then, and says why to kill it
      when it has made none (no byte in its download cache dlcache, no CPU
      time) for stall seconds, or has run over timeout seconds."""

   def __init__(self, ref, dlcache, stall, timeout=None):
      self.ref = ref
      self.dlcache = dlcache
      self.stall = stall
      self.t0 = time.monotonic()
      self.deadline = None if timeout is None else self.t0 + timeout
      self.last = None          # (bytes, CPU ticks) last seen
      self.moved = self.t0      # when they last changed
      self.logged = self.t0

   def bytes_(self):
      "Bytes downloaded so far (not the layers' inflated copies)."
      total = 0
      try:
         with os.scandir(self.dlcache) as it:
            for e in it:
               if (".tar.gz.tar" in e.name):
                  continue
               try:
                  total += e.stat(follow_symlinks=False).st_size
               except OSError:
                  pass
      except OSError:
         pass
      return total

   @staticmethod
   def cpu(pid):
      "Return the CPU ticks (user + system) of process pid, or None."
      try:
         with open("/proc/%d/stat" % pid) as fp:
            f = fp.read().rsplit(")", 1)[1].split()
         return int(f[11]) + int(f[12])
      except (OSError, IndexError, ValueError):
         return None

   def __call__(self, pid):
      now = time.monotonic()
      seen = (self.bytes_(), self.cpu(pid))
      if (seen != self.last):
         (self.last, self.moved) = (seen, now)
      if (now - self.logged >= PULL_LOG_EVERY):
         self.logged = now
         log.info("pull %s: %.1f MB downloaded in %.0f s", self.ref,
                  seen[0] / 1e6, now - self.t0)
      if (self.deadline is not None and now > self.deadline):
         return "pull ran over %d s" % (self.deadline - self.t0)
      if (now - self.moved > self.stall):
         return ("pull made no progress for %d s (no byte downloaded, no "
                 "CPU time used)" % self.stall)
      return None


class Reply:
   "The replies to one worker request, as the reader thread gets them."

   def __init__(self, proc):
      self.proc = proc
      self.items = []
      self.cond = threading.Condition()

   def put(self, r):
      with self.cond:
         self.items.append(r)
         self.cond.notify()

   def get(self, timeout):
      "Return the next reply, or None after timeout seconds."
      with self.cond:
         if (not self.items):
            self.cond.wait(timeout)
         return self.items.pop(0) if self.items else None


class Charliecloud:
   """Charliecloud as ch-cri sees it: where its commands are, which version
      and features they have, and one storage directory.

      self.lock serialises initialising the storage (Charliecloud's own
      storage lock does not wait); pulls need none, each having a storage
      of its own. Lock order: this lock is a leaf (nothing else is taken
      while it is held)."""

   def __init__(self, storage, state_dir, bin_dir=None, python=None):
      self.storage = os.path.abspath(storage)
      self.marker = os.path.join(state_dir, PULL_MARKER)
      self.blobs_path = os.path.join(state_dir, BLOBS_FILE)
      self.python = python or sys.executable
      self.ch_run = self.command_find("ch-run", bin_dir)
      self.ch_image = self.command_find("ch-image", bin_dir)
      self.lock = threading.Lock()
      # A leaf: guards trashing, BLOBS_FILE and our download cache's names.
      self.trash_lock = threading.Lock()
      self.trashing = dict()   # trash name: trash_later()'s thread on it
      self.version = None
      self.run_features = dict()
      self.image_version = None
      self.setpriv = shutil.which("setpriv")
      self.worker = None     # a Worker, once check() found the library
      self.pull_stall = PULL_STALL
      self.pull_layers = PULL_LAYERS
      self.libdir = self.libdir_find()

   def libdir_find(self):
      """Return Charliecloud's Python library directory (PREFIX/lib/
         charliecloud beside PREFIX/bin/ch-run, or beside ch-image), or
         None."""
      for cmd in (self.ch_run, self.ch_image):
         if (cmd is None):
            continue
         d = os.path.join(os.path.dirname(os.path.dirname(
            os.path.realpath(cmd))), "lib", "charliecloud")
         if (os.path.isfile(os.path.join(d, "charliecloud.py"))):
            return d
      return None

   @property
   def dlcache_dir(self):
      return os.path.join(self.storage, "dlcache")

   @property
   def img_dir(self):
      return os.path.join(self.storage, "img")

   def command_find(self, name, bin_dir):
      if (bin_dir is not None):
         path = os.path.join(bin_dir, name)
         return path if os.access(path, os.X_OK) else None
      return shutil.which(name)

   def env(self, extra=None):
      """Environment for Charliecloud commands: ours, with $USER set (they
         refuse to run without it) and extra added."""
      env = dict(os.environ)
      env.setdefault("USER", misc.user_name())
      env.update(extra or {})
      return env

   def image_argv(self, *args):
      """Return the argv running ch-image with our interpreter on storage.
         Always without the build cache: ch-cri builds nothing, and the
         cache's git repository fails where git has no user identity."""
      return ([self.python, self.ch_image, "-s", self.storage, "--no-cache"]
              + list(args))

   def check(self):
      """Find versions and features; raise Charliecloud_Error naming what is
         missing. Called once at start-up."""
      if (self.ch_run is None):
         raise Charliecloud_Error("ch-run not found on $PATH; install "
                                  "Charliecloud >= %d.%d" % VERSION_MIN)
      if (self.libdir is not None):
         # Charliecloud's library, in our worker (no ch-image needed).
         w = Worker(self.python, self.libdir,
                    os.path.dirname(os.path.realpath(self.ch_run)),
                    self.env(), self.storage)
         try:
            w.start()
            self.worker = w
            self.image_version = w.version
         except Charliecloud_Error as x:
            if (self.ch_image is None):
               raise Charliecloud_Error("%s (%s)" % (x, self.libdir))
            log.warning("%s (%s); using ch-image instead", x, self.libdir)
      if (self.worker is None and self.ch_image is None):
         raise Charliecloud_Error("Charliecloud's Python library not found "
                                  "beside %s (Debian: charliecloud-common), "
                                  "nor ch-image" % self.ch_run)
      try:
         cp = misc.cmd_run([self.ch_run, "--version"], QUICK_TIMEOUT,
                           env=self.env())
         self.version = (cp.stdout + cp.stderr).strip()
         if (version_parse(self.version) < VERSION_MIN):
            raise Charliecloud_Error("ch-run %s too old: need >= %d.%d"
                                     % ((self.version,) + VERSION_MIN))
         cp = misc.cmd_run([self.ch_run, "--help"], QUICK_TIMEOUT,
                           env=self.env())
         help_ = cp.stdout + cp.stderr
         self.run_features = { k: (v in help_)
                               for (k, v) in RUN_OPTIONS.items() }
         if (self.worker is not None):
            return   # its children check dependencies as ch-image does
         cp = misc.cmd_run([self.python, self.ch_image, "--version"],
                           QUICK_TIMEOUT, env=self.env())
         self.image_version = (cp.stdout + cp.stderr).strip()
         cp = misc.cmd_run([self.python, self.ch_image, "--dependencies"],
                           QUICK_TIMEOUT, env=self.env(), check=False)
         if (cp.returncode != 0):
            raise Charliecloud_Error("ch-image dependencies missing with %s: %s"
                                     % (self.python,
                                        misc.stderr_tail(cp.stdout
                                                         + cp.stderr)))
      except (misc.Command_Error, ValueError) as x:
         raise Charliecloud_Error(str(x))

   def image_config(self, img_path):
      """Return (config bytes, parsed dict) of the pulled image at img_path;
         the image ID is the sha256 of those bytes."""
      path = os.path.join(img_path, "ch", "config.pulled.json")
      with open(path, "rb") as fp:
         data = fp.read()
      return (data, json.loads(data))

   def image_trash(self, id_, forms=("dir", "squash")):
      """Move the image with ID id_ (those of its forms named) into the
         trash (one rename each, so a crash never leaves half an image);
         missing is fine. Empty the trash later with trash_empty()."""
      srcs = []
      if ("dir" in forms):
         srcs.append(self.image_path(id_))
      if ("squash" in forms):
         srcs += [self.sqfs_path(id_),
                  self.sqfs_path(id_)[:-len(SQFS_SUFFIX)]
                  + SQFS_CONFIG_SUFFIX]
      for src in srcs:
         dst = os.path.join(self.img_dir, TRASH_PREFIX + uuid.uuid4().hex)
         try:
            os.rename(src, dst)
         except FileNotFoundError:
            pass

   def image_ids(self):
      """Return the set of IDs of the images in the storage (as a directory,
         a SquashFS file or both)."""
      try:
         names = os.listdir(self.img_dir)
      except FileNotFoundError:
         return set()
      return { m.group(1) for m in map(ID_DIR_RE.match, names) if m }

   def image_forms(self, id_):
      """Return the forms ("dir", "squash") in which image id_ is here, in
         that order."""
      return forms_of(self.img_dir, id_)

   def sqfs_path(self, id_):
      "Return the SquashFS file of the image with ID id_ (may not exist)."
      return os.path.join(self.img_dir, IMG_PREFIX + id_ + SQFS_SUFFIX)

   def sqfs_make(self, id_, make):
      """Add the SquashFS form of image id_, made from its directory by
         make(src, dst) (see cri.squash.Squash.make); return its size.
         Its config goes beside it first."""
      (data, _) = self.image_config(self.image_path(id_))
      dst = self.sqfs_path(id_)
      fsutil.file_write_atomic(dst[:-len(SQFS_SUFFIX)] + SQFS_CONFIG_SUFFIX,
                               data, 0o644)
      make(self.image_path(id_), dst)
      return os.stat(dst).st_size

   def image_path(self, id_):
      "Return the directory of the image with ID id_ (may not exist)."
      return os.path.join(self.img_dir, IMG_PREFIX + id_)

   def pull(self, src_ref, tls_verify=True, ca_file=None, username=None,
            password=None, timeout=None, arch=None, stall=None):
      """Pull src_ref (a string a registry serves) into the storage and
         return (image ID, manifest digest, config dict, size, inode
         count). The image lands in its content-addressed directory; if
         that already exists the new copy is dropped. Raise Pull_Error on
         failure; nothing is left behind.

         Each pull runs in a storage of its own (a scratch directory in
         img/, so pulls never wait for each other on Charliecloud's storage
         lock), which starts with hard links to the layers already
         downloaded and gives back the layers it downloads. In the worker,
         it is killed if it makes no progress (no byte downloaded, no CPU
         time used) for stall seconds (default self.pull_stall), or runs
         over timeout seconds (default: no limit)."""
      h = uuid.uuid4().hex
      tmp_ref = "ch-cri/pull-" + h
      scratch = os.path.join(self.img_dir, PULL_PREFIX + h)
      tmp_path = os.path.join(scratch, "img", PULL_PREFIX + h)
      env = { "CH_IMAGE_AUTH": "no" }
      if (username is not None):
         env.update(CH_IMAGE_AUTH="yes", CH_IMAGE_USERNAME=username,
                    CH_IMAGE_PASSWORD=password or "")
      if (ca_file is not None):
         env["REQUESTS_CA_BUNDLE"] = ca_file
      # The same, as changes to the worker's environment.
      changes = dict({ "CH_IMAGE_USERNAME": None, "CH_IMAGE_PASSWORD": None },
                     **env)
      if (not tls_verify):
         changes.update(REQUESTS_CA_BUNDLE=None, CURL_CA_BUNDLE=None)
      env = self.env(env)
      args = ["pull"]
      if (not tls_verify):
         # ch-image's --tls-no-verify loses to these variables.
         env.pop("REQUESTS_CA_BUNDLE", None)
         env.pop("CURL_CA_BUNDLE", None)
         args.insert(0, "--tls-no-verify")
      if (arch is not None):
         args[0:0] = ["--arch", arch]
      argv = ([self.python, self.ch_image, "-s", scratch, "--no-cache"]
              + args + [src_ref, tmp_ref])
      watch = Pull_Watch(src_ref, os.path.join(scratch, "dlcache"),
                         self.pull_stall if stall is None else stall,
                         timeout)
      try:
         self.scratch_make(scratch)
         if (self.worker is not None):
            (rc, out) = self.worker.run(
               "pull", scratch, changes,
               { "source_ref": src_ref, "dest_ref": tmp_ref, "arch": arch,
                 "tls_no_verify": not tls_verify,
                 "layers": self.pull_layers }, watch)
         else:
            cp = self.image_run(argv, timeout or PULL_TIMEOUT, env)
            (rc, out) = (cp.returncode, cp.stdout + cp.stderr)
         if (rc != 0):
            nf = bool(re.search(r"not in registry|no such image|"
                                r"MANIFEST_UNKNOWN|NAME_UNKNOWN", out))
            raise Pull_Error("pull %s: %s"
                             % (src_ref, misc.stderr_tail(out)), nf)
         (data, config) = self.image_config(tmp_path)
         id_ = hashlib.sha256(data).hexdigest()
         dl = os.path.join(scratch, "dlcache")
         digest = self.manifest_digest(tmp_ref, dl)
         (size, inodes) = fsutil.tree_size(tmp_path)
         final = self.image_path(id_)
         if (not os.path.isdir(final)):
            os.rename(tmp_path, final)
         self.blobs_keep(id_, dl, self.pull_blobs(tmp_ref, dl))
         return (id_, digest, config, size, inodes)
      except Pull_Error:
         raise
      except Charliecloud_Error as x:
         # The worker died or did not answer: a failed pull, not ours.
         raise Pull_Error("pull %s: %s" % (src_ref, x))
      except misc.Command_Error as x:
         raise Pull_Error(str(x))
      except (OSError, ValueError) as x:
         raise Pull_Error("pull %s: bad image in storage: %s" % (src_ref, x))
      finally:
         self.trash_later(scratch)

   def remote_digest(self, src_ref, tls_verify=True, ca_file=None,
                     username=None, password=None):
      """Return the digest ("sha256:...") a pull of src_ref would record now,
         from the registry's manifest (list), without pulling; None if the
         registry has no such image. Raise Pull_Error if it can't be asked
         (or Charliecloud's library is not in our worker)."""
      if (self.worker is None):
         raise Pull_Error("no digest check without Charliecloud's library")
      env = { "CH_IMAGE_AUTH": "yes" if username is not None else "no",
              "CH_IMAGE_USERNAME": username, "CH_IMAGE_PASSWORD": password }
      if (ca_file is not None):
         env["REQUESTS_CA_BUNDLE"] = ca_file
      if (not tls_verify):
         env.update(REQUESTS_CA_BUNDLE=None, CURL_CA_BUNDLE=None)
      (fd, out) = tempfile.mkstemp(prefix="ch-cri-manifest.")
      os.close(fd)
      try:
         (rc, log_) = self.worker.run(
            "digest", os.path.join(self.storage, "none"), env,
            { "source_ref": src_ref, "out": out,
              "tls_no_verify": not tls_verify },
            Pull_Watch(src_ref, out, QUICK_TIMEOUT, QUICK_TIMEOUT))
         if (rc == 3):
            return None
         if (rc != 0):
            raise Pull_Error("manifest of %s: %s"
                             % (src_ref, misc.stderr_tail(log_)))
         with open(out, "rb") as fp:
            return "sha256:" + hashlib.sha256(fp.read()).hexdigest()
      finally:
         os.unlink(out)

   def local_import(self, name):
      """Take image name (a ch-image reference: "foo", "org/foo:1.0") that
         a user built, imported or pulled with ch-image in this storage,
         as one of ours: copy it into its ID's directory and return (image
         ID, config dict, size, inode count). Raise Pull_Error (not found)
         if the storage has no such image.

         Its config is the one it was pulled with, if any (its ID then is
         a registry pull's); else one made from ch-image's metadata (env,
         working directory, labels, architecture; Charliecloud keeps no
         CMD or ENTRYPOINT), naming a hash of the image's files, so that a
         rebuilt image gets a new ID."""
      if (":" not in name.rsplit("/", 1)[-1]):
         name += ":latest"
      d = os.path.join(self.img_dir, name.replace("/", "%")
                                         .replace(":", "+"))
      if (os.path.basename(d).startswith(IMG_PREFIX)
          or not os.path.isdir(d)):
         raise Pull_Error("no image %s in storage %s (ch-image list shows "
                          "its images)" % (name, self.storage), True)
      try:
         pulled = os.path.join(d, "ch", "config.pulled.json")
         if (os.path.isfile(pulled)):
            with open(pulled, "rb") as fp:
               data = fp.read()
         else:
            with open(os.path.join(d, "ch", "metadata.json")) as fp:
               md = json.load(fp)
            data = json.dumps({
               "architecture": md.get("arch") or "amd64", "os": "linux",
               "config": { "Env": ["%s=%s" % kv for kv in
                                   sorted((md.get("env") or {}).items())],
                           "WorkingDir": md.get("cwd") or "/",
                           "Labels": md.get("labels") or {} },
               "rootfs": { "type": "layers",
                           "diff_ids": ["sha256:" + tree_hash(d)] } },
               sort_keys=True).encode()
         config = json.loads(data)
      except (OSError, ValueError, AttributeError) as x:
         raise Pull_Error("image %s in storage %s: %s"
                          % (name, self.storage, x))
      id_ = hashlib.sha256(data).hexdigest()
      final = self.image_path(id_)
      if (not os.path.isdir(final)):
         tmp = os.path.join(self.img_dir, PULL_PREFIX + uuid.uuid4().hex)
         try:
            # A copy, not links: ch-image may change its image in place.
            shutil.copytree(d, tmp, symlinks=True)
            fsutil.file_write_atomic(os.path.join(tmp, "ch",
                                                  "config.pulled.json"), data)
            os.rename(tmp, final)
         except OSError as x:
            raise Pull_Error("image %s: can't copy %s: %s" % (name, d, x))
         finally:
            fsutil.rmtree(tmp)
      (size, inodes) = fsutil.tree_size(final)
      return (id_, config, size, inodes)

   def scratch_make(self, scratch):
      """Make scratch a Charliecloud storage of the same version as ours,
         its download cache holding hard links to our downloaded layers
         and configs (content-addressed: never changed once complete)."""
      os.mkdir(scratch, 0o755)
      for n in os.listdir(self.storage):
         src = os.path.join(self.storage, n)
         if (n == "version"):
            shutil.copyfile(src, os.path.join(scratch, n))
         elif (os.path.isdir(src) and not os.path.islink(src)):
            os.mkdir(os.path.join(scratch, n), 0o755)
      with self.storage_free() as free:
         if (free):
            self.blobs_link(self.dlcache_dir,
                            os.path.join(scratch, "dlcache"))
         else:
            log.info("storage %s in use by ch-image: pulling without its "
                     "downloaded layers", self.storage)

   @contextlib.contextmanager
   def storage_free(self):
      """Yield whether no other process (a user's ch-image) holds
         Charliecloud's lock on our storage, holding it meanwhile if so:
         ch-image writes downloads in place, so while it runs a layer in
         the download cache may be half there."""
      try:
         fp = open(os.path.join(self.storage, "lock"), "a")
      except OSError:
         yield True
         return
      try:
         fcntl.lockf(fp, fcntl.LOCK_EX | fcntl.LOCK_NB)
         yield True
      except OSError:
         yield False
      finally:
         fp.close()

   @staticmethod
   def blobs_link(src, dst):
      "Hard-link the content-addressed files of download cache src into dst."
      try:
         names = os.listdir(src)
      except FileNotFoundError:
         return
      os.makedirs(dst, exist_ok=True)
      for n in names:
         if (BLOB_RE.match(n)):
            try:
               os.link(os.path.join(src, n), os.path.join(dst, n))
            except FileExistsError:
               pass
            except OSError as x:
               log.debug("download cache: can't link %s: %s", n, x)

   def image_op(self, op, args, changes, argv, env, timeout):
      """Run image operation op: in the worker (with args and environment
         changes), else as ch-image argv with environment env. Return (exit
         status, output), retrying for a while if another process holds the
         storage lock."""
      if (self.worker is None):
         cp = self.image_run(argv, timeout, env)
         return (cp.returncode, cp.stdout + cp.stderr)
      deadline = time.monotonic() + LOCK_WAIT
      while True:
         (rc, out) = self.worker.run(op, self.storage, changes, args)
         if (rc == 0 or "lock" not in out.lower()
             or time.monotonic() > deadline):
            return (rc, out)
         log.info("storage %s locked by another process; retrying",
                  self.storage)
         time.sleep(0.5)

   def image_run(self, argv, timeout, env):
      """Run ch-image argv, retrying for a while if another process holds
         the storage lock (ch-image does not wait for it). Killed with us
         where setpriv can arrange that, so a killed server leaves no pull
         running."""
      if (self.setpriv is not None):
         argv = [self.setpriv, "--pdeathsig", "KILL"] + argv
      deadline = time.monotonic() + LOCK_WAIT
      while True:
         cp = misc.cmd_run(argv, timeout, env=env, check=False)
         if (   cp.returncode == 0
             or "lock" not in (cp.stdout + cp.stderr).lower()
             or time.monotonic() > deadline):
            return cp
         log.info("storage %s locked by another process; retrying",
                  self.storage)
         time.sleep(0.5)

   def keeper_argv(self, python, keeper_py, pod_dir, net_p, uts_p, ipc_p,
                   self_ns_p=False):
      """Return the argv that starts a pod's keeper detached (setsid -f, so
         it outlives us) in new namespaces owned by a new user namespace
         that maps our UID to root: mount, and network, UTS and IPC unless
         the pod shares the host's. With self_ns_p the keeper makes its
         namespaces itself (as root, to map more than one ID)."""
      if (self_ns_p):
         return ["setsid", "-f", python, "-I", "-S", keeper_py, pod_dir]
      # slave: host mounts made later (e.g. under a hostPath) reach the
      # pod, none of the pod's reach the host.
      argv = ["setsid", "-f", "unshare", "--user", "--map-root-user",
              "--mount", "--propagation", "slave"]
      argv += ["--net"] if net_p else []
      argv += ["--uts"] if uts_p else []
      argv += ["--ipc"] if ipc_p else []
      return argv + ["--", python, "-I", "-S", keeper_py, pod_dir]

   def run_argv(self, root, argv, env, cwd, uid, gid, binds, write_p):
      """Return the ch-run argv running argv in image directory root (the
         container's overlay) with exactly environment env (a list of
         "K=V"), working directory cwd, user uid:gid, extra read-write
         binds [(host, guest)], and a writable root if write_p. /tmp is
         private; the image's /etc/passwd and /etc/group are used."""
      a = [self.ch_run, "--no-passwd", "--private-tmp", "--unset-env=*",
           "--env-no-expand", "-c", cwd, "-u", str(uid), "-g", str(gid)]
      a += ["--write"] if write_p else []
      for (src, dst) in binds:
         a.append("--bind=%s:%s" % (src, dst))
      a += ["--set-env=%s" % kv for kv in env]
      return a + [root, "--"] + list(argv)

   def exec_argv(self, root, pid, argv, env, cwd):
      """Return the ch-run argv running argv inside the container whose
         main process is pid (joining its user and mount namespaces; the
         caller is already in the pod's other namespaces)."""
      a = [self.ch_run, "--join-pid=%d" % pid, "--unset-env=*",
           "--env-no-expand", "-c", cwd]
      a += ["--set-env=%s" % kv for kv in env]
      return a + [root, "--"] + list(argv)

   def run_env(self):
      """Return the environment ch-run itself needs (not the container's):
         it refuses to run without $USER. Inside the keeper's user
         namespace we are root."""
      return { "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
               "USER": "root", "LANG": "C" }

   def manifest_digest(self, tmp_ref, dlcache):
      """Return "sha256:..." of the manifest list (or, for an
         architecture-unaware image, the manifest) Charliecloud fetched for
         tmp_ref into download cache dlcache, or None if it kept none."""
      base = tmp_ref.replace("/", "%").replace(":", "+")
      paths = [os.path.join(dlcache, base + ".fat.json"),
               os.path.join(dlcache, base + "%skinny.manifest.json")]
      for p in paths:
         try:
            with open(p, "rb") as fp:
               data = fp.read()
         except FileNotFoundError:
            continue
         try:
            obj = json.loads(data)
         except ValueError:
            continue
         if ("manifests" in obj or "layers" in obj or "fsLayers" in obj):
            return "sha256:" + hashlib.sha256(data).hexdigest()
      return None

   def pull_blobs(self, tmp_ref, dlcache):
      """Return the hex digests of the config and layers the manifest
         Charliecloud fetched for tmp_ref into download cache dlcache names
         (empty if it kept none)."""
      base = tmp_ref.replace("/", "%").replace(":", "+") + "%"
      out = []
      for n in os.listdir(dlcache):
         if (not (n.startswith(base) and n.endswith(".manifest.json"))):
            continue
         try:
            with open(os.path.join(dlcache, n), "rb") as fp:
               m = json.load(fp)
            ds = ([(m.get("config") or {}).get("digest")]
                  + [l.get("digest") for l in m.get("layers") or ()]
                  + [l.get("blobSum") for l in m.get("fsLayers") or ()])
         except (OSError, ValueError, AttributeError):
            continue
         out += [d[7:] for d in ds
                 if isinstance(d, str) and d.startswith("sha256:")]
      return sorted(set(out))

   def blobs_read(self):
      "Return the image-to-blobs map (see BLOBS_FILE); {} if none."
      try:
         m = fsutil.json_read(self.blobs_path).get("images")
      except (OSError, fsutil.State_Error):
         return {}
      return m if isinstance(m, dict) else {}

   def blobs_keep(self, id_, dlcache, blobs):
      """Record that image id_ was pulled from blobs (hex digests) and link
         the blobs of download cache dlcache into ours."""
      with self.trash_lock:
         m = self.blobs_read()
         m[id_] = sorted(set(m.get(id_, [])) | set(blobs))
         fsutil.json_write_atomic(self.blobs_path, { "images": m })
         self.blobs_link(dlcache, self.dlcache_dir)

   def dlcache_prune(self):
      """Delete the blobs in the download cache that a removed image was
         pulled from and no image still here was: a removed image's layers
         go with it (as containerd's content does), those shared with an
         image still here stay. Only blobs ch-cri recorded are deleted:
         an unprivileged ch-cri's storage may be its user's own ch-image
         storage, whose downloads are the user's."""
      with self.trash_lock:
         ids = self.image_ids()
         m = self.blobs_read()
         kept = { i: b for (i, b) in m.items() if i in ids }
         if (kept == m):
            return
         used = set().union(*kept.values())
         for h in set().union(*m.values()) - used:
            for ext in (".tar.gz", ".json"):
               try:
                  os.unlink(os.path.join(self.dlcache_dir, h + ext))
               except OSError:
                  pass
         fsutil.json_write_atomic(self.blobs_path, { "images": kept })

   def pull_files_remove(self, tmp_dir):
      "Remove the download-cache manifests of a temporary pull target."
      try:
         names = os.listdir(self.dlcache_dir)
      except FileNotFoundError:
         return
      for n in names:
         if (n.startswith(tmp_dir + ".") or n.startswith(tmp_dir + "%")):
            try:
               os.unlink(os.path.join(self.dlcache_dir, n))
            except OSError:
               pass

   def storage_gc(self):
      """Remove leftovers of interrupted pulls and deletions. Call at
         start-up, before any pull."""
      try:
         names = os.listdir(self.img_dir)
      except FileNotFoundError:
         names = []
      for n in names:
         if (n.startswith(PULL_PREFIX)):
            log.info("removing interrupted pull: %s", n)
            fsutil.rmtree(os.path.join(self.img_dir, n))
            self.pull_files_remove(n)
         elif (".sqfs.tmp-" in n
               or (n.endswith(SQFS_CONFIG_SUFFIX)
                   and (n[:-len(SQFS_CONFIG_SUFFIX)] + SQFS_SUFFIX)
                       not in names)):
            log.info("removing interrupted SquashFS image: %s", n)
            os.unlink(os.path.join(self.img_dir, n))
      self.trash_empty()
      # Before pulls had storages of their own, ch-image wrote downloads
      # in place in ours, and an interrupted pull (this marker, from an
      # older ch-cri) could leave a truncated blob it would trust later.
      if (os.path.exists(self.marker)):
         log.warning("pull was interrupted: emptying download cache %s",
                     self.dlcache_dir)
         for n in os.listdir(self.dlcache_dir):
            if (n.endswith(".json") or n.endswith(".tar.gz")):
               os.unlink(os.path.join(self.dlcache_dir, n))
         os.unlink(self.marker)

   def trash_later(self, path):
      """Move directory path (in img_dir) into the trash and delete it in a
         thread of its own, off the caller's way (a pull's scratch storage,
         its layers inflated: deleting them is milliseconds a pull need not
         wait for). What a crash leaves, storage_gc() deletes at start-up."""
      dst = os.path.join(self.img_dir, TRASH_PREFIX + uuid.uuid4().hex)
      try:
         os.rename(path, dst)
      except FileNotFoundError:
         return
      except OSError:
         fsutil.rmtree(path)
         return
      def delete():
         try:
            fsutil.rmtree(dst)
         except OSError as x:
            log.warning("can't delete %s: %s", dst, x)
      t = threading.Thread(target=delete, daemon=True, name="trash")
      with self.trash_lock:
         self.trashing = { n: u for (n, u) in self.trashing.items()
                           if u.is_alive() }
         self.trashing[os.path.basename(dst)] = t
         t.start()    # alive before trash_empty() can look

   def trash_wait(self):
      "Wait for trash_later()'s deletions (before a command exits)."
      with self.trash_lock:
         ts = list(self.trashing.values())
      for t in ts:
         t.join()

   def trash_empty(self):
      """Delete what image_trash() moved aside (not what trash_later()
         does), and the download cache's blobs no image here needs."""
      try:
         names = os.listdir(self.img_dir)
      except FileNotFoundError:
         return
      with self.trash_lock:
         busy = { n for (n, t) in self.trashing.items() if t.is_alive() }
      names = [n for n in names if n not in busy]
      for n in names:
         if (n.startswith(TRASH_PREFIX)):
            p = os.path.join(self.img_dir, n)
            if (os.path.isdir(p) and not os.path.islink(p)):
               fsutil.rmtree(p)
            else:
               os.unlink(p)
      self.dlcache_prune()

   def storage_init(self):
      """Make sure the storage directory exists and is valid, letting
         ch-image initialise (or upgrade) it."""
      fsutil.mkdirs(os.path.dirname(self.storage), 0o755)
      try:
         with self.lock:
            (rc, out) = self.image_op("init", {}, {},
                                      self.image_argv("list"), self.env(),
                                      QUICK_TIMEOUT)
         if (rc != 0):
            raise misc.Command_Error(["ch-image"], misc.stderr_tail(out))
      except misc.Command_Error as x:
         raise Charliecloud_Error("can't initialise storage %s: %s"
                                  % (self.storage, x))
