# The Charliecloud adapter's download cache: a removed image's layers go
# with it, those an image still here was pulled from stay, those no image
# of ours was pulled from are not ours; a pull's scratch storage is
# deleted after the pull answers.

import json
import os
import threading

import charlie


## Functions ##

def adapter(tmp_path):
   ch = charlie.Charliecloud(str(tmp_path / "storage"),
                             str(tmp_path / "state"))
   for d in (ch.img_dir, ch.dlcache_dir, str(tmp_path / "state")):
      os.makedirs(d)
   return ch


def blob(ch, h, ext=".tar.gz"):
   with open(os.path.join(ch.dlcache_dir, h + ext), "w") as fp:
      fp.write(h)


def image(ch, id_):
   os.makedirs(ch.image_path(id_))


## Tests ##

def test_prune_keeps_what_images_here_use(tmp_path):
   ch = adapter(tmp_path)
   (a, b, shared, cfg, stray) = (c * 64 for c in "abcde")
   image(ch, "1" * 64)
   image(ch, "2" * 64)
   for h in (a, b, shared, stray):
      blob(ch, h)
   blob(ch, cfg, ".json")
   scratch = str(tmp_path / "scratch")
   os.makedirs(scratch)
   ch.blobs_keep("1" * 64, scratch, [a, shared, cfg])
   ch.blobs_keep("2" * 64, scratch, [b, shared])
   # Not a blob's name: never touched.
   with open(os.path.join(ch.dlcache_dir, "x%y.fat.json"), "w") as fp:
      fp.write("{}")
   ch.dlcache_prune()
   everything = sorted(
      [a + ".tar.gz", b + ".tar.gz", shared + ".tar.gz", stray + ".tar.gz",
       cfg + ".json", "x%y.fat.json"])
   assert sorted(os.listdir(ch.dlcache_dir)) == everything
   # Image 1 removed: its own layer and config go, the shared one stays,
   # and so does what no image of ours was pulled from (an unprivileged
   # ch-cri's storage may be its user's own ch-image storage).
   ch.image_trash("1" * 64)
   ch.trash_empty()
   assert sorted(os.listdir(ch.dlcache_dir)) == sorted(
      [b + ".tar.gz", shared + ".tar.gz", stray + ".tar.gz",
       "x%y.fat.json"])
   assert list(ch.blobs_read()) == ["2" * 64]
   ch.image_trash("2" * 64)
   ch.trash_empty()
   assert sorted(os.listdir(ch.dlcache_dir)) == sorted(
      [stray + ".tar.gz", "x%y.fat.json"])
   assert ch.blobs_read() == {}


def test_pull_blobs_from_manifest(tmp_path):
   ch = adapter(tmp_path)
   d = str(tmp_path / "dl")
   os.makedirs(d)
   m = { "config": { "digest": "sha256:" + "c" * 64 },
         "layers": [{ "digest": "sha256:" + "1" * 64 },
                    { "digest": "sha256:" + "2" * 64 }] }
   with open(os.path.join(d, "ch-cri%pull-x%" + "f" * 64
                          + ".manifest.json"), "w") as fp:
      json.dump(m, fp)
   # Another pull's manifest, and a corrupt one: not ours, or ignored.
   with open(os.path.join(d, "ch-cri%pull-y%skinny.manifest.json"),
             "w") as fp:
      json.dump({ "layers": [{ "digest": "sha256:" + "9" * 64 }] }, fp)
   with open(os.path.join(d, "ch-cri%pull-x%skinny.manifest.json"),
             "w") as fp:
      fp.write("{not json")
   assert ch.pull_blobs("ch-cri/pull-x", d) == ["1" * 64, "2" * 64,
                                                "c" * 64]


def test_trash_later(tmp_path):
   ch = adapter(tmp_path)
   scratch = os.path.join(ch.img_dir, charlie.PULL_PREFIX + "x")
   os.makedirs(os.path.join(scratch, "a", "b"))
   ch.trash_later(scratch)
   assert not os.path.exists(scratch)
   ch.trash_wait()
   assert os.listdir(ch.img_dir) == []
   # trash_empty() leaves what a thread is deleting to it.
   t = os.path.join(ch.img_dir, charlie.TRASH_PREFIX + "busy")
   os.makedirs(t)
   busy = threading.Event()
   th = threading.Thread(target=busy.wait, args=(10,))
   th.start()
   ch.trashing[os.path.basename(t)] = th
   ch.trash_empty()
   assert os.path.isdir(t)
   busy.set()
   th.join()
   ch.trash_empty()
   assert not os.path.exists(t)
