# Unit tests of the CRI ImageService (lib/cri/images.py) through a real
# in-process gRPC server, over the fake Charliecloud adapter.

import base64
import concurrent.futures
import glob
import json
import os
import threading
import time

import grpc
import pytest

import charlie
import fsutil
import cri.images

from cri_api.v1 import api_pb2 as pb

import fake_charlie
from conftest import RPC_TIMEOUT
from fake_charlie import config_bytes, digest_of, id_of


## Constants ##

HUB = "registry-1.docker.io/library/"

BUSYBOX = config_bytes(salt="busybox")
BUSYBOX_NEW = config_bytes(salt="busybox-new")
PAUSE = config_bytes(user="65535", salt="pause")

REGISTRY = { HUB + "busybox:latest": BUSYBOX,
             HUB + "busybox:1.36": BUSYBOX,
             HUB + "busybox@" + digest_of(BUSYBOX): BUSYBOX,
             "registry.k8s.io/pause:3.9": PAUSE,
             "k8s.gcr.io/pause:3.9": PAUSE }

BB_TAG = "docker.io/library/busybox:latest"
BB_TAG2 = "docker.io/library/busybox:1.36"
BB_DIGEST = "docker.io/library/busybox@" + digest_of(BUSYBOX)


## Functions ##

def code(f, *args, **kw):
   "Call f; return the gRPC status code and details of its failure."
   with pytest.raises(grpc.RpcError) as ei:
      f(*args, timeout=RPC_TIMEOUT, **kw)
   return (ei.value.code(), ei.value.details())


def pull(s, text, auth=None):
   req = pb.PullImageRequest(image=pb.ImageSpec(image=text))
   if (auth is not None):
      req.auth.CopyFrom(auth)
   return s.images.PullImage(req, timeout=RPC_TIMEOUT).image_ref


def image_list(s, filter_=None):
   req = pb.ListImagesRequest()
   if (filter_ is not None):
      req.filter.image.image = filter_
   return list(s.images.ListImages(req, timeout=RPC_TIMEOUT).images)


def remove(s, text):
   s.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=text)),
                        timeout=RPC_TIMEOUT)


def status(s, text, verbose=False):
   return s.images.ImageStatus(
      pb.ImageStatusRequest(image=pb.ImageSpec(image=text), verbose=verbose),
      timeout=RPC_TIMEOUT)


def status_image(s, text):
   "Return the Image ImageStatus answers for text, or None if absent."
   res = status(s, text)
   return res.image if res.HasField("image") else None


def img_dirs(s):
   "Return the names in the storage's img/ directory."
   return sorted(os.listdir(s.ch.img_dir))


## Tests: pull and query ##

def test_pull_by_tag(serve):
   s = serve(registry=REGISTRY)
   assert pull(s, "busybox") == "sha256:" + id_of(BUSYBOX)
   assert [p["src"] for p in s.ch.pulls] == [HUB + "busybox:latest"]
   assert s.ch.image_ids() == { id_of(BUSYBOX) }
   (img,) = image_list(s)
   assert img.id == "sha256:" + id_of(BUSYBOX)
   assert list(img.repo_tags) == [BB_TAG]
   assert list(img.repo_digests) == [BB_DIGEST]
   assert img.spec.image == img.id
   assert img.size > len(BUSYBOX)
   assert not img.pinned


def test_status_by_every_name(serve):
   s = serve(registry=REGISTRY)
   id_ = id_of(BUSYBOX)
   pull(s, "busybox:latest")
   (img,) = image_list(s)
   names = ["sha256:" + id_, id_, "busybox", "busybox:latest",
            "library/busybox", BB_TAG, BB_DIGEST,
            "busybox@" + digest_of(BUSYBOX),
            "busybox:whatever@" + digest_of(BUSYBOX)]
   for n in names:
      assert status_image(s, n) == img, n
      assert image_list(s, n) == [img], n
   for n in ("busybox:1.36", "sha256:" + "0" * 64,
             "busybox@sha256:" + "0" * 64, "other"):
      assert status_image(s, n) is None, n
      assert image_list(s, n) == [], n


