# ch-cri's Charliecloud worker: a long-lived process that imports
# Charliecloud's own Python library once and runs its image operations
# (pull, storage initialisation) the way ch-image does, each in a forked
# child: no interpreter start and no library import per pull, and no
# ch-image command needed (Debian's charliecloud-builders, which holds it,
# drags in Docker and Buildah).
#
# Run as a script, isolated (python3 -I), never imported by ch-cri: its
# module path is Charliecloud's library alone, whose module names (misc,
# image, ...) would clash with ch-cri's. Standard library and
# Charliecloud's library (and its dependency requests), plus ISA-L's
# inflate (PyPI isal, in requirements.txt) when it is there: about twice
# as fast as zlib's, which stands in when it is not.
#
# Usage: python3 -I chworker.py LIBDIR BINDIR [STORAGE]  (STORAGE only
# names the worker in ps: requests say which storage)
#
# Protocol (one JSON object per line; stdin requests, stdout replies):
#   first, unasked:  {"ok": true, "version": V} or {"ok": false, "error": E}
#   request:         {"id": N, "op": "pull"|"init"|"digest", "storage": DIR,
#                     "log": FILE, "env": {K: V or null}, "args": {...}}
#   replies:         {"id": N, "pid": CHILD} at once, then
#                    {"id": N, "rc": EXIT STATUS} when the child exits
# Requests run concurrently, each in its own child (so each on its own
# storage directory: Charliecloud locks a storage for one process). The
# child's output (Charliecloud's log) goes to FILE. "args" of a pull:
# source_ref, dest_ref, arch (or null), tls_no_verify, layers (how many
# layers to fetch at once); of a digest: source_ref, out (where to save the
# manifest), tls_no_verify.

import argparse
import concurrent.futures
import ctypes
import hashlib
import io
import json
import os
import queue
import re
import selectors
import signal
import sys
import tarfile
import threading
import traceback

try:
   from isal import isal_zlib as zlib
except ImportError:
   import zlib


## Constants ##

PR_SET_PDEATHSIG = 1

# A layer in a download cache: its name is its SHA-256.
LAYER_RE = re.compile(r"([0-9a-f]{64})\.tar\.gz\Z")

# Suffix of a layer's inflated tar, beside it (never linked into ch-cri's
# download cache: its pattern is the hash and ".tar.gz").
PLAIN = ".tar"

CHUNK = 1 << 20


## Functions ##

def die_with_parent():
   "Ask the kernel to SIGKILL us when our parent dies."
   try:
      libc = ctypes.CDLL(None, use_errno=True)
      libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
   except (OSError, AttributeError):
      pass


def load(libdir, bindir):
   """Import Charliecloud's library from libdir and check that it has what
      we call, as ch-image 0.31 and later call it; return the modules."""
   sys.path.insert(0, libdir)
   import charliecloud as ch
   import build_cache as bu
   import filesystem as fs
   import pull
   for (m, names) in ((ch, ("init", "exit", "dependencies_check", "ERROR",
                            "Fatal_Error", "Build_Mode")),
                      (bu, ("init",)), (pull, ("main",)),
                      (fs, ("Path", "Storage"))):
      for n in names:
         if (not hasattr(m, n)):
            raise ImportError("%s.%s missing" % (m.__name__, n))
   # What ch-image sets before anything else.
   ch.CH_BIN = bindir
   ch.CH_RUN = os.path.join(bindir, "ch-run")
   return (ch, bu, fs, pull)


def layer_mend(path):
   """If the inflated tar of layer path (path + PLAIN, see plain_wrap())
      ends early, its last member's data not padded to a 512-byte block (as
      Debian's umoci 0.4.7 "insert" writes layers: no padding and no
      end-of-archive blocks), make it whole (padding and the two zero
      blocks added); return whether it did. containerd accepts such
      layers; Python's tarfile does not ("unexpected end of data"). The
      layer itself is left as it is: its hash is its name."""
   try:
      with open(path + PLAIN, "r+b") as fp:
         size = fp.seek(0, os.SEEK_END)
         if (size % 512 == 0):
            return False
         fp.write(b"\0" * (512 - size % 512 + 1024))
         return True
   except FileNotFoundError:
      return False


def layer_inflate(path):
   """Inflate layer path (gzip) to path + PLAIN, checking that it hashes
      to its name if that is a hash; return whether it did (False: not
      gzip, left to Charliecloud to judge). Raise Digest_Error if not."""
   tmp = "%s%s.part-%d" % (path, PLAIN, os.getpid())
   inf = Inflater(tmp)
   try:
      with open(path, "rb") as fp:
         while True:
            chunk = fp.read(CHUNK)
            if (not chunk):
               break
            inf.feed(chunk)
      (h, whole) = inf.close()
      digest_check(path, h)
      if (not whole):
         return False
      os.rename(tmp, path + PLAIN)
      tmp = None
      return True
   finally:
      inf.out.close()
      if (tmp is not None):
         try:
            os.unlink(tmp)
         except OSError:
            pass


