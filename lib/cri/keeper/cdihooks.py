# CDI hooks, run by a container's starting process (spawn's B, still root
# in the keeper's namespaces, in the container's cgroups, its own mount
# namespace a copy of the keeper's) after the container's root and mounts
# are in place, before ch-run: what ch-cri emulates of NVIDIA's hooks, and
# other hooks run as OCI hooks. The plan comes from cri.cdi.hooks_plan().
#
# Standard library only (the keeper's rule).

import json
import os
import re
import subprocess

try:
   from .logio import path_in_root
except ImportError:
   from logio import path_in_root


## Constants ##

# Longest ldconfig may run, in seconds.
LDCONFIG_TIMEOUT = 30

# Where CUDA images keep their forward-compatibility driver libraries.
CUDA_COMPAT = "/usr/local/cuda/compat"

# Files written in the container's /etc/ld.so.conf.d (sorted first, so
# their libraries win, as NVIDIA's hooks order theirs).
CONF_COMPAT = "00-compat-ch-cri.conf"
CONF_CDI = "00-ch-cri-cdi.conf"

LIBCUDA_RE = re.compile(r"libcuda\.so\.(\d+)((?:\.\d+)*)")


## Exceptions ##

class Hook_Error(Exception):
   "A hook failed; the container does not start."


## Functions ##

def run(merged, plan, id_, bundle):
   """Carry out hook plan (see cri.cdi.hooks_plan()) for container id_
      whose root is mounted at merged; bundle is its directory. Raise
      Hook_Error or OSError."""
   compat = []
   for (kind, arg) in plan:
      if (kind == "symlinks"):
         symlinks_make(merged, arg)
      elif (kind == "cuda_compat"):
         d = compat_dir(merged, arg)
         if (d is not None):
            conf_write(merged, CONF_COMPAT, [d])
            compat.append(d)
      elif (kind == "ldcache"):
         folders = compat + [f for f in arg["folders"] if f not in compat]
         conf_write(merged, CONF_CDI, arg["folders"])
         ldcache_update(merged, arg["ldconfig"], folders)
      elif (kind == "oci"):
         oci_run(merged, arg, id_, bundle)
      else:
         raise Hook_Error("unknown hook operation: %s" % kind)


def in_root(merged, path):
   """Return path (inside the container) under merged, its directories
      resolved as the container would see them but not its last
      component: that is what a hook makes or replaces."""
   path = os.path.normpath("/" + path)
   return os.path.join(path_in_root(merged, os.path.dirname(path)),
                       os.path.basename(path))


def symlinks_make(merged, links):
   """Make each link [target, path]: a symlink at path (in the container)
      to target, unless something is there already (create-symlinks)."""
   for (target, link) in links:
      p = in_root(merged, link)
      if (os.path.lexists(p)):
         continue
      os.makedirs(os.path.dirname(p), exist_ok=True)
      os.symlink(target, p)


def version_parse(text):
   """Return the tuple of integers of dotted version text, or None.

      >>> version_parse("580.159.04")
      (580, 159, 4)
      >>> version_parse("x") is None
      True
   """
   try:
      return tuple(int(v) for v in text.split("."))
   except ValueError:
      return None


def compat_dir(merged, host_version):
   """Return CUDA_COMPAT if the container has CUDA forward-compatibility
      libraries for a driver newer (by major version) than the host's
      (host_version), else None (enable-cuda-compat): the newer libcuda
      then works on the older host driver; an older one never would."""
   host = version_parse(host_version)
   try:
      names = os.listdir(path_in_root(merged, CUDA_COMPAT))
   except OSError:
      return None
   best = None
   for n in names:
      m = LIBCUDA_RE.fullmatch(n)
      if (m):
         v = version_parse(m.group(1) + m.group(2))
         best = v if best is None or v > best else best
   if (best is None or host is None or best[0] <= host[0]):
      return None
   return CUDA_COMPAT


def conf_write(merged, name, folders):
   """Write the container's /etc/ld.so.conf.d/name listing folders, so
      that an ldconfig run later in the container keeps them."""
   d = in_root(merged, "/etc/ld.so.conf.d")
   os.makedirs(d, exist_ok=True)
   p = os.path.join(d, name)
   if (os.path.lexists(p)):
      os.unlink(p)
   fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                0o644)
   with os.fdopen(fd, "w") as fp:
      fp.write("".join("%s\n" % f for f in folders))


def ldcache_update(merged, ldconfig, folders):
   """Rebuild the container's /etc/ld.so.cache with the host's ldconfig,
      chrooted into its root, with folders added (update-ldcache): first
      the links to each library's SONAME in folders only (-n), then the
      cache without links (-X), so that the image's own library
      directories, which may be volumes, are read but never written."""
   if (folders):
      ldconfig_run([ldconfig, "-n", "-r", merged] + list(folders))
   ldconfig_run([ldconfig, "-X", "-r", merged] + list(folders))


def ldconfig_run(argv):
   "Run ldconfig argv; raise Hook_Error if it fails."
   try:
      p = subprocess.run(argv, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         timeout=LDCONFIG_TIMEOUT)
   except subprocess.TimeoutExpired:
      raise Hook_Error("CDI hook update-ldcache: %s ran over %d s"
                       % (argv[0], LDCONFIG_TIMEOUT))
   if (p.returncode != 0):
      raise Hook_Error("CDI hook update-ldcache: %s exited %d: %s"
                       % (argv[0], p.returncode,
                          p.stdout.decode(errors="replace").strip()[-400:]))


def oci_run(merged, hook, id_, bundle):
   """Run hook {"path", "args", "env", "timeout"} as an OCI hook: the
      container's state as JSON on its stdin, its bundle's config.json
      naming the container's root. Its PID is ours (the process that
      becomes ch-run), as seen in our PID namespace."""
   config = os.path.join(bundle, "config.json")
   tmp = config + ".tmp"
   with open(tmp, "w") as fp:
      json.dump({ "ociVersion": "1.2.0",
                  "root": { "path": merged, "readonly": False } }, fp)
   os.rename(tmp, config)
   state = { "ociVersion": "1.2.0", "id": id_, "status": "creating",
             "pid": os.getpid(), "bundle": bundle, "annotations": {} }
   env = dict(e.split("=", 1) for e in hook["env"] if "=" in e)
   words = " ".join(hook["args"][:2])
   try:
      p = subprocess.run(hook["args"], executable=hook["path"], env=env,
                         input=json.dumps(state).encode(), cwd=bundle,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         timeout=hook["timeout"])
   except subprocess.TimeoutExpired:
      raise Hook_Error("CDI hook %s: ran over %d s"
                       % (words, hook["timeout"]))
   if (p.returncode != 0):
      raise Hook_Error("CDI hook %s: exited %d: %s"
                       % (words, p.returncode,
                          p.stdout.decode(errors="replace").strip()[-400:]))