def test_pull_by_digest(serve):
   s = serve(registry=REGISTRY)
   assert pull(s, BB_DIGEST) == "sha256:" + id_of(BUSYBOX)
   assert s.ch.pulls[0]["src"] == HUB + "busybox@" + digest_of(BUSYBOX)
   (img,) = image_list(s)
   assert list(img.repo_tags) == []
   assert list(img.repo_digests) == [BB_DIGEST]
   assert status_image(s, "busybox") is None
   assert status_image(s, BB_DIGEST) == img


def test_two_tags_one_image(serve):
   s = serve(registry=REGISTRY)
   assert pull(s, "busybox") == pull(s, "busybox:1.36")
   (img,) = image_list(s)
   assert sorted(img.repo_tags) == [BB_TAG2, BB_TAG]
   assert list(img.repo_digests) == [BB_DIGEST]
   assert status_image(s, "busybox:1.36") == status_image(s, "busybox")
   assert s.ch.image_ids() == { id_of(BUSYBOX) }


def test_same_image_two_registries(serve):
   s = serve(registry=REGISTRY)
   a = pull(s, "registry.k8s.io/pause:3.9")
   b = pull(s, "k8s.gcr.io/pause:3.9")
   assert a == b == "sha256:" + id_of(PAUSE)
   (img,) = image_list(s)
   assert sorted(img.repo_tags) == ["k8s.gcr.io/pause:3.9",
                                    "registry.k8s.io/pause:3.9"]
   assert sorted(img.repo_digests) \
          == ["k8s.gcr.io/pause@" + digest_of(PAUSE),
              "registry.k8s.io/pause@" + digest_of(PAUSE)]


def test_repull_same_tag_no_duplicates(serve):
   s = serve(registry=REGISTRY)
   pull(s, "busybox")
   pull(s, "busybox:latest")
   (img,) = image_list(s)
   assert list(img.repo_tags) == [BB_TAG]
   assert list(img.repo_digests) == [BB_DIGEST]
   assert s.ch.pull_ct == 2


def test_tag_moves_to_new_image(serve):
   s = serve(registry=REGISTRY)
   old = pull(s, "busybox")
   pull(s, "busybox:1.36")
   s.ch.registry[HUB + "busybox:latest"] = BUSYBOX_NEW
   new = pull(s, "busybox")
   assert new == "sha256:" + id_of(BUSYBOX_NEW) != old
   imgs = { i.id: i for i in image_list(s) }
   assert set(imgs) == { old, new }
   assert list(imgs[old].repo_tags) == [BB_TAG2]
   assert list(imgs[new].repo_tags) == [BB_TAG]
   assert list(imgs[new].repo_digests) \
          == ["docker.io/library/busybox@" + digest_of(BUSYBOX_NEW)]
   assert status_image(s, "busybox").id == new
   assert status_image(s, "busybox:1.36").id == old
   assert s.ch.image_ids() == { old[7:], new[7:] }


@pytest.mark.parametrize(("user", "uid", "username"), [
   ("1002", 1002, ""),
   ("www-data", None, "www-data"),
   ("1003:1004", 1003, ""),
   ("www-data:1004", None, "www-data"),
   ("0", 0, ""),
   ("", None, ""),
])
def test_user(serve, user, uid, username):
   data = config_bytes(user=user)
   s = serve(registry={ "r.example/u:1": data })
   pull(s, "r.example/u:1")
   img = status_image(s, "r.example/u:1")
   assert img.username == username
   if (uid is None):
      assert not img.HasField("uid")
   else:
      assert img.HasField("uid") and img.uid.value == uid


def test_status_verbose(serve):
   s = serve(registry=REGISTRY)
   id_ = pull(s, "registry.k8s.io/pause:3.9")[7:]
   res = status(s, "registry.k8s.io/pause:3.9", verbose=True)
   info = json.loads(res.info["info"])
   assert info["imageSpec"] == json.loads(PAUSE)
   assert info["imageSpec"]["config"]["User"] == "65535"
   assert info["storagePath"] == s.ch.image_path(id_)
   assert res.image.uid.value == 65535
   assert dict(status(s, "registry.k8s.io/pause:3.9").info) == {}
   # absent image: no image, no info, no error
   res = status(s, "busybox", verbose=True)
   assert not res.HasField("image") and dict(res.info) == {}