def digest_check(path, h):
   """Raise Digest_Error if layer path is named by a hash and h (the hash
      of its bytes) is not that."""
   m = LAYER_RE.match(os.path.basename(path))
   if (m and m[1] != h):
      raise Digest_Error("layer %s: its bytes hash to %s, not to its digest"
                         % (m[1][:12], h[:12]))


def mend_wrap(ch, pull):
   """Make Charliecloud's unpack of a pulled image mend layers that end
      early (see layer_mend()) and try again, once, if it fails on one."""
   puller = getattr(pull, "Image_Puller", None)
   orig = getattr(puller, "unpack", None)
   if (orig is None or not hasattr(puller, "layer_path")):
      return   # another Charliecloud: left as it is
   def unpack(self, *args, **kwargs):
      try:
         return orig(self, *args, **kwargs)
      except ch.Fatal_Error as x:
         if ("unexpected end of data" not in str(x.args[:1])):
            raise
         mended = [h[:7] for h in (self.layer_hashes or ())
                   if layer_mend(str(self.layer_path(h)))]
         if (not mended):
            raise
         ch.INFO("layers ending early (tar without padding or end blocks), "
                 "mended: %s" % " ".join(mended))
         return orig(self, *args, **kwargs)
   puller.unpack = unpack


def prefetch_wrap(ch, pull, n):
   """Make Charliecloud fetch the layers of an image n at a time (it
      fetches them one by one) and inflate each while it downloads: once
      the manifest is known, the missing layers are downloaded by n
      threads, each with a registry connection of its own, into temporary
      names renamed when whole and checked against their digests (which
      Charliecloud 0.31 does not check), each inflated beside it (see
      plain_wrap()). Charliecloud's own loop then finds them ("using
      existing file") and fetches, with its own error messages, any a
      thread could not; a layer whose bytes are not its digest is an
      error."""
   puller = getattr(pull, "Image_Puller", None)
   orig = getattr(puller, "manifest_load", None)
   rg = getattr(pull, "rg", None)         # its registry module
   if (n < 1 or orig is None or rg is None
       or not hasattr(rg, "HTTP") or not hasattr(rg.HTTP, "_url_of")
       or not hasattr(puller, "layer_path")):
      return
   def fetch(self, h):
      path = str(self.layer_path(h))
      tmp = "%s.part-%d" % (path, threading.get_ident())
      tmp_plain = "%s%s.part-%d" % (path, PLAIN, threading.get_ident())
      reg = rg.HTTP(self.src_ref)
      sink = None
      try:
         ch.INFO("layer %s: downloading (%d at once)" % (h[:7], n))
         sink = Layer_Sink(tmp, tmp_plain)
         reg.request("GET", reg._url_of("blobs", "sha256:" + h), out=sink)
         (got, whole) = sink.finish()
         sink = None
         digest_check(path, got)
         if (whole):
            os.rename(tmp_plain, path + PLAIN)
         os.rename(tmp, path)
      finally:
         if (sink is not None):
            sink.finish()
         for p in (tmp, tmp_plain):
            try:
               os.unlink(p)
            except OSError:
               pass
         try:
            reg.close()
         except Exception:
            pass
   def manifest_load(self, *args, **kwargs):
      r = orig(self, *args, **kwargs)
      todo = [h for h in dict.fromkeys(self.layer_hashes or ())
              if not os.path.exists(str(self.layer_path(h)))]
      if (todo):
         with concurrent.futures.ThreadPoolExecutor(n) as ex:
            for f in [ex.submit(fetch, self, h) for h in todo]:
               try:
                  f.result()
               except Digest_Error as x:
                  ch.FATAL(str(x))
               except BaseException as x:
                  ch.VERBOSE("layer fetch at once failed: %s" % (x,))
      return r
   puller.manifest_load = manifest_load


def manifest_fetch(ch, fs, pull, args):
   """Save the manifest (list) the registry serves for args["source_ref"]
      at args["out"], as a pull's first request gets it; return 0, or 3 if
      the registry has no such image. The caller hashes it: that is the
      digest a pull would record."""
   reg = pull.rg.HTTP(pull.im.Reference(args["source_ref"]))
   try:
      reg.fatman_to_file(fs.Path(args["out"]), "manifest: checking digest")
   except ch.Image_Unavailable_Error:
      return 3
   finally:
      reg.close()
   return 0


