# Container run specifications: everything StartContainer and ExecSync
# need, resolved once at CreateContainer from the request and the image.

import os
import signal

import misc
import cri.devices
import cri.keeper.logio
import cri.errors as err
import cri.security

from cri_api.v1 import api_pb2 as pb


## Constants ##

# Paths ch-run itself mounts from the host; a request mount there is
# bound by ch-run (read-write only) or, for /dev, cannot be made at all.
CHRUN_FILES = ("/etc/hosts", "/etc/resolv.conf", "/etc/hostname")


## Globals ##

log = misc.log


# CRI MountPropagation -> the keeper's "mount --make-rX".
PROPAGATION = { pb.MountPropagation.PROPAGATION_PRIVATE: "private",
                pb.MountPropagation.PROPAGATION_HOST_TO_CONTAINER: "slave" }


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


def log_path_check(path):
   """Refuse a container log path that is not relative to the pod's log
      directory, as the CRI defines it, or that climbs out of it.

      >>> log_path_check("c/0.log")
      >>> log_path_check("/var/log/x.log")
      Traceback (most recent call last):
        ...
      cri.errors.Invalid_Argument: config.log_path: must be relative ...
   """
   if (path.startswith("/") or "\0" in path
       or any(p == ".." for p in path.split("/"))):
      raise err.Invalid_Argument("config.log_path: must be relative to the "
                                 "pod's log_directory, without \"..\": %r"
                                 % path)


def env_add(env, more):
   """Return "K=V" list env with those of more added, a key of more
      replacing the same key of env in place.

      >>> env_add(["A=1", "B=2"], ["B=3", "C=4"])
      ['A=1', 'B=3', 'C=4']
   """
   d = dict(kv.split("=", 1) if "=" in kv else (kv, "") for kv in env)
   for kv in more:
      (k, _, v) = kv.partition("=")
      d[k] = v
   return ["%s=%s" % kv for kv in d.items()]


def path_check(path, field):
   "Refuse a path that is not absolute and clean."
   if (not path.startswith("/") or "\0" in path
       or any(p == ".." for p in path.split("/"))):
      raise err.Invalid_Argument("%s: must be an absolute path without "
                                 "\"..\": %r" % (field, path))


def image_file(root, path):
   """Open file path (absolute, as the container sees it) of the image at
      root for reading, resolving its links inside the image (a link to
      /etc/shadow is the image's shadow, never the host's)."""
   return open(cri.keeper.logio.path_in_root(root, path), errors="replace")


def db_lookup(root, path, key, by_name):
   """Return the fields of the first entry of the image's passwd/group
      file path whose name (by_name) or ID matches key, or None."""
   try:
      with image_file(root, path) as fp:
         for line in fp:
            f = line.rstrip("\n").split(":")
            if (len(f) >= 4 and f[0 if by_name else 2] == str(key)):
               return f
   except OSError:
      pass
   return None


def security_unapplied(config):
   """Return the names of the security fields set in config that ch-cri
      cannot apply (fully), so they are logged rather than silently
      dropped. See ch-cri(1), Limitations."""
   sc = config.linux.security_context
   out = []
   if (sc.privileged):
      out.append("security_context.privileged (capabilities inside the "
                 "container's own user namespace only)")
   for f in ("apparmor", "selinux_options"):
      if (sc.HasField(f)):
         out.append("security_context." + f)
   if (sc.supplemental_groups and os.geteuid() != 0):
      out.append("security_context.supplemental_groups (an ordinary "
                 "user's ch-cri has one host group)")
   return out


def pidns_mode(config, pod):
   """Return (mode, target) for the container's PID namespace: "container"
      (its own; the kubelet's default), "pod" (shared by the pod), "node"
      (the host's) or "target" (another container's, target)."""
   ns = config.linux.security_context.namespace_options
   if (ns.pid == pb.NamespaceMode.TARGET):
      if (not ns.target_id):
         raise err.Invalid_Argument("config.linux.security_context."
                                    "namespace_options.target_id: empty")
      return ("target", ns.target_id)
   return ({ pb.NamespaceMode.CONTAINER: "container",
             pb.NamespaceMode.NODE: "node" }.get(ns.pid, "pod"), None)


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