def test_image_fs_info(serve):
   s = serve(registry=REGISTRY)
   def used():
      res = s.images.ImageFsInfo(pb.ImageFsInfoRequest(),
                                 timeout=RPC_TIMEOUT)
      (fs,) = res.image_filesystems
      assert fs.fs_id.mountpoint == s.ch.storage
      assert fs.timestamp > 0
      return (fs.used_bytes.value, fs.inodes_used.value)
   assert used() == (0, 0)
   pull(s, "busybox")
   pull(s, "busybox:1.36")   # same image: counted once
   pull(s, "registry.k8s.io/pause:3.9")
   sizes = [fsutil.tree_size(s.ch.image_path(i)) for i in s.ch.image_ids()]
   assert len(sizes) == 2
   assert used() == (sum(b for (b, _) in sizes), sum(i for (_, i) in sizes))
   assert used()[0] == sum(i.size for i in image_list(s))


def test_pinned(serve):
   s = serve(registry=REGISTRY, pinned=["registry.k8s.io/pause:3.9"])
   pull(s, "k8s.gcr.io/pause:3.9")
   assert not status_image(s, "k8s.gcr.io/pause:3.9").pinned
   pull(s, "registry.k8s.io/pause:3.9")
   assert status_image(s, "k8s.gcr.io/pause:3.9").pinned
   pull(s, "busybox")
   assert not status_image(s, "busybox").pinned


## Tests: remove ##

def test_remove_by_id_removes_all_tags(serve):
   s = serve(registry=REGISTRY)
   id_ = pull(s, "busybox")
   pull(s, "busybox:1.36")
   pull(s, "registry.k8s.io/pause:3.9")
   remove(s, id_)
   for n in (id_, BB_TAG, BB_TAG2, BB_DIGEST):
      assert status_image(s, n) is None, n
   assert [i.id for i in image_list(s)] == ["sha256:" + id_of(PAUSE)]
   # tree gone, nothing left in the trash
   assert img_dirs(s) == [charlie.IMG_PREFIX + id_of(PAUSE)]


def test_remove_by_bare_id_and_digest(serve):
   s = serve(registry=REGISTRY)
   id_ = pull(s, "busybox")
   remove(s, id_[7:])
   assert image_list(s) == []
   pull(s, "busybox")
   pull(s, "busybox:1.36")
   remove(s, BB_DIGEST)
   assert image_list(s) == [] and img_dirs(s) == []


def test_remove_one_tag_keeps_others(serve):
   s = serve(registry=REGISTRY)
   id_ = pull(s, "busybox")
   pull(s, "busybox:1.36")
   remove(s, "busybox:1.36")
   (img,) = image_list(s)
   assert img.id == id_
   assert list(img.repo_tags) == [BB_TAG]
   assert status_image(s, "busybox:1.36") is None
   assert status_image(s, "busybox") == img
   assert s.ch.image_ids() == { id_[7:] }
   # the last tag takes the image with it
   remove(s, "busybox")
   assert image_list(s) == []
   assert status_image(s, BB_DIGEST) is None
   assert img_dirs(s) == []


def test_remove_missing_ok(serve):
   s = serve(registry=REGISTRY)
   remove(s, "busybox")
   remove(s, "sha256:" + "f" * 64)
   pull(s, "busybox")
   remove(s, "busybox:nope")
   remove(s, "quay.io/x/y@sha256:" + "e" * 64)
   assert len(image_list(s)) == 1
   remove(s, "busybox")
   remove(s, "busybox")
   assert image_list(s) == []


def test_bare_id_of_missing_image(serve):
   s = serve(registry=REGISTRY)
   id_ = pull(s, "busybox")[7:]
   remove(s, id_)
   # a second removal by the same ID must succeed too (idempotent)
   remove(s, id_)
   assert status_image(s, id_) is None
   assert image_list(s, id_) == []


def test_remove_concurrent_by_id(serve):
   s = serve(registry=REGISTRY)
   workers = 5
   with concurrent.futures.ThreadPoolExecutor(workers) as ex:
      for round_ in range(4):
         id_ = pull(s, "busybox")
         pull(s, "busybox:1.36")
         barrier = threading.Barrier(workers)
         def one():
            barrier.wait(RPC_TIMEOUT)
            remove(s, id_)
            return status_image(s, id_)
         results = list(ex.map(lambda _: one(), range(workers)))
         assert results == [None] * workers, round_
         assert image_list(s) == [] and img_dirs(s) == [], round_


