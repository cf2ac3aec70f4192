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
# Charliecloud's library only.
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
import gzip
import json
import os
import selectors
import signal
import sys
import traceback


## Constants ##

PR_SET_PDEATHSIG = 1


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
   """If the tar in gzip file path ends early, its last member's data not
      padded to a 512-byte block (as Debian's umoci 0.4.7 "insert" writes
      layers: no padding and no end-of-archive blocks), rewrite it whole
      (padding and the two zero blocks added); return whether it did.
      containerd accepts such layers; Python's tarfile does not ("unexpected
      end of data")."""
   size = 0
   with gzip.open(path, "rb") as fp:
      while True:
         chunk = fp.read(1 << 20)
         if (not chunk):
            break
         size += len(chunk)
   if (size % 512 == 0):
      return False
   tmp = path + ".mend"
   with gzip.open(path, "rb") as src, gzip.open(tmp, "wb", 6) as dst:
      while True:
         chunk = src.read(1 << 20)
         if (not chunk):
            break
         dst.write(chunk)
      dst.write(b"\0" * (512 - size % 512 + 1024))
   os.rename(tmp, path)
   return True


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
      fetches them one by one): once the manifest is known, the missing
      layers are downloaded by n threads, each with a registry connection
      of its own, into temporary names renamed when whole; Charliecloud's
      own loop then finds them ("using existing file") and fetches, with
      its own error messages, any a thread could not."""
   puller = getattr(pull, "Image_Puller", None)
   orig = getattr(puller, "manifest_load", None)
   rg = getattr(pull, "rg", None)         # its registry module
   if (n < 2 or orig is None or rg is None
       or not hasattr(rg, "HTTP") or not hasattr(puller, "layer_path")):
      return
   def fetch(self, h):
      path = str(self.layer_path(h))
      tmp = "%s.part-%s" % (path, os.getpid())
      reg = rg.HTTP(self.src_ref)
      try:
         reg.blob_to_file(h, tmp, "layer %s: downloading (of %d at once)"
                          % (h[:7], n))
         os.rename(tmp, path)
      except BaseException:
         try:
            os.unlink(tmp)
         except OSError:
            pass
         raise
      finally:
         try:
            reg.close()
         except Exception:
            pass
   def manifest_load(self, *args, **kwargs):
      r = orig(self, *args, **kwargs)
      todo = [h for h in dict.fromkeys(self.layer_hashes or ())
              if not os.path.exists(str(self.layer_path(h)))]
      if (len(todo) > 1):
         with concurrent.futures.ThreadPoolExecutor(n) as ex:
            for f in [ex.submit(fetch, self, h) for h in todo]:
               try:
                  f.result()
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


def plain_wrap(pull):
   """Make Charliecloud unpack each layer from a decompressed copy beside
      it (PATH.tar, in the pull's own storage, gone with it): it reads a
      layer twice (listing its members, then extracting them), and
      Python's gzip is most of that; an uncompressed tar is listed by
      seeking from header to header. One decompression instead of two."""
   im = getattr(pull, "im", None)
   image = getattr(im, "Image", None)
   orig = getattr(image, "unpack", None)
   if (orig is None):
      return
   def unpack(self, layer_tars, *args, **kwargs):
      plain = []
      for p in layer_tars:
         p = str(p)
         q = p + ".tar"
         try:
            with gzip.open(p, "rb") as src, open(q, "wb") as dst:
               while True:
                  chunk = src.read(1 << 20)
                  if (not chunk):
                     break
                  dst.write(chunk)
            plain.append(type(layer_tars[0])(q) if layer_tars else q)
         except (OSError, EOFError, gzip.BadGzipFile):
            try:
               os.unlink(q)
            except OSError:
               pass
            plain.append(layer_tars[len(plain)])   # as it is: theirs to judge
      return orig(self, plain, *args, **kwargs)
   image.unpack = unpack


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
      plain_wrap(pull)
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


if (__name__ == "__main__"):
   main()
