# Unit tests of image reference parsing and normalisation (lib/imgref.py).

import pytest

import imgref


## Constants ##

HEX = "0123456789abcdef" * 4

# text -> (str of the normalised Ref, domain, path, tag, digest)
NORMAL = {
   "busybox":
      ("docker.io/library/busybox:latest",
       "docker.io", "library/busybox", "latest", None),
   "busybox:1.36":
      ("docker.io/library/busybox:1.36",
       "docker.io", "library/busybox", "1.36", None),
   "library/busybox":
      ("docker.io/library/busybox:latest",
       "docker.io", "library/busybox", "latest", None),
   "docker.io/library/busybox:latest":
      ("docker.io/library/busybox:latest",
       "docker.io", "library/busybox", "latest", None),
   "someone/tool:v2":
      ("docker.io/someone/tool:v2", "docker.io", "someone/tool", "v2", None),
   "registry.k8s.io/pause:3.9":
      ("registry.k8s.io/pause:3.9", "registry.k8s.io", "pause", "3.9", None),
   "quay.io/org/sub/img:Tag_1.x-y":
      ("quay.io/org/sub/img:Tag_1.x-y",
       "quay.io", "org/sub/img", "Tag_1.x-y", None),
   "localhost/foo":
      ("localhost/foo:latest", "localhost", "foo", "latest", None),
   "localhost:5000/a/b:1.0":
      ("localhost:5000/a/b:1.0", "localhost:5000", "a/b", "1.0", None),
   "127.0.0.1:5443/pause":
      ("127.0.0.1:5443/pause:latest",
       "127.0.0.1:5443", "pause", "latest", None),
   "myhost:8080/x":
      ("myhost:8080/x:latest", "myhost:8080", "x", "latest", None),
   # A bare "localhost" is an image name, not a registry.
   "localhost":
      ("docker.io/library/localhost:latest",
       "docker.io", "library/localhost", "latest", None),
   "busybox@sha256:" + HEX:
      ("docker.io/library/busybox@sha256:" + HEX,
       "docker.io", "library/busybox", None, "sha256:" + HEX),
   "busybox:1@sha256:" + HEX.upper():
      ("docker.io/library/busybox:1@sha256:" + HEX,
       "docker.io", "library/busybox", "1", "sha256:" + HEX),
   "a__b/c-d/e--f.g:t":
      ("docker.io/a__b/c-d/e--f.g:t", "docker.io", "a__b/c-d/e--f.g", "t",
       None),
}

BAD = {
   "": "empty",
   "Busybox": "lower case",
   "BUSYBOX:1": "lower case",
   "../etc/passwd": "syntax error",
   "a/../b": "syntax error",
   "a/./b": "syntax error",
   "./busybox": "syntax error",
   "busybox/..": "syntax error",
   "a//b": "syntax error",
   "a/b/": "syntax error",
   "/busybox": "syntax error",
   "-busybox": "syntax error",
   "busybox-": "syntax error",
   "a___b": "invalid path component",
   " busybox": "syntax error",
   "busybox ": "syntax error",
   "busybox\n": "syntax error",
   "busybox:": "syntax error",
   "busybox:-x": "syntax error",
   "busybox:" + "t" * 129: "syntax error",
   "busybox@": "syntax error",
   "busybox@sha256:": "syntax error",
   "busybox@sha256:abc": "syntax error",
   "busybox@sha256:" + "0" * 63: "64 hex digits",
   "busybox@sha256:" + "0" * 65: "64 hex digits",
   "busybox@sha256:" + "g" * 64: "syntax error",
   "busybox@md5:" + "0" * 32: "only sha256",
   "busybox@sha512:" + "0" * 128: "only sha256",
   "host:99999/a": "port out of range",
   "x" * 256: "longer than 255",
   "quay.io/" + "a/" * 130 + "b": "longer than 255",
   "x" * 1025: "too long",
   "busybox;rm -rf /": "syntax error",
   "busybox\u00e9": "syntax error",
   HEX: "image ID",
}


## Tests ##

@pytest.mark.parametrize("text", sorted(NORMAL))
def test_normalise(text):
   (full, domain, path, tag, digest) = NORMAL[text]
   r = imgref.parse(text)
   assert str(r) == full
   assert (r.domain, r.path, r.tag, r.digest) == (domain, path, tag, digest)
   # normalising is idempotent
   assert str(imgref.parse(full)) == full


@pytest.mark.parametrize("text", sorted(BAD))
def test_reject(text):
   with pytest.raises(imgref.Ref_Error) as ei:
      imgref.parse(text)
   assert BAD[text] in str(ei.value)


def test_reject_error_names_text():
   with pytest.raises(imgref.Ref_Error) as ei:
      imgref.parse("a/../b")
   assert "'a/../b'" in str(ei.value)


def test_reject_not_a_string():
   with pytest.raises(imgref.Ref_Error):
      imgref.parse(None)


def test_ref_equality_and_properties():
   a = imgref.parse("busybox")
   b = imgref.parse("docker.io/library/busybox:latest")
   assert a == b and hash(a) == hash(b)
   assert a != imgref.parse("busybox:1")
   assert a != "docker.io/library/busybox:latest"
   assert a.name == "docker.io/library/busybox"
   assert a.tagged == "docker.io/library/busybox:latest"
   assert repr(a) == "Ref('docker.io/library/busybox:latest')"
   d = imgref.parse("busybox@sha256:" + HEX)
   assert d.tagged is None
   assert (a.with_digest("sha256:" + HEX)
           == "docker.io/library/busybox@sha256:" + HEX)


def test_id_parse():
   assert imgref.id_parse("sha256:" + HEX) == HEX
   assert imgref.id_parse(HEX) == HEX
   for bad in ("sha256:" + HEX[:-1], "sha256:" + HEX + "0", HEX.upper(),
               "sha256:" + HEX.upper(), "sha512:" + HEX, "sha256:", "",
               HEX + "\n", " " + HEX, "busybox", "sha256:" + "g" * 64):
      assert imgref.id_parse(bad) is None, bad


def test_docker_io_official_image_normalised():
   # Docker, containerd and the kubelet treat these as the same image;
   # "docker.io/nginx" is common in pod specs.
   assert str(imgref.parse("docker.io/busybox")) \
          == "docker.io/library/busybox:latest"


def test_hex_name_with_tag_is_a_repository():
   # Docker refuses only a reference that is entirely 64 hex digits.
   r = imgref.parse(HEX + ":1")
   assert str(r) == "docker.io/library/%s:1" % HEX