def test_remove_concurrent_by_tag(serve):
   s = serve(registry=REGISTRY)
   tags = ["r.example/a:%d" % i for i in range(6)]
   for t in tags:
      s.ch.registry[t] = BUSYBOX
      pull(s, t)
   with concurrent.futures.ThreadPoolExecutor(len(tags)) as ex:
      list(ex.map(lambda t: remove(s, t), tags))
   # each tag went; the image went with whichever was last
   assert image_list(s) == []
   assert img_dirs(s) == []


## Tests: pull failures and credentials ##

def test_pull_missing_not_found(serve):
   s = serve(registry=REGISTRY)
   (c, msg) = code(s.images.PullImage,
                   pb.PullImageRequest(image=pb.ImageSpec(image="nope:1")))
   assert c == grpc.StatusCode.NOT_FOUND
   assert "docker.io/library/nope:1" in msg
   assert image_list(s) == [] and img_dirs(s) == []


def test_pull_failure_unavailable(serve):
   s = serve(registry=REGISTRY)
   s.ch.failures[HUB + "busybox:latest"] = "connection refused"
   (c, msg) = code(s.images.PullImage,
                   pb.PullImageRequest(image=pb.ImageSpec(image="busybox")))
   assert c == grpc.StatusCode.UNAVAILABLE
   assert "connection refused" in msg


def test_pull_mirror_then_upstream(serve, tmp_path):
   ca = str(tmp_path / "ca.pem")
   table = { "docker.io": { "mirrors": ["https://m.example/v2/hub"] },
             "m.example": { "ca": ca, "username": "mu", "password": "mp" } }
   s = serve(registry=REGISTRY, table=table)
   assert pull(s, "busybox") == "sha256:" + id_of(BUSYBOX)
   assert [(p["src"], p["ca_file"], p["username"]) for p in s.ch.pulls] \
          == [("m.example/hub/library/busybox:latest", ca, "mu"),
              (HUB + "busybox:latest", None, None)]
   # a mirror that has it is used alone
   s.ch.registry["m.example/hub/library/busybox:1.36"] = BUSYBOX
   pull(s, "busybox:1.36")
   assert s.ch.pulls[-1]["src"] == "m.example/hub/library/busybox:1.36"
   assert s.ch.pull_ct == 3


def test_pull_mirror_only(serve):
   table = { "docker.io": { "mirrors": ["https://m.example"],
                            "upstream": False,
                            "skip_verify": True },
             "m.example": { "skip_verify": True },
             "quay.io": { "upstream": False } }
   s = serve(registry=REGISTRY, table=table)
   (c, msg) = code(s.images.PullImage,
                   pb.PullImageRequest(image=pb.ImageSpec(image="busybox")))
   assert c == grpc.StatusCode.NOT_FOUND
   assert [(p["src"], p["tls_verify"]) for p in s.ch.pulls] \
          == [("m.example/library/busybox:latest", False)]
   (c, msg) = code(s.images.PullImage,
                   pb.PullImageRequest(image=pb.ImageSpec(image="quay.io/a")))
   assert c == grpc.StatusCode.FAILED_PRECONDITION
   assert "quay.io" in msg and "upstream" in msg
   assert s.ch.pull_ct == 1


def test_pull_mirror_error_then_upstream_missing(serve):
   table = { "docker.io": { "mirrors": ["https://m.example"] } }
   s = serve(registry=REGISTRY, table=table)
   s.ch.failures["m.example/library/nope:latest"] = "TLS handshake failed"
   (c, msg) = code(s.images.PullImage,
                   pb.PullImageRequest(image=pb.ImageSpec(image="nope")))
   # not everyone said "not found": it may exist, so UNAVAILABLE
   assert c == grpc.StatusCode.UNAVAILABLE
   assert "TLS handshake failed" in msg and "m.example" in msg