def plain_wrap(ch, pull):
   """Make Charliecloud unpack each layer from its inflated tar beside it
      (PATH + PLAIN, in the pull's own storage, gone with it), made while
      it downloaded (prefetch_wrap()) or now: Charliecloud reads a layer
      twice (listing its members, then extracting them), and inflating is
      most of that; an uncompressed tar is listed by seeking from header
      to header. Each layer's bytes are checked against its digest first
      (Charliecloud 0.31 does not)."""
   im = getattr(pull, "im", None)
   image = getattr(im, "Image", None)
   orig = getattr(image, "unpack", None)
   if (orig is None):
      return
   def unpack(self, layer_tars, *args, **kwargs):
      plain = []
      for p in layer_tars:
         q = str(p) + PLAIN
         try:
            if (os.path.exists(q) or layer_inflate(str(p))):
               plain.append(type(p)(q))
            else:
               plain.append(p)    # not gzip: theirs to judge
         except Digest_Error as x:
            ch.FATAL(str(x))
      return orig(self, plain, *args, **kwargs)
   image.unpack = unpack


def tar_copy_wrap():
   """Make tarfile write a regular member of an uncompressed tar file (the
      inflated layers plain_wrap() hands Charliecloud) with
      copy_file_range(2): the kernel copies the bytes, instead of Python
      reading and writing them 16 KiB at a time (a third of a 100 MB
      image's unpacking). Anything else (sparse members, a compressed or
      streamed tar, a kernel or file system that refuses) goes the usual
      way."""
   orig = tarfile.TarFile.makefile
   if (not hasattr(os, "copy_file_range")):
      return
   def makefile(self, tarinfo, targetpath):
      src = self.fileobj
      if (tarinfo.sparse is not None
          or not isinstance(src, io.BufferedReader)
          or not isinstance(getattr(src, "raw", None), io.FileIO)):
         return orig(self, tarinfo, targetpath)
      with open(targetpath, "wb") as dst:
         (off, left) = (tarinfo.offset_data, tarinfo.size)
         try:
            while left > 0:
               n = os.copy_file_range(src.fileno(), dst.fileno(), left, off)
               if (n == 0):
                  raise tarfile.ReadError("unexpected end of data")
               (off, left) = (off + n, left - n)
            return
         except OSError:
            if (off != tarinfo.offset_data):
               raise       # part copied: a real error
      return orig(self, tarinfo, targetpath)
   tarfile.TarFile.makefile = makefile


def cli_make(mods, storage, func, args):
   "Return the argparse Namespace ch-image would make for func."
   (ch, bu, fs, pull) = mods
   return argparse.Namespace(
      func=func, bucache=ch.Build_Mode.DISABLED, arch=args.get("arch")
      or "host", always_download=False, auth=False, cache_large=0,
      debug=False, no_lock=False, password_many=False, profile=False,
      storage=fs.Path(storage), tls_no_verify=bool(args.get("tls_no_verify")),
      verbose=0, last_layer=None, parse_only=False,
      source_ref=args.get("source_ref"), dest_ref=args.get("dest_ref"))


def child(mods, req):
   "In the forked child: run req as ch-image would; never return."
   (ch, bu, fs, pull) = mods
   code = 1
   try:
      die_with_parent()
      fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
      os.dup2(fd, 1)
      os.dup2(fd, 2)
      os.close(fd)
      null = os.open("/dev/null", os.O_RDONLY)
      os.dup2(null, 0)
      sys.stdout = os.fdopen(1, "w", buffering=1)
      sys.stderr = os.fdopen(2, "w", buffering=1)
      for (k, v) in req.get("env", {}).items():
         if (v is None):
            os.environ.pop(k, None)
         else:
            os.environ[k] = v
      mend_wrap(ch, pull)
      plain_wrap(ch, pull)
      tar_copy_wrap()
      prefetch_wrap(ch, pull, int(req.get("args", {}).get("layers") or 1))
      func = pull.main if req["op"] == "pull" else (lambda cli: None)
      cli = cli_make(mods, req["storage"], func, req.get("args", {}))
      try:
         ch.init(cli)
         if (req["op"] == "digest"):
            code = manifest_fetch(ch, fs, pull, req["args"])
            raise SystemExit(code)
         ch.dependencies_check()
         ch.storage.init()
         bu.init(cli)
         cli.func(cli)
         code = 0
      except ch.Fatal_Error as x:
         ch.ERROR(*x.args, **x.kwargs)
         code = 1
      except SystemExit as x:
         code = x.code if isinstance(x.code, int) else (0 if x.code is None
                                                        else 1)
   except BaseException:
      traceback.print_exc()
      code = 1
   finally:
      try:
         sys.stdout.flush()
         sys.stderr.flush()
      finally:
         os._exit(code)


