# Unit tests of SquashFS images (lib/cri/squash.py) in the image index
# (lib/cri/images.py), over the fake Charliecloud adapter with a real
# mksquashfs. Mounting is tested for real in test/bats/26_squash.bats.

import os
import shutil
import subprocess

import pytest

import charlie
import cri.config
import cri.errors as err
import cri.images
import cri.squash

import fake_charlie
from fake_charlie import id_of
from test_images import BUSYBOX, REGISTRY


## Helpers ##

needs_mksquashfs = pytest.mark.skipif(
   shutil.which("mksquashfs") is None and not os.environ.get("CI"),
   reason="mksquashfs (squashfs-tools) not installed")


def store(tmp_path, mountable=True):
   ch = fake_charlie.Fake_Charlie(str(tmp_path / "storage"), REGISTRY)
   sq = cri.squash.Squash(None, make_only=True)
   if (not mountable):
      sq.mount_reason = "no /dev/fuse here"
   st = cri.images.Image_Store(ch, cri.config.Registries({}),
                               str(tmp_path), squash=sq)
   st.load()
   return st


## Tests ##

def test_format_of_names_the_field():
   a = cri.squash.ANNOTATION
   assert cri.squash.format_of({ a: "dir" }, "squash", "f") == "dir"
   assert cri.squash.format_of(None, "squash", "f") == "squash"
   with pytest.raises(err.Invalid_Argument) as ei:
      cri.squash.format_of({ a: "zip" }, "dir", "pod config.annotations")
   assert str(ei.value).startswith("pod config.annotations[%s]" % a)


@needs_mksquashfs
def test_pull_as_squash_keeps_one_file(tmp_path):
   st = store(tmp_path)
   id_ = st.pull("busybox", None, "squash")
   assert id_ == id_of(BUSYBOX)
   names = sorted(os.listdir(st.ch.img_dir))
   assert names == [charlie.IMG_PREFIX + id_ + ".sqfs",
                    charlie.IMG_PREFIX + id_ + ".sqfs.json"]
   # A real SquashFS image holding the tree.
   out = subprocess.run(["unsquashfs", "-l", st.sqfs_path(id_)],
                        capture_output=True, text=True, check=True).stdout
   assert "/ch/config.pulled.json" in out and "/bin/sh" in out
   img = st.find(id_)
   assert img.forms == ("squash",) and img.sqfs_size > 0
   assert st.config(id_) == charlie.config_of(st.ch.img_dir, id_)[1]
   # The index remembers; the disk wins over it.
   st2 = store(tmp_path)
   assert st2.find(id_).forms == ("squash",)
   assert st2.fs_usage() == (img.sqfs_size, 1)
   st2.remove(id_)
   assert os.listdir(st.ch.img_dir) == []


@needs_mksquashfs
def test_directory_image_gains_squash_for_a_squash_pod(tmp_path):
   st = store(tmp_path)
   id_ = st.pull("busybox", None)
   assert st.find(id_).forms == ("dir",)
   assert st.form_run(id_, "dir", "f") == "dir"
   assert st.form_run(id_, "squash", "f") == "squash"
   # The directory stays (a dir pod may use it); both forms are removed.
   assert st.find(id_).forms == ("dir", "squash")
   assert st.form_run(id_, "dir", "f") == "dir"
   st.remove(id_)
   assert os.listdir(st.ch.img_dir) == []


@needs_mksquashfs
def test_squash_only_image_runs_squash_for_a_dir_pod(tmp_path):
   st = store(tmp_path)
   id_ = st.pull("busybox", None, "squash")
   assert st.form_run(id_, "dir", "f") == "squash"


def test_squash_pull_refused_when_it_cannot_run(tmp_path):
   st = store(tmp_path, mountable=False)
   with pytest.raises(err.Failed_Precondition) as ei:
      st.pull("busybox", None, "squash")
   assert "no /dev/fuse here" in str(ei.value)
   assert st.ch.pull_ct == 0


def test_interrupted_squash_leftovers_removed(tmp_path):
   ch = charlie.Charliecloud(str(tmp_path), str(tmp_path))
   img = tmp_path / "img"
   img.mkdir()
   id_ = "a" * 64
   (img / (charlie.IMG_PREFIX + id_ + ".sqfs.json")).write_text("{}")
   (img / (charlie.IMG_PREFIX + id_ + ".sqfs.tmp-12")).write_text("")
   keep = charlie.IMG_PREFIX + "b" * 64 + ".sqfs"
   (img / keep).write_text("")
   (img / (keep + ".json")).write_text("{}")
   ch.storage_gc()
   assert sorted(os.listdir(img)) == [keep, keep + ".json"]
   assert ch.image_ids() == { "b" * 64 }
   assert ch.image_forms("b" * 64) == ("squash",)


def test_config_keys(tmp_path):
   p = tmp_path / "c.toml"
   p.write_text('image_format = "squash"\nsquash_mounter = "fuse"\n')
   cfg = cri.config.load(str(p), True)
   assert (cfg["image_format"], cfg["squash_mounter"]) == ("squash", "fuse")
   for (text, key) in (('image_format = "zip"\n', "image_format"),
                       ('squash_mounter = "loop"\n', "squash_mounter")):
      p.write_text(text)
      with pytest.raises(cri.config.Config_Error) as ei:
         cri.config.load(str(p), True)
      assert str(ei.value).startswith(key + ":")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
def test_kernel_mounts_only_root_files(tmp_path):
   f = tmp_path / "a.sqfs"
   f.write_bytes(b"x")
   os.chmod(f, 0o644)
   assert cri.squash.kernel_trusted_p(str(f))
   os.chmod(f, 0o664)             # group-writable: someone else's too
   assert not cri.squash.kernel_trusted_p(str(f))
   os.chmod(f, 0o644)
   os.chown(f, 65534, 65534)      # a user's store
   assert not cri.squash.kernel_trusted_p(str(f))
   os.chown(f, 0, 0)
   (tmp_path / "l.sqfs").symlink_to(f)
   assert not cri.squash.kernel_trusted_p(str(tmp_path / "l.sqfs"))
   assert not cri.squash.kernel_trusted_p(str(tmp_path / "none.sqfs"))