@pytest.mark.parametrize("field", ["identity_token", "registry_token"])
def test_pull_token_auth_unimplemented(serve, field):
   s = serve(registry=REGISTRY)
   req = pb.PullImageRequest(image=pb.ImageSpec(image="busybox"))
   setattr(req.auth, field, "tok")
   (c, msg) = code(s.images.PullImage, req)
   assert c == grpc.StatusCode.UNIMPLEMENTED
   assert field in msg
   assert s.ch.pull_ct == 0


@pytest.mark.parametrize("auth", ["not base64!", "dXNlcg==",   # "user"
                                  "//79/A==",                 # not UTF-8
                                  "dXNlcjpwYXN"])             # bad padding
def test_pull_auth_bad_base64(serve, auth):
   s = serve(registry=REGISTRY)
   req = pb.PullImageRequest(image=pb.ImageSpec(image="busybox"),
                             auth=pb.AuthConfig(auth=auth))
   (c, msg) = code(s.images.PullImage, req)
   assert c == grpc.StatusCode.INVALID_ARGUMENT
   assert "auth.auth" in msg
   assert s.ch.pull_ct == 0


def test_pull_credentials_passed(serve):
   s = serve(registry=REGISTRY)
   a = base64.b64encode("alice:pa:ss".encode()).decode()
   pull(s, "busybox", pb.AuthConfig(auth=a))
   pull(s, "busybox:1.36", pb.AuthConfig(username="bob", password="pw"))
   pull(s, "busybox", pb.AuthConfig(server_address="docker.io"))
   assert [(p["username"], p["password"]) for p in s.ch.pulls] \
          == [("alice", "pa:ss"), ("bob", "pw"), (None, None)]


@pytest.mark.parametrize("text", ["", "Busybox", "../etc/passwd",
                                  "busybox/../../x", "busybox@sha256:abc",
                                  "busybox@sha256:" + "0" * 63,
                                  "a" * 300, "x" * 5000, "busy box",
                                  "sha256:xyz/../a"])
def test_invalid_refs(serve, text):
   s = serve(registry=REGISTRY)
   spec = pb.ImageSpec(image=text)
   for (f, req) in ((s.images.PullImage, pb.PullImageRequest(image=spec)),
                    (s.images.ImageStatus,
                     pb.ImageStatusRequest(image=spec)),
                    (s.images.RemoveImage,
                     pb.RemoveImageRequest(image=spec))):
      (c, msg) = code(f, req)
      assert c == grpc.StatusCode.INVALID_ARGUMENT, (f, text)
      assert msg.startswith("image.image: "), (f, text, msg)
      assert len(msg) < 2000
   if (text != ""):   # an empty filter lists everything
      (c, msg) = code(s.images.ListImages, pb.ListImagesRequest(
         filter=pb.ImageFilter(image=spec)))
      assert c == grpc.StatusCode.INVALID_ARGUMENT
      assert msg.startswith("filter.image.image: ")
   assert s.ch.pull_ct == 0


def test_list_empty_filter_lists_all(serve):
   s = serve(registry=REGISTRY)
   pull(s, "busybox")
   pull(s, "registry.k8s.io/pause:3.9")
   assert len(image_list(s, "")) == 2
   assert len(image_list(s)) == 2


## Tests: concurrency of pulls ##

def test_concurrent_pulls_coalesce(serve):
   s = serve(registry=REGISTRY)
   s.ch.gate = threading.Event()
   n = 8
   with concurrent.futures.ThreadPoolExecutor(n) as ex:
      futs = [ex.submit(pull, s, "busybox") for _ in range(n)]
      assert s.ch.pull_started.acquire(timeout=RPC_TIMEOUT)
      deadline = time.monotonic() + RPC_TIMEOUT
      while (s.calls.ct("PullImage") < n and time.monotonic() < deadline):
         time.sleep(0.01)
      assert s.calls.ct("PullImage") == n
      time.sleep(0.2)   # let the last arrivals reach the wait
      assert s.ch.pull_ct == 1
      s.ch.gate.set()
      refs = [f.result(RPC_TIMEOUT) for f in futs]
   assert refs == ["sha256:" + id_of(BUSYBOX)] * n
   assert s.ch.pull_ct == 1
   (img,) = image_list(s)
   assert list(img.repo_tags) == [BB_TAG]
   # once done, a new pull downloads again
   pull(s, "busybox")
   assert s.ch.pull_ct == 2


