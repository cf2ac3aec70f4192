# Read-only image stores: directories of images that ch-cri uses but never
# writes, typically on a shared file system, so that a thousand nodes run
# one copy of an image instead of each pulling its own.
#
# A store is laid out as ch-cri's own images are: STORE/images.json (the
# index, in ch-cri's format: ID -> tags, digests, size, inodes, user) and
# STORE/storage (a Charliecloud storage directory, images in
# storage/img/ch-cri%ID, or storage/img/ch-cri%ID.sqfs for SquashFS). "ch-cri
# store add [--squash] STORE REF..." fills one by pulling through the same
# code as PullImage (see store_command()).

import fcntl
import os
import sys
import time

import charlie
import fsutil
import imgref
import misc


## Constants ##

INDEX_FILE = "images.json"
STORAGE_DIR = "storage"
LOCK_FILE = ".lock"

# How often, at most, a store's index is looked at again (seconds): the
# kubelet asks about images several times a second.
REFRESH_EVERY = 1.0


## Globals ##

log = misc.log


## Classes ##

class Read_Store:
   """One read-only image store, as the server sees it: its index, read
      again when it changes (checked at most every REFRESH_EVERY seconds).
      A store that is gone or unreadable has no images (logged once), and
      comes back when it does. A refresh replaces its view (images by ID,
      IDs by reference) whole: a reader takes it once, never half of one
      refresh and half of another."""

   def __init__(self, path, image_class):
      self.path = os.path.abspath(path)
      self.index = os.path.join(self.path, INDEX_FILE)
      self.img_dir = os.path.join(self.path, STORAGE_DIR, "img")
      self.image_class = image_class
      self.view = ({}, {})    # (ID -> Image, tag or digest string -> ID)
      self.stamp = None       # the index's (inode, mtime, size) as read
      self.checked = 0.0      # time.monotonic() of the last look
      self.broken = None      # why the store has no images, if so

   def __repr__(self):
      return "image store %s" % self.path

   def refresh(self, force=False, now_p=False):
      """Read the index again if it changed (or force), looking at most
         every REFRESH_EVERY seconds unless now_p (a pull: rare, and it
         must not miss an image just added)."""
      now = time.monotonic()
      if (not force and not now_p and now - self.checked < REFRESH_EVERY):
         return
      self.checked = now
      try:
         st = os.stat(self.index)
         stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
         if (stamp == self.stamp and not force):
            return
         data = fsutil.json_read(self.index)
         table = data.get("images")
         if (not isinstance(table, dict)):
            raise fsutil.State_Error("no image table")
      except (OSError, fsutil.State_Error, ValueError, AttributeError) as x:
         if (self.broken is None):
            log.warning("%s: no images from it: %s", self, x)
         self.broken = str(x)
         self.view = ({}, {})
         self.stamp = None
         return
      images = dict()
      for (id_, d) in table.items():
         if (not isinstance(d, dict) or imgref.id_parse(id_) != id_):
            continue
         img = self.image_class.of_dict(id_, d)
         img.store = self.path
         images[id_] = img
      by_ref = { r: img.id_ for img in images.values()
                 for r in img.tags + img.digests }
      if (self.broken is not None or self.stamp is None):
         log.info("%s: %d images", self, len(images))
      self.view = (images, by_ref)
      self.stamp = stamp
      self.broken = None

   def image_path(self, id_):
      return os.path.join(self.img_dir, charlie.IMG_PREFIX + id_)

   def sqfs_path(self, id_):
      return self.image_path(id_) + charlie.SQFS_SUFFIX

   def get(self, id_):
      self.refresh()
      return self.view[0].get(id_)

   def find_ref(self, ref_text):
      "Return the Image whose tag or digest reference is ref_text, or None."
      self.refresh()
      (images, by_ref) = self.view
      return images.get(by_ref.get(ref_text))

   def list(self):
      self.refresh()
      return list(self.view[0].values())


## Functions ##

def store_command(cfg, python, argv, squash_p=False):
   """ch-cri store add [--squash] STORE REF... | list STORE | rm STORE
      REF...: fill, list or prune the read-only image store STORE with the
      registries of settings cfg (with --squash, squash_p: images added are
      kept as SquashFS files only). Return the exit status."""
   # Imported here: the server's import graph stays as it was.
   import cri.config
   import cri.errors as err
   import cri.images
   import cri.squash
   if (len(argv) < 2 or argv[0] not in ("add", "list", "rm")
       or (argv[0] != "list" and len(argv) < 3)):
      print("usage: ch-cri store add [--squash] STORE REF... | list STORE | "
            "rm STORE REF...", file=sys.stderr)
      return 2
   (op, path, refs) = (argv[0], os.path.abspath(argv[1]), argv[2:])
   if (op == "list"):
      s = Read_Store(path, cri.images.Image)
      s.refresh(force=True)
      if (s.broken is not None):
         print("ch-cri: %s: %s" % (path, s.broken), file=sys.stderr)
         return 1
      for img in sorted(s.list(), key=lambda i: i.tags):
         print("sha256:%s %10d %-10s %s"
               % (img.id_, img.size, ",".join(img.forms),
                  " ".join(img.tags + img.digests)))
      return 0
   os.makedirs(path, exist_ok=True)
   os.chmod(path, 0o755)
   with open(os.path.join(path, LOCK_FILE), "a") as lock:
      # One writer at a time; readers (servers) never take it.
      fcntl.flock(lock, fcntl.LOCK_EX)
      ch = charlie.Charliecloud(os.path.join(path, STORAGE_DIR), path,
                                python=python)
      ch.pull_stall = cfg["pull_progress_timeout"]
      ch.pull_layers = cfg["pull_layers"]
      try:
         ch.check()
         ch.storage_init()
      except charlie.Charliecloud_Error as x:
         print("ch-cri: %s" % x, file=sys.stderr)
         return 1
      # Only made here: the servers that read the store mount its files.
      sq = cri.squash.Squash(None, make_only=True)
      st = cri.images.Image_Store(ch, cri.config.Registries(cfg["registry"]),
                                  path, squash=sq)
      st.load()
      status = 0
      for r in refs:
         try:
            if (op == "add"):
               id_ = st.pull(r, None, "squash" if squash_p else None)
               print("sha256:%s %s" % (id_, r))
            else:
               st.remove(r)
               print("removed %s" % r)
         except err.CRI_Error as x:
            print("ch-cri: %s: %s" % (r, x), file=sys.stderr)
            status = 1
      # Downloads are kept by ch-image for the next pull: not in a store,
      # where every byte is on a shared file system.
      ch.trash_wait()
      fsutil.rmtree(ch.dlcache_dir)
      os.makedirs(ch.dlcache_dir, exist_ok=True)
      try:
         os.unlink(ch.blobs_path)
      except FileNotFoundError:
         pass
      for d in (path, os.path.join(path, STORAGE_DIR), ch.img_dir):
         os.chmod(d, 0o755)
      for n in os.listdir(ch.img_dir):
         if (n.endswith(charlie.SQFS_SUFFIX)
             or n.endswith(charlie.SQFS_CONFIG_SUFFIX)):
            os.chmod(os.path.join(ch.img_dir, n), 0o644)
      os.chmod(os.path.join(path, INDEX_FILE), 0o644)
   return status
