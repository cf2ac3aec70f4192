# Devices in containers: the CRI's devices field (device plugins) and CDI
# devices (CDI_devices, cdi.k8s.io/* annotations, NVIDIA_VISIBLE_DEVICES),
# resolved at CreateContainer into what the keeper binds into the
# container's own /dev, the mounts and environment CDI asks for.

import os
import stat

import misc
import cri.cdi as cdi
import cri.errors as err


## Globals ##

log = misc.log


## Functions ##

def dev_path_check(path, field):
   """Return path normalised if it is /dev/SOMETHING; raise
      Invalid_Argument naming field.

      >>> dev_path_check("/dev/nvidia0", "f")
      '/dev/nvidia0'
   """
   p = os.path.normpath(path or "")
   if (not p.startswith("/dev/") or "\0" in p):
      raise err.Invalid_Argument("%s: %r is not a path below /dev (ch-cri "
                                 "gives devices in the container's own "
                                 "/dev only)" % (field, path))
   return p


def node_check(path, field):
   "Raise Invalid_Argument naming field unless path is a device node."
   try:
      st = os.stat(path)
   except OSError as x:
      raise err.Invalid_Argument("%s: %s: %s" % (field, path, x.strerror))
   if (not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode))):
      raise err.Invalid_Argument("%s: %s is not a device node"
                                 % (field, path))


def devices_make(config):
   """Return [(host path, container path)] of the request's devices (the
      kubelet's device plugins give them), each checked."""
   out = []
   for (i, d) in enumerate(config.devices):
      f = "config.devices[%d]" % i
      node_check(d.host_path, f + ".host_path")
      out.append((d.host_path, dev_path_check(d.container_path or d.host_path,
                                              f + ".container_path")))
   return out


def cdi_make(config, dirs=None):
   """Return the CDI edits config asks for, as {"env": ["K=V"],
      "dev_binds": [(host, container path)], "mounts": [keeper mounts],
      "gids": [...]}, or None if it asks for none. Specs are read anew
      (a DRA driver writes them while the node runs); one that does not
      parse is logged and skipped. Raise Invalid_Argument naming a device
      no spec defines, or one ch-cri cannot give."""
   cheap = cdi.names_requested(config)
   nvidia = any(e.key == cdi.NVIDIA_ENV for e in config.envs)
   if (not cheap and not nvidia):
      return None
   cache = cdi.specs_load(dirs)
   names = cdi.names_requested(config, cache)
   if (not names):
      return None
   e = cache.resolve(names)
   out = { "env": list(e["env"]), "dev_binds": [], "mounts": [],
           "gids": list(e["additionalGIDs"]) }
   for n in e["deviceNodes"]:
      f = "CDI device node %s" % n["path"]
      host = n.get("hostPath") or n["path"]
      node_check(host, f)
      out["dev_binds"].append((host, dev_path_check(n["path"], f)))
   for m in e["mounts"]:
      opts = m.get("options") or []
      out["mounts"].append({ "src": m["hostPath"],
                             "dst": os.path.normpath(m["containerPath"]),
                             "ro": "ro" in opts, "rro": False,
                             "propagation": "private" })
   for h in e["hooks"]:
      # Not run yet: CUDA's ldconfig and symlink hooks are to be
      # emulated; see ch-cri(1), "GPUs and devices".
      log.warning("container %s: CDI hook %s %s not run (hooks are not "
                  "supported yet)", config.metadata.name, h.get("path"),
                  " ".join((h.get("args") or [])[1:2]))
   return out
