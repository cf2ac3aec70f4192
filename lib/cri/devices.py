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


def node_check(path, field, perms="rwm"):
   """Return the device cgroup rule [type, major, minor, access] that
      lets a container use device node path with permissions perms (any
      of "rwm"); raise Invalid_Argument naming field unless path is a
      device node and perms are valid.

      >>> node_check("/dev/null", "f", "rw")
      ['c', 1, 3, 'rw']
   """
   try:
      st = os.stat(path)
   except OSError as x:
      raise err.Invalid_Argument("%s: %s: %s" % (field, path, x.strerror))
   if (not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode))):
      raise err.Invalid_Argument("%s: %s is not a device node"
                                 % (field, path))
   perms = perms or "rwm"
   if (not set(perms) <= set("rwm")):
      raise err.Invalid_Argument("%s: permissions %r: only r, w and m"
                                 % (field, perms))
   return ["c" if stat.S_ISCHR(st.st_mode) else "b",
           os.major(st.st_rdev), os.minor(st.st_rdev), perms]


def devices_make(config):
   """Return ([(host path, container path)], [device cgroup rule]) of the
      request's devices (the kubelet's device plugins give them), each
      checked."""
   out = []
   rules = []
   for (i, d) in enumerate(config.devices):
      f = "config.devices[%d]" % i
      rules.append(node_check(d.host_path, f + ".host_path", d.permissions))
      out.append((d.host_path, dev_path_check(d.container_path or d.host_path,
                                              f + ".container_path")))
   return (out, rules)


def cdi_make(config, dirs=None):
   """Return the CDI edits config asks for, as {"env": ["K=V"],
      "dev_binds": [(host, container path)], "rules": [device cgroup
      rules], "mounts": [keeper mounts], "gids": [...], "hooks": [keeper
      hook ops]}, or None if it asks for none. Specs are read anew
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
   out = { "env": list(e["env"]), "dev_binds": [], "rules": [],
           "mounts": [], "gids": list(e["additionalGIDs"]),
           "hooks": cdi.hooks_plan(e["hooks"], config.metadata.name) }
   for n in e["deviceNodes"]:
      f = "CDI device node %s" % n["path"]
      host = n.get("hostPath") or n["path"]
      out["rules"].append(node_check(host, f, n.get("permissions")))
      out["dev_binds"].append((host, dev_path_check(n["path"], f)))
   for m in e["mounts"]:
      opts = m.get("options") or []
      # Always a bind (CDI's "bind" and "rbind" alike: the keeper binds
      # recursively), never a new file system of the spec's "type".
      out["mounts"].append({ "src": m["hostPath"],
                             "dst": os.path.normpath(m["containerPath"]),
                             "ro": "ro" in opts, "rro": False,
                             "nosuid": "nosuid" in opts,
                             "nodev": "nodev" in opts,
                             "propagation": "private" })
   return out
