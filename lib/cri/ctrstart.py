# A container's start path: what ch-cri prepares on the host before asking
# the pod's keeper to start it (copies of mount trees, the image ID-mapped
# for the pod's user namespace, the host user, cgroups, permissions).

import os
import stat

import misc
import cri.cgroups as cgroups
import cri.errors as err
import cri.keeper.client as kc
import cri.keeper.nsmount
import cri.security

from cri_api.v1 import api_pb2 as pb


## Constants ##

# Where ch-cri-init appears inside containers.
INIT_PATH = "/.ch-cri-init"

# The kernel's overflow group ("nogroup"), for a non-root user in group 0.
OVERFLOW_GID = 65534

# How long a keeper may take to start a container (seconds), and more for
# one with CDI hooks (each bounded by cri.cdi.HOOK_TIMEOUT).
START_LIMIT = 30
HOOKS_LIMIT = 90


## Globals ##

log = misc.log


## Functions ##

def paths_default(paths, defaults, privileged):
   """Return paths plus those of defaults not in it, unless privileged
      (containers created by an older ch-cri have no defaults in their
      spec).

      >>> paths_default(["/a"], ("/b", "/a"), False)
      ['/a', '/b']
   """
   if (privileged):
      return list(paths)
   return list(paths) + [p for p in defaults if p not in paths]


## Classes ##

