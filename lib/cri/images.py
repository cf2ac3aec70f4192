# Images: ch-cri's image index over Charliecloud storage, and the CRI
# ImageService.

import base64
import json
import os
import threading
import time

import charlie
import fsutil
import imgref
import misc
import cri.errors as err
import cri.imgstores as imgstores
import cri.metrics as metrics
import cri.squash

from cri_api.v1 import api_pb2 as pb
from cri_api.v1 import api_pb2_grpc as pb_grpc


## Constants ##

INDEX_FILE = "images.json"
REF_MAX = 4096

# Registry name standing for ch-cri's storage itself: PullImage of
# "ch-image.local/NAME[:TAG]" takes image NAME:TAG that the user built or
# pulled there with ch-image (see Charliecloud.local_import()).
LOCAL_DOMAIN = "ch-image.local"


## Globals ##

log = misc.log


## Functions ##

def user_split(user):
   """Return (uid or None, username) from an image config's User field,
      the way the kubelet reads it: a numeric user is a UID, anything
      else a name; a group after ":" is ignored.

      >>> user_split("1003:1004")
      (1003, '')
      >>> user_split("www-data:1004")
      (None, 'www-data')
      >>> user_split("")
      (None, '')
   """
   u = (user or "").split(":", 1)[0]
   if (u == ""):
      return (None, "")
   if (u.isdigit()):
      return (int(u), "")
   return (None, u)


## Classes ##

class Image:
   """One image in the index: ID (64 hex), tags ("name:tag"), digests
      ("name@sha256:..."), size in bytes and inodes (of its tree), the
      config's User, the forms it is kept in ("dir", "squash") and the
      SquashFS file's size; store is the read-only image store it is in
      (None: ours)."""

   __slots__ = ("id_", "tags", "digests", "size", "inodes", "user", "store",
                "forms", "sqfs_size")

   def __init__(self, id_, tags=(), digests=(), size=0, inodes=0, user="",
                forms=("dir",), sqfs_size=0):
      self.id_ = id_
      self.tags = list(tags)
      self.digests = list(digests)
      self.size = size
      self.inodes = inodes
      self.user = user
      self.forms = tuple(forms)
      self.sqfs_size = sqfs_size
      self.store = None

   def as_dict(self):
      return { "tags": self.tags, "digests": self.digests,
               "size": self.size, "inodes": self.inodes, "user": self.user,
               "forms": list(self.forms), "sqfs_size": self.sqfs_size }

   @classmethod
   def of_dict(class_, id_, d):
      "Return the Image of index entry d (made by as_dict(), or older)."
      forms = d.get("forms") or ["dir"]
      if (not isinstance(forms, list)):
         forms = ["dir"]
      return class_(id_, d.get("tags", []), d.get("digests", []),
                    d.get("size", 0), d.get("inodes", 0), d.get("user", ""),
                    [f for f in forms if f in ("dir", "squash")],
                    d.get("sqfs_size", 0))


class Pull:
   "A pull in progress; later requests for the same reference wait on it."

   def __init__(self):
      self.done = threading.Event()
      self.id_ = None
      self.error = None