def make(ch, images, pod, config, image_id, root=None):
   """Return the run specification of a container: everything StartContainer
      and ExecSync need, resolved once from the request and the image (its
      tree at root, if not its directory: a SquashFS mount)."""
   icfg = images.config(image_id).get("config") or {}
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
   root = root or images.image_path(image_id)
   (uid, gid) = user_resolve(config, icfg.get("User") or "", root)
   groups = groups_resolve(config, uid, gid, root)
   log_path = ""
   if (config.log_path):
      log_path_check(config.log_path)
      if (pod.config.log_directory):
         log_path = os.path.join(pod.config.log_directory, config.log_path)
   (mounts, binds, mkpaths, dev_binds) = mounts_make(pod, config, images)
   mkpaths.append((cwd, "dir"))
   (binds_given, dev_rules) = cri.devices.devices_make(config)
   dev_binds += binds_given
   edits = cri.devices.cdi_make(config)
   hooks = []
   if (edits is not None):
      env = env_add(env, edits["env"])
      dev_binds += edits["dev_binds"]
      dev_rules += edits["rules"]
      mounts += edits["mounts"]
      groups += [g for g in edits["gids"] if g not in groups]
      hooks = edits["hooks"]
   (pidns, pidns_target) = pidns_mode(config, pod)
   sec = cri.security.make(config)
   unapplied = security_unapplied(config)
   if (unapplied):
      log.warning("container %s: not applied (see ch-cri(1), "
                  "Limitations): %s", config.metadata.name,
                  ", ".join(unapplied))
   return { "argv": argv, "env": env, "cwd": cwd, "uid": uid, "gid": gid,
            "groups": groups,
            "log": log_path, "tty": config.tty, "stdin": config.stdin,
            "stdin_once": config.stdin_once,
            "write": not config.linux.security_context.readonly_rootfs,
            "mounts": mounts, "binds": binds, "mkpaths": mkpaths,
            "dev_binds": dev_binds, "dev_rules": dev_rules,
            "cdi_hooks": hooks,
            "stop_signal": signal_parse(icfg.get("StopSignal")),
            "pidns": pidns, "pidns_target": pidns_target,
            "security": sec }


def user_resolve(config, image_user, root):
   """Return (uid, gid) the container runs as: the request's
      run_as_user/run_as_username/run_as_group, else the image's USER,
      names looked up in the image's /etc/passwd and /etc/group."""
   sc = config.linux.security_context
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
      ent = db_lookup(root, "/etc/passwd", user, not user.isdigit())
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
         ent = db_lookup(root, "/etc/group", grp, True)
         if (ent is None):
            raise err.Invalid_Argument("image USER: no group %r in the "
                                       "image's /etc/group" % grp)
         gid = int(ent[2])
   if (uid < 0 or (gid is not None and gid < 0)):
      raise err.Invalid_Argument("%s: negative ID" % field)
   return (uid, gid if gid is not None else 0)


def groups_resolve(config, uid, gid, root):
   """Return the container's groups, as runc gives them: its primary gid,
      those the image's /etc/group lists its user in, and the request's
      supplemental_groups."""
   out = [gid]
   ent = db_lookup(root, "/etc/passwd", uid, False)
   if (ent is not None):
      try:
         with image_file(root, "/etc/group") as fp:
            for line in fp:
               f = line.rstrip("\n").split(":")
               if (len(f) >= 4 and ent[0] in f[3].split(",")
                   and f[2].isdigit()):
                  out.append(int(f[2]))
      except OSError:
         pass
   sc = config.linux.security_context
   for (i, g) in enumerate(sc.supplemental_groups):
      if (g < 0 or g > 0xfffffffe):
         raise err.Invalid_Argument("config.linux.security_context."
                                    "supplemental_groups[%d]: not a group "
                                    "ID: %d" % (i, g))
      out.append(g)
   return sorted(set(out), key=out.index)


def image_volume(images, m, f, dst):
   """Return the keeper mount of image volume m (field f) at dst: the
      image's tree (ours or a store's), or its image_sub_path, read-only
      whatever the request says. The kubelet pulls the image first."""
   if (images is None):
      raise err.Unimplemented("%s.image: no image store here" % f)
   img = images.find(m.image.image, f + ".image.image")
   if (img is None):
      raise err.Not_Found("%s.image.image: image %s not found (pull it "
                          "first)" % (f, m.image.image))
   if ("dir" not in img.forms):
      raise err.Failed_Precondition(
         "%s.image.image: image %s is kept as SquashFS only, which image "
         "volumes can't use yet; pull it as a directory (see ch-cri(1))"
         % (f, m.image.image))
   src = images.image_path(img.id_)
   sub = getattr(m, "image_sub_path", "")
   if (sub):
      parts = sub.split("/")
      if (sub.startswith("/") or ".." in parts or "\0" in sub):
         raise err.Invalid_Argument("%s.image_sub_path: %r must be a "
                                    "relative path without .." % (f, sub))
      # Resolved as inside the image: a symlink there leads nowhere else.
      src = cri.keeper.logio.path_in_root(src, sub)
      if (not os.path.exists(src)):
         raise err.Invalid_Argument("%s.image_sub_path: %s is not in image "
                                    "%s" % (f, sub, m.image.image))
   return { "src": src, "dst": dst, "ro": True, "rro": True,
            "propagation": "private", "image_id": img.id_ }