def test_concurrent_pulls_share_failure(serve):
   s = serve(registry=REGISTRY)
   s.ch.gate = threading.Event()
   n = 4
   with concurrent.futures.ThreadPoolExecutor(n) as ex:
      futs = [ex.submit(code, s.images.PullImage, pb.PullImageRequest(
                 image=pb.ImageSpec(image="nope"))) for _ in range(n)]
      assert s.ch.pull_started.acquire(timeout=RPC_TIMEOUT)
      deadline = time.monotonic() + RPC_TIMEOUT
      while (s.calls.ct("PullImage") < n and time.monotonic() < deadline):
         time.sleep(0.01)
      time.sleep(0.2)
      s.ch.gate.set()
      codes = [f.result(RPC_TIMEOUT)[0] for f in futs]
   assert codes == [grpc.StatusCode.NOT_FOUND] * n
   assert s.ch.pull_ct == 1


def test_concurrent_pulls_different_refs(serve):
   s = serve(registry=REGISTRY)
   names = ["busybox", "busybox:1.36", "registry.k8s.io/pause:3.9",
            "k8s.gcr.io/pause:3.9", BB_DIGEST]
   with concurrent.futures.ThreadPoolExecutor(len(names)) as ex:
      refs = list(ex.map(lambda n: pull(s, n), names))
   assert refs == ["sha256:" + id_of(d)
                   for d in (BUSYBOX, BUSYBOX, PAUSE, PAUSE, BUSYBOX)]
   imgs = { i.id: i for i in image_list(s) }
   assert sorted(imgs["sha256:" + id_of(BUSYBOX)].repo_tags) \
          == [BB_TAG2, BB_TAG]
   assert len(imgs["sha256:" + id_of(PAUSE)].repo_tags) == 2
   assert s.ch.image_ids() == { id_of(BUSYBOX), id_of(PAUSE) }
   assert s.ch.pull_ct == len(names)


def test_pull_while_server_busy_still_answers(serve):
   # a blocked pull holds no lock that queries need
   s = serve(registry=REGISTRY)
   pull(s, "registry.k8s.io/pause:3.9")
   s.ch.gate = threading.Event()
   with concurrent.futures.ThreadPoolExecutor(1) as ex:
      fut = ex.submit(pull, s, "busybox")
      assert s.ch.pull_started.acquire(timeout=RPC_TIMEOUT)
      assert len(image_list(s)) == 1
      assert status_image(s, "registry.k8s.io/pause:3.9") is not None
      remove(s, "registry.k8s.io/pause:3.9")
      assert image_list(s) == []
      s.ch.gate.set()
      assert fut.result(RPC_TIMEOUT) == "sha256:" + id_of(BUSYBOX)


def test_status_verbose_races_remove(serve):
   s = serve(registry=REGISTRY)
   pull(s, "busybox")
   s.ch.config_gate = threading.Event()
   with concurrent.futures.ThreadPoolExecutor(1) as ex:
      fut = ex.submit(status, s, "busybox", True)
      deadline = time.monotonic() + RPC_TIMEOUT
      while (s.calls.ct("ImageStatus") < 1 and time.monotonic() < deadline):
         time.sleep(0.01)
      time.sleep(0.1)
      remove(s, "busybox")
      s.ch.config_gate.set()
      # removed meanwhile: "not there" is a fine answer, INTERNAL is not
      res = fut.result(RPC_TIMEOUT)
   assert not res.HasField("image") or res.info["info"]


## Tests: the index on disk ##

def test_index_persists(serve, root):
   s = serve(registry=REGISTRY)
   pull(s, "busybox")
   pull(s, "busybox:1.36")
   pull(s, "registry.k8s.io/pause:3.9")
   remove(s, "busybox:1.36")
   before = sorted(image_list(s), key=lambda i: i.id)
   t = serve(registry=REGISTRY)   # same root, new store and adapter
   after = sorted(image_list(t), key=lambda i: i.id)
   assert after == before and len(after) == 2
   assert status_image(t, "busybox:1.36") is None
   assert status_image(t, BB_DIGEST) == status_image(s, BB_DIGEST)
   assert t.ch.pull_ct == 0
   with open(os.path.join(t.state, cri.images.INDEX_FILE)) as fp:
      index = json.load(fp)
   assert index["version"] == fsutil.STATE_VERSION
   assert set(index["images"]) == { id_of(BUSYBOX), id_of(PAUSE) }