class Start_Path:
   """The start path of Containers (a base class of it): its methods use
      the Containers' store, ch, init, cg and cg_key."""

   def start_call(self, c, pod, s, sec, privileged, merged, uns, fds):
      """Ask c's keeper to start it; return its reply. Descriptors made
         on the way (copies of mount trees) go in fds, closed by the
         caller whatever happens. uns: the pod's own user namespace, or
         None."""
      (mounts, binds) = self.mounts_clone(c, s["mounts"], fds, uns)
      argv = self.ch.run_argv(merged,
                              cri.security.init_argv(INIT_PATH, sec)
                              + s["argv"], s["env"], s["cwd"], s["uid"],
                              s["gid"], s["binds"] + binds, s["write"])
      if (sec is not None):
         mounts.append({ "src": self.init, "dst": INIT_PATH, "ro": True })
      rootfs = { "lower": self.images.image_path(c.image_id),
                 "upper": os.path.join(c.dir_, "rootfs", "upper"),
                 "work": os.path.join(c.dir_, "rootfs", "work"),
                 "merged": merged }
      if (s.get("squash")):
         # The image's one SquashFS mount on this node: as root a copy of
         # it goes to the keeper; an ordinary user's reaches the pod by
         # propagation (see cri/squash.py), which the keeper checks.
         self.squash.acquire(c.id_, s["squash"])   # mounted again if dead
         rootfs["lower"] = self.squash.mnt(s["squash"])
         rootfs["lower_mounted"] = True
         if (uns is None and os.geteuid() == 0):
            try:
               fds.append(cri.keeper.nsmount.tree_clone(rootfs["lower"]))
            except OSError as x:
               raise err.Failed_Precondition(
                  "container %s: SquashFS image %s: %s"
                  % (c.id_, s["squash"], x))
            rootfs.update(lower_fd=len(fds) - 1,
                          lower_mnt=os.path.join(c.dir_, "rootfs", "lower"))
      if (uns is not None):
         # The image ID-mapped into the pod's user namespace, so its
         # root owns the image there (writes go to the upper layer).
         try:
            fds.append(cri.keeper.nsmount.tree_clone(rootfs["lower"]))
            cri.keeper.nsmount.tree_idmap(fds[-1], uns)
         except OSError as x:
            raise err.Failed_Precondition(
               "container %s: image %s for the pod's user namespace: %s"
               % (c.id_, c.image_id, x))
         rootfs.update(lower_fd=len(fds) - 1,
                       lower_mnt=os.path.join(c.dir_, "rootfs", "lower"))
      user = self.user_host(c)
      if (user is not None):
         self.paths_open(c, pod, rootfs)
      procs = []
      if (self.cg is not None and self.cg.usable):
         try:
            key = self.cg_key(c)
            procs = self.cg.create(key, c.resources
                                   or c.config.linux.resources,
                                   # (none in specs made before 0.4)
                                   (None if privileged
                                    else s.get("dev_rules")))
         except cgroups.Cgroup_Error as x:
            raise err.Invalid_Argument("config.linux.resources: %s" % x)
      try:
         res = kc.Keeper_Client(pod.sock).start(
            c.id_, c.dir_, argv, self.ch.run_env(), fds=fds,
            log=s["log"], tty=s["tty"],
            log_dir=pod.config.log_directory or None,
            stdin=s["stdin"],
            stdin_once=s.get("stdin_once", False),
            rootfs=rootfs,
            mounts=mounts, mkpaths=s["mkpaths"],
            user=user, pod_userns=uns is not None,
            sys_ro=not privileged, dev=self.dev_spec(c, pod, privileged),
            masked=paths_default(
               (sec or {}).get("masked", []),
               cri.security.MASKED_DEFAULT, privileged),
            readonly=paths_default(
               (sec or {}).get("readonly", []),
               cri.security.READONLY_DEFAULT, privileged),
            pidns=s.get("pidns", "node"),
            cdi_hooks=s.get("cdi_hooks") or None,
            limit=(START_LIMIT + HOOKS_LIMIT if s.get("cdi_hooks")
                   else START_LIMIT),
            pidns_target=s.get("pidns_target"),
            cgroups=procs,
            memcg=(self.cg.dir_("memory", key) if procs
                   else None))
      except kc.Keeper_Error as x:
         self.store.keeper_fail(pod, x)
         raise err.Failed_Precondition("container %s: start failed: %s"
                                       % (c.id_, x))
      return res

   def dev_spec(self, c, pod, privileged):
      """Return the keeper's "dev" for container c: its own /dev (see
         keeper/devfs.py) with the devices and /dev files it was given,
         its pod's devpts and /dev/shm; None (the host's /dev) if
         privileged."""
      if (privileged):
         return None
      host_ipc = pod.ns_opts.ipc == pb.NamespaceMode.NODE
      return { "stage": os.path.join(c.dir_, "dev"),
               "binds": [list(b) for b in c.spec.get("dev_binds", [])],
               "shm": ("/dev/shm" if host_ipc
                       else os.path.join(pod.dir_, "shm")),
               "shm_make": not host_ipc,
               "pts": os.path.join(pod.dir_, "pts") }

   def user_host(self, c):
      """Return the host user {"uid", "gid", "groups"} container c runs
         as, or None where the keeper maps only ch-cri's own user (then
         every container user is that user)."""
      if (os.geteuid() != 0):
         return None
      s = c.spec
      (uid, gid) = (s["uid"], s["gid"])
      groups = s.get("groups", [gid])
      # ch-run runs as root (all IDs 0) or with no ID 0 at all. A root
      # user keeps group 0 and has its group as a supplemental one; a
      # non-root user in group 0 has it as a supplemental group, with
      # the overflow group as its real one (files it makes are owned by
      # that group on the host).
      if (uid == 0 and gid != 0):
         (gid, groups) = (0, [0] + groups)
      elif (uid != 0 and gid == 0):
         gid = OVERFLOW_GID
      return { "uid": uid, "gid": gid, "groups": groups }

   def paths_open(self, c, pod, rootfs):
      """Let container c's host user reach what ch-run, running as that
         user, opens: its root and binds, the pod's /etc files. The
         directories on the way get search (not read) permission for all,
         as containerd's state directories have: names are 64 random hex
         digits and the files in them are private (0600). The writable
         layer's top takes the image root's owner and mode, since the
         overlay's root directory is that of its upper layer."""
      for d in (self.store.dir_, self.store.path("containers"), c.dir_,
                os.path.join(c.dir_, "rootfs"), self.store.path("pods"),
                pod.dir_):
         os.chmod(d, 0o711)
      lower = os.stat(rootfs["lower"])
      (uid, gid) = (lower.st_uid, lower.st_gid)
      u = pod.ns_opts.userns_options
      if (pod.userns_p):
         # As the ID-mapped image shows it in the pod's namespace.
         (uid, gid) = (u.uids[0].host_id + uid, u.gids[0].host_id + gid)
      os.chown(rootfs["upper"], uid, gid)
      os.chmod(rootfs["upper"], stat.S_IMODE(lower.st_mode))

   def mounts_clone(self, c, mounts, fds, uns=None):
      """Return (mounts, binds): the container's host mounts, each with
         a copy of the host's mount tree at its source (appended to fds
         and passed to the keeper as fds[m["fd"]]) where we may make one
         (as root), so that mounts made on the host after the pod started
         are there too; and the ch-run binds of those staged for ch-run
         to bind. With uns (the pod's own user namespace) each copy is
         ID-mapped into it, so the pod's root writes volumes as host root
         would; a mount that cannot be mapped is refused."""
      out = []
      binds = []
      for (i, m) in enumerate(mounts):
         m = dict(m)
         if (os.geteuid() == 0):
            try:
               fds.append(cri.keeper.nsmount.tree_clone(m["src"]))
               m["fd"] = len(fds) - 1
               if (uns is not None):
                  cri.keeper.nsmount.tree_idmap(fds[-1], uns)
            except OSError as x:
               if (uns is not None):
                  raise err.Failed_Precondition(
                     "config.mounts[%d]: %s can't be mounted in the pod's "
                     "user namespace: %s" % (i, m["src"], x))
               log.info("mount %s: %s; the keeper binds its own view",
                        m["src"], x)
         if (m.pop("stage", False)):
            m["stage"] = os.path.join(c.dir_, "binds", str(i))
            binds.append((m["stage"], m["dst"]))
         out.append(m)
      return (out, binds)
