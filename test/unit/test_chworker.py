# The Charliecloud worker's layer handling, below Charliecloud's library:
# inflating a layer while it downloads or from the download cache, checking
# its bytes against its digest, and mending a tar that ends early.

import gzip
import hashlib
import io
import os
import tarfile

import pytest

import cri.chworker as cw


## Functions ##

def tar_of(files):
   "Return the bytes of a tar holding files ({name: bytes})."
   buf = io.BytesIO()
   with tarfile.open(fileobj=buf, mode="w") as t:
      for (name, data) in files.items():
         ti = tarfile.TarInfo(name)
         ti.size = len(data)
         t.addfile(ti, io.BytesIO(data))
   return buf.getvalue()


def layer_write(dir_, data, name=None):
   "Write layer data into dir_, named by its hash unless name; return path."
   name = name or hashlib.sha256(data).hexdigest() + ".tar.gz"
   path = os.path.join(dir_, name)
   with open(path, "wb") as fp:
      fp.write(data)
   return path


## Tests ##

def test_inflate_checks_digest(tmp_path):
   plain = tar_of({ "a": b"x" * 5000, "b": os.urandom(3000) })
   path = layer_write(str(tmp_path), gzip.compress(plain))
   assert cw.layer_inflate(path)
   with open(path + cw.PLAIN, "rb") as fp:
      assert fp.read() == plain
   # Bytes that are not the digest: refused, nothing inflated left.
   good = hashlib.sha256(b"something else").hexdigest()
   bad = layer_write(str(tmp_path), gzip.compress(plain), good + ".tar.gz")
   with pytest.raises(cw.Digest_Error, match="not to its digest"):
      cw.layer_inflate(bad)
   assert sorted(os.listdir(str(tmp_path))) == sorted(
      [os.path.basename(p) for p in (path, path + cw.PLAIN, bad)])


def test_inflate_several_members_and_not_gzip(tmp_path):
   plain = tar_of({ "a": b"hello" * 999 })
   # gzip allows members one after another (pigz and others write them)
   data = gzip.compress(plain[:3000]) + gzip.compress(plain[3000:])
   path = layer_write(str(tmp_path), data)
   assert cw.layer_inflate(path)
   with open(path + cw.PLAIN, "rb") as fp:
      assert fp.read() == plain
   # An uncompressed layer: hashed, left to Charliecloud as it is.
   path = layer_write(str(tmp_path), plain)
   assert not cw.layer_inflate(path)
   assert not os.path.exists(path + cw.PLAIN)
   # A truncated gzip: not whole, so not used.
   path = layer_write(str(tmp_path), gzip.compress(plain)[:-20])
   assert not cw.layer_inflate(path)
   assert not [n for n in os.listdir(str(tmp_path)) if ".part-" in n]


def test_sink_inflates_while_written(tmp_path):
   plain = tar_of({ "big": os.urandom(1 << 20), "small": b"y" * 10 })
   data = gzip.compress(plain)
   gz = str(tmp_path / "l.gz")
   out = str(tmp_path / "l.tar")
   sink = cw.Layer_Sink(gz, out)
   sink.start(len(data))
   for i in range(0, len(data), 7000):
      sink.write(data[i:i + 7000])
   (h, whole) = sink.finish()
   assert (h, whole) == (hashlib.sha256(data).hexdigest(), True)
   with open(gz, "rb") as fp:
      assert fp.read() == data
   with open(out, "rb") as fp:
      assert fp.read() == plain
   # Garbage: the download still completes (the queue is drained), and
   # the inflation says it is not whole.
   sink = cw.Layer_Sink(gz, out)
   for i in range(200):
      sink.write(b"not gzip at all" * 100)
   (h, whole) = sink.finish()
   assert not whole


def test_mend_pads_plain_tar(tmp_path):
   full = tar_of({ "hello.txt": b"inserted\n" })
   # What umoci 0.4.7 "insert" writes: the last member's data unpadded,
   # no end-of-archive blocks.
   short = full[:512 + len(b"inserted\n")]
   path = layer_write(str(tmp_path), gzip.compress(short))
   assert cw.layer_inflate(path)
   assert cw.layer_mend(path)
   assert not cw.layer_mend(path)      # once is enough
   with tarfile.open(path + cw.PLAIN) as t:
      assert t.extractfile("hello.txt").read() == b"inserted\n"
   # The layer itself is untouched: its name is still its hash.
   with open(path, "rb") as fp:
      cw.digest_check(path, hashlib.sha256(fp.read()).hexdigest())
   assert not cw.layer_mend(str(tmp_path / "absent.tar.gz"))