class Image_Store:
   """The images ch-cri has pulled. The index (a JSON file in the state
      directory, mirrored in memory) maps IDs to tags and digests; the
      image trees are Charliecloud's, one per ID. Queries never start a
      subprocess.

      self.lock guards self.images, self.by_ref, self.pulls and the index
      file. It is never held across a subprocess; it may be taken before
      nothing else (a leaf).

      Read-only image stores (paths in stores, see cri/imgstores.py) add
      their images, after ours: an image ch-cri has itself is its own."""

   def __init__(self, ch, registries, state_dir, pinned=(), stores=(),
                squash=None):
      self.ch = ch
      self.squash = squash   # a cri.squash.Squash, or None: no SquashFS
      self.stores = [imgstores.Read_Store(p, Image) for p in stores]
      self.registries = registries
      self.path = os.path.join(state_dir, INDEX_FILE)
      self.pinned = { str(imgref.parse(p)) for p in pinned }
      self.lock = threading.Lock()
      self.images = dict()   # ID -> Image
      self.by_ref = dict()   # tag or digest string -> ID
      self.pulls = dict()    # (ref string, credentials) -> Pull
      self.config_cache = dict()
      self.in_use = lambda id_: None   # set by the server: ID -> user or None

   def load(self):
      """Read the index and reconcile it with the storage: entries whose
         tree is gone are dropped, trees with no entry (a pull or removal
         cut short by a crash) are removed."""
      self.ch.storage_gc()
      try:
         data = fsutil.json_read(self.path)
         images = data.get("images")
         if (not isinstance(images, dict)
             or not all(isinstance(v, dict) for v in images.values())):
            raise fsutil.State_Error("state file has no image table: %s"
                                     % self.path)
      except FileNotFoundError:
         data = { "images": {} }
      except fsutil.State_Error as x:
         bad = "%s.corrupt.%d" % (self.path, time.time_ns())
         log.error("%s; moved aside to %s, starting with no images", x, bad)
         os.rename(self.path, bad)
         data = { "images": {} }
      on_disk = self.ch.image_ids()
      for (id_, d) in data["images"].items():
         if (id_ not in on_disk):
            log.warning("image %s in index but not in storage; dropped", id_)
            continue
         img = self.images[id_] = Image.of_dict(id_, d)
         img.forms = self.ch.image_forms(id_)   # a crash may have cut one
      for id_ in on_disk - set(self.images):
         log.warning("image %s in storage but not in index; removing", id_)
         self.ch.image_trash(id_)
      self.ch.trash_empty()
      self.refs_rebuild()
      self.save()
      log.info("images: %d in %s", len(self.images), self.ch.storage)

   def refs_rebuild(self):
      self.by_ref = dict()
      for img in self.images.values():
         for r in img.tags + img.digests:
            self.by_ref[r] = img.id_

   def save(self):
      "Write the index; call with self.lock held (or before serving)."
      fsutil.json_write_atomic(self.path, {
         "images": { i: img.as_dict() for (i, img) in self.images.items() }})

   ## Queries (no subprocess, no disk except the config cache) ##

   def config(self, id_):
      """Return the parsed config of image id_ (cached; it never changes
         because the ID is its hash)."""
      c = self.config_cache.get(id_)
      if (c is None):
         with self.lock:
            ours = id_ in self.images
         s = None if ours else self.store_of(id_)
         (_, c) = charlie.config_of(s.img_dir if s else self.ch.img_dir, id_)
         self.config_cache[id_] = c
      return c

   def store_of(self, id_):
      "Return the first Read_Store having image id_, or None."
      for s in self.stores:
         if (s.get(id_) is not None):
            return s
      return None

   def sqfs_path(self, id_):
      """Return the SquashFS file of image id_ (ours or a store's), or None
         if it has none."""
      with self.lock:
         img = self.images.get(id_)
         if (img is not None):
            return (self.ch.sqfs_path(id_) if "squash" in img.forms
                    else None)
      img = self.store_find(id_=id_)
      if (img is not None and "squash" in img.forms):
         return self.store_of(id_).sqfs_path(id_)
      return None

   def form_run(self, id_, want, where):
      """Return the form ("dir" or "squash") a container of image id_ runs
         from, its pod asking for want (see cri.squash.format_of()): want
         if the image has it, making the SquashFS form of one of ours if
         need be; else the form it has. Raise what can't be done, naming
         where."""
      img = self.find("sha256:" + id_)
      if (img is None):
         raise err.Not_Found("%s: image sha256:%s gone" % (where, id_))
      if (want == "squash" and "squash" not in img.forms
          and img.store is None):
         self.squash_add(img)
      elif (want == "squash" and "squash" not in img.forms):
         log.info("image sha256:%s of %s has no SquashFS form: running its "
                  "directory", id_, img.store)
      if (want in img.forms):
         return want
      if ("squash" in img.forms and "dir" not in img.forms):
         return "squash"
      return "dir"

   def squash_add(self, img, drop_dir=False):
      """Add the SquashFS form to our image img (made from its directory);
         with drop_dir, then remove the directory unless a container uses
         it. Raise Failed_Precondition if SquashFS images can't be made or
         mounted here."""
      if (self.squash is None):
         raise err.Failed_Precondition("SquashFS images are not enabled")
      if ("squash" not in img.forms):
         t0 = time.monotonic()
         size = self.ch.sqfs_make(img.id_, self.squash.make)
         log.info("image sha256:%s: SquashFS made in %.1fs (%d bytes)",
                  img.id_, time.monotonic() - t0, size)
         with self.lock:
            img.sqfs_size = size
            img.forms = self.ch.image_forms(img.id_)
            self.save()
      if (drop_dir and "dir" in img.forms and self.in_use(img.id_) is None):
         with self.lock:
            self.ch.image_trash(img.id_, ("dir",))
            img.forms = self.ch.image_forms(img.id_)
            self.save()
         self.ch.trash_empty()

   def image_path(self, id_):
      """Return the directory of image id_: ours, or a store's if we do
         not have it (ours, if nobody has it)."""
      with self.lock:
         if (id_ in self.images):
            return self.ch.image_path(id_)
      for s in self.stores:
         if (s.get(id_) is not None):
            return s.image_path(id_)
      return self.ch.image_path(id_)

   def store_find(self, id_=None, ref_text=None):
      "Return the first store's Image with ID id_ or reference ref_text."
      for s in self.stores:
         img = s.get(id_) if id_ is not None else s.find_ref(ref_text)
         if (img is not None):
            return img
      return None

   def find(self, text, field="image.image"):
      """Return the Image that text names (an ID, a tag, a digest
         reference), or None. Raise Invalid_Argument naming field if text
         is not a valid reference."""
      if (not isinstance(text, str) or text == ""):
         raise err.Invalid_Argument("%s: empty image reference" % field)
      if (len(text) > REF_MAX):
         raise err.Invalid_Argument("%s: reference too long (%d characters)"
                                    % (field, len(text)))
      id_ = imgref.id_parse(text)
      with self.lock:
         if (id_ is not None and id_ in self.images):
            return self.images[id_]
      if (id_ is not None):
         return self.store_find(id_=id_)
      try:
         ref = imgref.parse(text)
      except imgref.Ref_Error as x:
         raise err.Invalid_Argument("%s: %s" % (field, x))
      r = (ref.with_digest(ref.digest) if ref.digest is not None
           else ref.tagged)
      with self.lock:
         img = self.images.get(self.by_ref.get(r))
      return img if img is not None else self.store_find(ref_text=r)

   def list(self):
      with self.lock:
         out = list(self.images.values())
      ids = { i.id_ for i in out }
      for s in self.stores:
         for img in s.list():
            if (img.id_ not in ids):
               out.append(img)
               ids.add(img.id_)
      return out

   def pinned_p(self, img):
      return any(t in self.pinned for t in img.tags)

   def fs_usage(self):
      "Return (bytes, inodes) used by the images, from the index."
      with self.lock:
         return (sum((i.size if "dir" in i.forms else 0) + i.sqfs_size
                     for i in self.images.values()),
                 sum(i.inodes if "dir" in i.forms else 1
                     for i in self.images.values()))

   ## Changes ##

   def pull(self, text, creds, form=None):
      """Pull the image text names (creds: (username, password) or None)
         and return its ID. Concurrent pulls of one reference share one
         download. With form "squash", keep it as SquashFS (our images:
         only that, if it is new here)."""
      try:
         ref = imgref.parse(text)
      except imgref.Ref_Error as x:
         raise err.Invalid_Argument("image.image: %s" % x)
      if (form == "squash"):
         if (self.squash is None):
            raise err.Failed_Precondition("SquashFS images are not enabled")
         self.squash.mountable_check("pull %s as SquashFS" % ref)
      with self.lock:
         had = set(self.images)
      id_ = self.pull_ref(ref, creds)
      if (form == "squash"):
         with self.lock:
            img = self.images.get(id_)
         if (img is not None):
            self.squash_add(img, drop_dir=id_ not in had)
      return id_

   def pull_ref(self, ref, creds):
      if (self.stores):
         for s in self.stores:
            s.refresh(now_p=True)
         # A store's image is used as it is: no layer is downloaded. A tag
         # is checked against the registry's manifest digest first (the
         # kubelet asks for a pull of an image it has only when its pull
         # policy is Always); if it moved, the new image is pulled here.
         img = self.store_find(ref_text=(ref.with_digest(ref.digest)
                                         if ref.digest is not None
                                         else ref.tagged))
         if (img is not None and (ref.digest is not None
                                  or self.store_current_p(ref, img, creds))):
            with self.lock:
               ours = img.id_ in self.images
            if (not ours):
               log.info("pull %s: in %s, not downloaded", ref, img.store)
            return img.id_
      key = (str(ref), creds)
      with self.lock:
         p = self.pulls.get(key)
         owner = p is None
         if (owner):
            p = self.pulls[key] = Pull()
      if (not owner):
         p.done.wait()
      else:
         try:
            p.id_ = self.pull_do(ref, creds)
         except err.CRI_Error as x:
            p.error = x
         except Exception as x:
            p.error = err.Internal("pull %s: %s" % (ref, x))
            raise
         finally:
            with self.lock:
               del self.pulls[key]
            p.done.set()
      if (p.error is not None):
         raise p.error
      return p.id_

   def store_current_p(self, ref, img, creds):
      """Return False if the registry now serves tag ref as another image
         than store image img (by manifest digest); True if it serves img,
         or if no endpoint could say (the store's image is then used, as
         on a node cut off from the registry)."""
      for ep in self.registries.endpoints(ref):
         (user, pw) = creds if creds else (ep.username, ep.password)
         try:
            d = self.ch.remote_digest(ep.src_ref(ref),
                                      tls_verify=not ep.skip_verify,
                                      ca_file=ep.ca, username=user,
                                      password=pw)
         except charlie.Charliecloud_Error as x:
            log.info("pull %s: digest check at %s failed: %s", ref, ep.host,
                     x)
            continue
         if (d is None):
            continue
         if (ref.with_digest(d) in img.digests):
            return True
         log.info("pull %s: %s now serves %s, not %s's image: pulling it",
                  ref, ep.host, d, img.store)
         return False
      return True

   def pull_do(self, ref, creds):
      if (ref.domain == LOCAL_DOMAIN):
         name = ref.path + (":" + ref.tag if ref.tag else "")
         try:
            (id_, config, size, inodes) = self.ch.local_import(name)
         except charlie.Pull_Error as x:
            raise (err.Not_Found if x.not_found_p else err.Unavailable)(
               "pull %s: %s" % (ref, x))
         log.info("took %s from ch-image's images in %s: sha256:%s", ref,
                  self.ch.storage, id_)
         self.pulled(ref, id_, None, config, size, inodes)
         return id_
      errors = []
      not_found_ct = 0
      eps = self.registries.endpoints(ref)
      if (not eps):
         raise err.Failed_Precondition(
            "pull %s: registry %s has no mirrors and upstream = false in "
            "the config" % (ref, ref.domain))
      for ep in eps:
         (user, pw) = creds if creds else (ep.username, ep.password)
         src = ep.src_ref(ref)
         t0 = time.monotonic()
         try:
            (id_, digest, config, size, inodes) = self.ch.pull(
               src, tls_verify=not ep.skip_verify, ca_file=ep.ca,
               username=user, password=pw)
         except charlie.Pull_Error as x:
            metrics.pull_observe(time.monotonic() - t0, None)
            log.info("pull %s from %s failed: %s", ref, ep.host, x)
            errors.append("%s: %s" % (ep.host, x))
            not_found_ct += x.not_found_p
            continue
         metrics.pull_observe(time.monotonic() - t0, size)
         log.info("pulled %s from %s: sha256:%s", ref, src, id_)
         self.pulled(ref, id_, digest, config, size, inodes)
         return id_
      msg = "pull %s failed: %s" % (ref, "; ".join(errors))
      if (not_found_ct == len(eps)):
         raise err.Not_Found(msg)
      raise err.Unavailable(msg)

   def pulled(self, ref, id_, digest, config, size, inodes):
      "Record a finished pull of ref."
      user = (config.get("config") or {}).get("User") or ""
      with self.lock:
         forms = self.ch.image_forms(id_)
         if (not forms):
            raise err.Aborted("image sha256:%s removed while it was pulled; "
                              "pull again" % id_)
         img = self.images.get(id_)
         if (img is None):
            img = self.images[id_] = Image(id_, size=size, inodes=inodes,
                                           user=user)
         img.forms = forms
         new = []
         if (ref.tag is not None):
            new.append(ref.tagged)
         d = ref.digest or digest
         if (d is not None):
            new.append(ref.with_digest(d))
         for r in new:
            old = self.by_ref.get(r)
            if (old is not None and old != id_):
               # a tag moved to a new image: the old one keeps the rest
               o = self.images[old]
               o.tags = [t for t in o.tags if t != r]
               o.digests = [t for t in o.digests if t != r]
            if (r not in img.tags and r not in img.digests):
               (img.tags if r == ref.tagged else img.digests).append(r)
            self.by_ref[r] = id_
         self.save()

   def remove(self, text):
      """Remove what text names: an ID or digest removes the image, a tag
         only that tag unless it is the last. Missing is fine."""
      img = self.find(text)
      if (img is None):
         return
      if (img.store is not None):
         raise err.Failed_Precondition(
            "image sha256:%s is in the read-only image store %s; remove it "
            "there (ch-cri store rm)" % (img.id_, img.store))
      by_tag = imgref.id_parse(text) is None and "@" not in text
      user = self.in_use(img.id_)
      if (user is not None and not (by_tag and len(img.tags) > 1)):
         raise err.Failed_Precondition("image sha256:%s is used by container "
                                       "%s; remove the container first"
                                       % (img.id_, user))
      with self.lock:
         if (img.id_ not in self.images):
            return   # removed concurrently
         if (by_tag and len(img.tags) > 1):
            tag = imgref.parse(text).tagged
            img.tags = [t for t in img.tags if t != tag]
            self.by_ref.pop(tag, None)
            self.save()
            return
         del self.images[img.id_]
         for r in img.tags + img.digests:
            self.by_ref.pop(r, None)
         self.config_cache.pop(img.id_, None)
         self.save()
         self.ch.image_trash(img.id_)
      self.ch.trash_empty()