def host_mount(config, m, f, dst, dev_binds):
   """Return the keeper mount of host-path mount m (field f) at dst, or
      None if it goes into the container's own /dev (added to dev_binds).
      Raise for what can't be mounted."""
   path_check(m.host_path, f + ".host_path")
   if (m.propagation == pb.MountPropagation.PROPAGATION_BIDIRECTIONAL):
      raise err.Invalid_Argument(
         "%s.propagation: PROPAGATION_BIDIRECTIONAL is impossible: mounts "
         "in a user namespace never propagate to the host" % f)
   if (m.recursive_read_only and not m.readonly):
      raise err.Invalid_Argument("%s.recursive_read_only: needs "
                                 "readonly" % f)
   if (m.recursive_read_only
       and m.propagation != pb.MountPropagation.PROPAGATION_PRIVATE):
      raise err.Invalid_Argument("%s.recursive_read_only: needs "
                                 "propagation PROPAGATION_PRIVATE "
                                 "(later submounts would be writable)"
                                 % f)
   if (m.selinux_relabel):
      log.info("%s: SELinux relabel ignored (no SELinux)", f)
   if (dst == "/dev"):
      raise err.Invalid_Argument("%s.container_path: /dev is the "
                                 "container's own" % f)
   if (dst.startswith("/dev/")):
      # Into the container's own /dev, made by the keeper's child
      # (/dev/termination-log, above all); a privileged container has
      # the host's, where nothing can be bound.
      if (config.linux.security_context.privileged):
         log.warning("%s: %s skipped: a privileged container has the "
                     "host's /dev", f, dst)
      else:
         dev_binds.append((m.host_path, dst))
      return None
   if (dst in ("/proc", "/sys") or dst.startswith(("/proc/", "/sys/"))):
      raise err.Invalid_Argument("%s.container_path: %s is mounted by "
                                 "Charliecloud from the host" % (f, dst))
   try:
      os.stat(m.host_path)
   except FileNotFoundError:
      try:
         os.makedirs(m.host_path, 0o755)
      except OSError as x:
         raise err.Invalid_Argument("%s.host_path: can't create %s: %s"
                                    % (f, m.host_path, x.strerror))
   except OSError as x:
      # Typically a root kubelet's pod directory (mode 0750) seen by an
      # unprivileged ch-cri: the path exists, we just can't reach it.
      raise err.Failed_Precondition(
         "%s.host_path: can't access %s: %s (ch-cri runs as uid %d)"
         % (f, m.host_path, x.strerror, os.geteuid()))
   return { "src": m.host_path, "dst": dst, "ro": m.readonly,
            "rro": m.recursive_read_only,
            "propagation": PROPAGATION[m.propagation] }


def mounts_make(pod, config, images=None):
   """Return (keeper mounts, ch-run binds, paths to create, binds into the
      container's own /dev) for the request's mounts (image volumes from
      images) and the pod's /etc files."""
   mounts = []
   binds = []
   mkpaths = []
   dev_binds = []
   targets = set()
   for (i, m) in enumerate(config.mounts):
      f = "config.mounts[%d]" % i
      path_check(m.container_path, f + ".container_path")
      dst = os.path.normpath(m.container_path)
      if (m.HasField("image") and m.image.image):
         if (dst in ("/dev", "/proc", "/sys")
             or dst.startswith(("/dev/", "/proc/", "/sys/"))):
            raise err.Invalid_Argument("%s.container_path: %s can't hold "
                                       "an image volume" % (f, dst))
         mount = image_volume(images, m, f, dst)
      else:
         mount = host_mount(config, m, f, dst, dev_binds)
         if (mount is None):
            continue
      targets.add(dst)
      if (dst in CHRUN_FILES or dst == "/tmp" or dst.startswith("/tmp/")):
         # ch-run mounts these itself, after the keeper, so only ch-run
         # --bind reaches them: of the source as it is (read-write,
         # private), or as root of a copy of the source's tree the keeper
         # staged with the options asked for.
         if (os.geteuid() == 0):
            mounts.append(dict(mount, stage=True))
         elif (mount["ro"] or m.propagation):
            raise err.Invalid_Argument("%s: %s can only be mounted "
                                       "read-write and private by an "
                                       "unprivileged ch-cri" % (f, dst))
         else:
            binds.append((mount["src"], dst))
         if (not dst.startswith("/tmp")):
            mkpaths.append((dst, "dir" if os.path.isdir(mount["src"])
                                  else "file"))
      else:
         mounts.append(mount)
   for name in ("hosts", "resolv.conf", "hostname"):
      dst = "/etc/" + name
      if (dst not in targets):
         binds.append((os.path.join(pod.dir_, name), dst))
         mkpaths.append((dst, "file"))
   return (mounts, binds, mkpaths, dev_binds)
