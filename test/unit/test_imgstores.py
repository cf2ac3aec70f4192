# Unit tests of read-only image stores (lib/cri/imgstores.py) and the
# ImageService over them (lib/cri/images.py), with the fake Charliecloud
# adapter filling the store as "ch-cri store add" does.

import json
import os
import shutil

import grpc
import pytest

import cri.config
import cri.images
import cri.imgstores as imgstores

import fake_charlie
from fake_charlie import config_bytes, id_of
from test_images import (BB_DIGEST, BB_TAG, BUSYBOX, BUSYBOX_NEW, HUB,
                         PAUSE, REGISTRY, code, image_list, pull, remove,
                         status)


## Helpers ##

def store_fill(path, refs, registry=REGISTRY):
   "Fill store path with refs through an Image_Store, as store add does."
   ch = fake_charlie.Fake_Charlie(os.path.join(path, "storage"), registry)
   st = cri.images.Image_Store(ch, cri.config.Registries({}), path)
   st.load()
   return [st.pull(r, None) for r in refs]


@pytest.fixture(autouse=True)
def refresh_always(monkeypatch):
   monkeypatch.setattr(imgstores, "REFRESH_EVERY", 0)


## Tests ##

def test_read_store_index(tmp_path):
   d = str(tmp_path / "st")
   s = imgstores.Read_Store(d, cri.images.Image)
   assert s.list() == [] and "No such file" in s.broken
   (id_,) = store_fill(d, ["busybox"])
   img = s.get(id_)
   assert s.broken is None and img.store == d
   assert img.tags == [BB_TAG] and img.digests == [BB_DIGEST]
   assert s.find_ref(BB_DIGEST) is img
   assert s.image_path(id_).startswith(d + "/storage/img/")
   # A bad entry is skipped; a broken index empties the store.
   data = json.load(open(d + "/images.json"))
   data["images"]["not-an-id"] = {}
   json.dump(data, open(d + "/images.json", "w"))
   assert [i.id_ for i in s.list()] == [id_]
   open(d + "/images.json", "w").write("{")
   assert s.list() == [] and s.broken


def test_service_over_a_store(serve, tmp_path):
   st = str(tmp_path / "st")
   (bb,) = store_fill(st, ["busybox"])
   s = serve(registry=REGISTRY, stores=[st])
   # Listed and found by every name, from an empty storage.
   (img,) = image_list(s)
   assert img.id == "sha256:" + bb and list(img.repo_tags) == [BB_TAG]
   for n in ("busybox", BB_TAG, BB_DIGEST, "sha256:" + bb):
      assert status(s, n).image.id == img.id, n
   info = json.loads(status(s, "busybox", verbose=True).info["info"])
   assert info["imageStore"] == st
   assert info["storagePath"].startswith(st + "/storage/img/")
   # PullImage of a stored reference downloads nothing.
   assert pull(s, "busybox") == "sha256:" + bb
   assert s.ch.pulls == [] and s.ch.image_ids() == set()
   # Another image is pulled into our own storage, listed beside it.
   assert pull(s, "registry.k8s.io/pause:3.9") == "sha256:" + id_of(PAUSE)
   assert sorted(i.id for i in image_list(s)) \
          == sorted(["sha256:" + bb, "sha256:" + id_of(PAUSE)])
   # Removing a store's image is refused, naming the store; ours goes.
   (c, msg) = code(s.images.RemoveImage,
                   cri.images.pb.RemoveImageRequest(
                      image=cri.images.pb.ImageSpec(image="busybox")))
   assert c == grpc.StatusCode.FAILED_PRECONDITION
   assert "read-only image store %s" % st in msg
   remove(s, "registry.k8s.io/pause:3.9")
   assert [i.id for i in image_list(s)] == ["sha256:" + bb]
   # Only our images count as our file system's use.
   assert s.store.fs_usage() == (0, 0)