class Image_Servicer(pb_grpc.ImageServiceServicer):
   "The CRI ImageService over an Image_Store."

   def __init__(self, store):
      self.store = store

   def image_pb(self, img):
      (uid, username) = user_split(img.user)
      m = pb.Image(id="sha256:" + img.id_, repo_tags=img.tags,
                   repo_digests=img.digests, size=img.size,
                   username=username, pinned=self.store.pinned_p(img))
      m.spec.image = "sha256:" + img.id_
      if (uid is not None):
         m.uid.value = uid
      return m

   @err.rpc
   def ListImages(self, request, context):
      f = request.filter.image.image if request.HasField("filter") else ""
      if (f):
         img = self.store.find(f, "filter.image.image")
         imgs = [img] if img else []
      else:
         imgs = self.store.list()
      return pb.ListImagesResponse(images=[self.image_pb(i) for i in imgs])

   @err.rpc
   def ImageStatus(self, request, context):
      img = self.store.find(request.image.image)
      if (img is None):
         return pb.ImageStatusResponse()
      res = pb.ImageStatusResponse(image=self.image_pb(img))
      if (request.verbose):
         try:
            spec = self.store.config(img.id_)
         except FileNotFoundError:
            return pb.ImageStatusResponse()   # removed meanwhile
         info = { "imageSpec": spec,
                  "storagePath": self.store.image_path(img.id_),
                  "forms": list(img.forms) }
         if ("squash" in img.forms):
            info["squashfsPath"] = self.store.sqfs_path(img.id_)
         if (img.store is not None):
            info["imageStore"] = img.store
         res.info["info"] = json.dumps(info, sort_keys=True)
      return res

   @err.rpc
   def PullImage(self, request, context):
      creds = None
      if (request.HasField("auth")):
         creds = auth_creds(request.auth)
      form = None
      if (self.store.squash is not None):
         form = cri.squash.format_of(
            request.sandbox_config.annotations, self.store.squash.default,
            "sandbox_config.annotations")
      id_ = self.store.pull(request.image.image, creds, form)
      return pb.PullImageResponse(image_ref="sha256:" + id_)

   @err.rpc
   def RemoveImage(self, request, context):
      self.store.remove(request.image.image)
      return pb.RemoveImageResponse()

   @err.rpc
   def ImageFsInfo(self, request, context):
      (used, inodes) = self.store.fs_usage()
      u = pb.FilesystemUsage(timestamp=time.time_ns())
      u.used_bytes.value = used
      u.inodes_used.value = inodes
      u.fs_id.mountpoint = self.store.ch.storage
      return pb.ImageFsInfoResponse(image_filesystems=[u])


def auth_creds(a):
   """Return (username, password) from a CRI AuthConfig, or None if empty.
      Raise for forms Charliecloud cannot use."""
   if (a.identity_token or a.registry_token):
      raise err.Unimplemented("auth.identity_token/auth.registry_token: "
                              "token authentication is not supported by "
                              "Charliecloud; use username and password")
   if (a.auth):
      try:
         (u, p) = base64.b64decode(a.auth, validate=True).decode() \
                  .split(":", 1)
      except (ValueError, UnicodeDecodeError):
         raise err.Invalid_Argument("auth.auth: not base64 of "
                                    "username:password")
      return (u, p)
   if (a.username or a.password):
      return (a.username, a.password)
   return None