def send(obj):
   sys.stdout.write(json.dumps(obj) + "\n")
   sys.stdout.flush()


def main():
   die_with_parent()
   (libdir, bindir) = sys.argv[1:3]
   try:
      mods = load(libdir, bindir)
      import version
      send({ "ok": True, "version": getattr(version, "VERSION", "?") })
   except BaseException as x:
      send({ "ok": False, "error": "%s: %s" % (type(x).__name__, x) })
      sys.exit(1)
   sel = selectors.DefaultSelector()
   sel.register(0, selectors.EVENT_READ)
   # A child's exit wakes the loop at once (SIGCHLD writes to this pipe).
   (wake_r, wake_w) = os.pipe()
   for fd in (wake_r, wake_w):
      os.set_blocking(fd, False)
   signal.set_wakeup_fd(wake_w)
   signal.signal(signal.SIGCHLD, lambda *_: None)
   sel.register(wake_r, selectors.EVENT_READ)
   kids = dict()     # PID -> request ID
   buf = b""
   while True:
      ready = [k.fd for (k, _) in sel.select(timeout=1)]
      if (wake_r in ready):
         try:
            os.read(wake_r, 4096)
         except BlockingIOError:
            pass
      if (0 in ready):
         data = os.read(0, 65536)
         if (not data):
            break      # ch-cri closed us (its children die with us)
         buf += data
         while b"\n" in buf:
            (line, buf) = buf.split(b"\n", 1)
            try:
               req = json.loads(line)
               if (req.get("op") not in ("pull", "init", "digest")):
                  raise ValueError("unknown op: %r" % req.get("op"))
            except ValueError as x:
               send({ "id": None, "rc": 2, "error": str(x) })
               continue
            pid = os.fork()
            if (pid == 0):
               signal.set_wakeup_fd(-1)
               signal.signal(signal.SIGCHLD, signal.SIG_DFL)
               child(mods, req)
            kids[pid] = req.get("id")
            send({ "id": req.get("id"), "pid": pid })
      while kids:
         try:
            (pid, status) = os.waitpid(-1, os.WNOHANG)
         except ChildProcessError:
            break
         if (pid == 0):
            break
         send({ "id": kids.pop(pid, None),
                "rc": os.waitstatus_to_exitcode(status) })



## Classes ##

class Digest_Error(Exception):
   "A layer's bytes do not hash to its digest."


class Inflater:
   """Inflates a gzip stream given in pieces into file path (several gzip
      members one after another too, as gzip allows), hashing the
      compressed bytes. Not thread-safe; release the GIL while inflating,
      so a download and an inflation run at once."""

   def __init__(self, path):
      self.out = open(path, "wb")
      self.hash = hashlib.sha256()
      self.d = zlib.decompressobj(31)
      self.bad = None      # why the stream is not gzip, or None

   def feed(self, data):
      self.hash.update(data)
      while (data and self.bad is None):
         try:
            self.out.write(self.d.decompress(data))
         except zlib.error as x:
            self.bad = str(x)
            break
         data = self.d.unused_data if self.d.eof else b""
         if (data):
            self.d = zlib.decompressobj(31)

   def close(self):
      """Finish; return (hex SHA-256 of what was fed, True if it was
         whole gzip)."""
      self.out.close()
      return (self.hash.hexdigest(), self.bad is None and self.d.eof)


class Layer_Sink:
   """Where a layer's download goes (Charliecloud's registry code calls
      start(length), then write(chunk) for each piece): the compressed
      bytes to file gz, and to a thread of its own that inflates them to
      file plain while the download goes on and hashes them. Both are
      temporary names: the caller renames them if the hash is right."""

   def __init__(self, gz, plain):
      self.gz = open(gz, "wb")
      self.inflater = Inflater(plain)
      self.q = queue.Queue(64)
      self.thread = threading.Thread(target=self.loop, daemon=True)
      self.thread.start()

   def start(self, length):
      pass

   def write(self, chunk):
      self.gz.write(chunk)
      self.q.put(chunk)

   def loop(self):
      # Drains the queue whatever happens (the download waits on it).
      while True:
         chunk = self.q.get()
         if (chunk is None):
            break
         try:
            self.inflater.feed(chunk)
         except Exception as x:   # the disk, say: inflated later, or not
            self.inflater.bad = self.inflater.bad or str(x)

   def finish(self):
      """Wait for the inflation; return (hex SHA-256, whether the plain
         file is a whole inflation)."""
      try:
         self.gz.close()
      finally:
         self.q.put(None)
         self.thread.join()
      return self.inflater.close()


## Main ##

if (__name__ == "__main__"):
   main()