def test_store_gone_and_back(serve, tmp_path):
   st = str(tmp_path / "st")
   (bb,) = store_fill(st, ["busybox"])
   s = serve(registry=REGISTRY, stores=[st])
   assert len(image_list(s)) == 1
   os.rename(st, st + ".away")
   assert image_list(s) == []
   assert not status(s, "busybox").HasField("image")
   os.rename(st + ".away", st)
   assert [i.id for i in image_list(s)] == ["sha256:" + bb]


def test_ours_first(serve, tmp_path):
   "An image in both our storage and a store is ours (removable)."
   st = str(tmp_path / "st")
   (bb,) = store_fill(st, ["busybox"])
   s = serve(registry=REGISTRY)
   pull(s, "busybox")
   s.stop()
   s = serve(registry=REGISTRY, stores=[st])
   (img,) = image_list(s)
   assert s.store.find("busybox").store is None
   remove(s, "busybox")
   # Then the store's copy shows.
   assert s.store.find("busybox").store == st


def test_config_image_stores(tmp_path):
   p = tmp_path / "c.toml"
   p.write_text('image_stores = ["/shared/images"]\n')
   assert cri.config.load(str(p), True)["image_stores"] == ["/shared/images"]
   p.write_text('image_stores = ["rel"]\n')
   with pytest.raises(cri.config.Config_Error, match="image_stores"):
      cri.config.load(str(p), True)


def test_store_tag_checked_against_registry(serve, tmp_path):
   """PullImage of a stored tag asks the registry for its digest: the same,
      the store's image; moved, the new image is pulled here; registry
      unreachable, the store's image."""
   st = str(tmp_path / "st")
   (bb,) = store_fill(st, ["busybox"])
   s = serve(registry=REGISTRY, stores=[st])
   assert pull(s, "busybox") == "sha256:" + bb and s.ch.pulls == []
   s.ch.failures[HUB + "busybox:latest"] = "connection refused"
   assert pull(s, "busybox") == "sha256:" + bb and s.ch.pulls == []
   del s.ch.failures[HUB + "busybox:latest"]
   s.ch.registry[HUB + "busybox:latest"] = BUSYBOX_NEW
   assert pull(s, "busybox") == "sha256:" + id_of(BUSYBOX_NEW)
   assert [p["src"] for p in s.ch.pulls] == [HUB + "busybox:latest"]
   # Now ours: listed under the tag; the store's stays by its digest.
   assert status(s, "busybox").image.id == "sha256:" + id_of(BUSYBOX_NEW)
   assert status(s, BB_DIGEST).image.id == "sha256:" + bb


def test_scratch_skips_cache_while_ch_image_runs(tmp_path):
   "A pull's storage links no downloaded layer while ch-image holds ours."
   import fcntl
   import multiprocessing
   import charlie
   st = tmp_path / "storage"
   for d in ("dlcache", "img", "ulcache"):
      (st / d).mkdir(parents=True)
   (st / "version").write_text("7\n")
   blob = "a" * 64 + ".tar.gz"
   (st / "dlcache" / blob).write_text("half a layer")
   ch = charlie.Charliecloud(str(st), str(tmp_path))
   ch.scratch_make(str(st / "img" / "s1"))
   assert (st / "img" / "s1" / "dlcache" / blob).exists()
   # Another process (as ch-image would) holds the storage lock.
   held = multiprocessing.Event()
   done = multiprocessing.Event()
   def hold():
      with open(st / "lock", "a") as fp:
         fcntl.lockf(fp, fcntl.LOCK_EX)
         held.set()
         done.wait(20)
   p = multiprocessing.Process(target=hold)
   p.start()
   try:
      assert held.wait(20)
      ch.scratch_make(str(st / "img" / "s2"))
      assert (st / "img" / "s2" / "version").read_text() == "7\n"
      assert list((st / "img" / "s2" / "dlcache").iterdir()) == []
   finally:
      done.set()
      p.join(20)