def test_index_corrupt_moved_aside(serve, root):
   s = serve(registry=REGISTRY)
   pull(s, "busybox")
   index = os.path.join(s.state, cri.images.INDEX_FILE)
   with open(index, "wb") as fp:
      fp.write(b'{"version": 1, "images": {"')   # torn write
   t = serve(registry=REGISTRY)
   assert len(glob.glob(index + ".corrupt.*")) == 1
   with open(glob.glob(index + ".corrupt.*")[0], "rb") as fp:
      assert fp.read() == b'{"version": 1, "images": {"'
   assert image_list(t) == []
   # the tree nobody indexes any more is removed, and a new index written
   assert img_dirs(t) == []
   assert fsutil.json_read(index)["images"] == {}
   pull(t, "busybox")
   assert len(image_list(t)) == 1


def test_index_too_new_moved_aside(serve, root):
   s = serve(registry=REGISTRY)
   index = os.path.join(s.state, cri.images.INDEX_FILE)
   with open(index, "w") as fp:
      json.dump({ "version": fsutil.STATE_VERSION + 1, "images": {} }, fp)
   serve(registry=REGISTRY)
   assert len(glob.glob(index + ".corrupt.*")) == 1


@pytest.mark.parametrize("text", ['{"version": 1}',
                                  '{"version": 1, "images": []}',
                                  '{"version": "1", "images": {}}'])
def test_index_wrong_shape_moved_aside(serve, root, text):
   state = fsutil.mkdirs(os.path.join(root, "state"))
   index = os.path.join(state, cri.images.INDEX_FILE)
   with open(index, "w") as fp:
      fp.write(text)
   s = serve(registry=REGISTRY)
   assert len(glob.glob(index + ".corrupt.*")) == 1
   assert image_list(s) == []


def test_unindexed_tree_removed_at_load(serve, root):
   s = serve(registry=REGISTRY)
   pull(s, "busybox")
   stray = s.ch.image_path("d" * 64)
   fsutil.mkdirs(os.path.join(stray, "bin"))
   os.chmod(os.path.join(stray, "bin"), 0o500)   # images have these
   user = os.path.join(s.ch.img_dir, "my-own-image")
   fsutil.mkdirs(user)
   trash = os.path.join(s.ch.img_dir, charlie.TRASH_PREFIX + "0" * 32)
   fsutil.mkdirs(trash)
   assert s.ch.image_ids() == { "d" * 64, id_of(BUSYBOX) }
   t = serve(registry=REGISTRY)
   assert t.ch.image_ids() == { id_of(BUSYBOX) }
   assert img_dirs(t) == sorted([charlie.IMG_PREFIX + id_of(BUSYBOX),
                                 "my-own-image"])
   assert [i.id for i in image_list(t)] == ["sha256:" + id_of(BUSYBOX)]


def test_indexed_tree_missing_dropped_at_load(serve, root):
   s = serve(registry=REGISTRY)
   pull(s, "busybox")
   pull(s, "registry.k8s.io/pause:3.9")
   fsutil.rmtree(s.ch.image_path(id_of(PAUSE)))
   t = serve(registry=REGISTRY)
   assert [i.id for i in image_list(t)] == ["sha256:" + id_of(BUSYBOX)]
   assert status_image(t, "registry.k8s.io/pause:3.9") is None
   assert set(fsutil.json_read(os.path.join(t.state, cri.images.INDEX_FILE))
              ["images"]) == { id_of(BUSYBOX) }


def test_fake_matches_adapter_interface():
   # The fake must keep the signatures cri/images.py relies on.
   import inspect
   for name in ("pull", "image_config", "image_ids", "image_path",
                "image_trash", "trash_empty", "storage_gc"):
      real = inspect.signature(getattr(charlie.Charliecloud, name))
      fake = inspect.signature(getattr(fake_charlie.Fake_Charlie, name))
      assert list(real.parameters) == list(fake.parameters), name
