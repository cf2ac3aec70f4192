# Fuzz the ImageService with random and malformed requests: every answer
# must be a deliberate status, never INTERNAL or UNKNOWN, and the server
# must keep serving.

import base64
import collections
import os
import random

import grpc

from cri_api.v1 import api_pb2 as pb

import fake_charlie
from conftest import RPC_TIMEOUT


## Constants ##

SEED = 0xC4C21
REQUEST_CT = 1000

BUSYBOX = fake_charlie.config_bytes(salt="busybox")
PAUSE = fake_charlie.config_bytes(user="65535", salt="pause")
REGISTRY = { "registry-1.docker.io/library/busybox:latest": BUSYBOX,
             "m.example/pfx/library/busybox:1.36": BUSYBOX,
             "registry.k8s.io/pause:3.9": PAUSE,
             "localhost:5000/a/b:1": PAUSE }
TABLE = { "docker.io": { "mirrors": ["https://m.example/v2/pfx"] } }

EXISTING = ["busybox", "busybox:latest", "busybox:1.36",
            "docker.io/library/busybox:latest", "registry.k8s.io/pause:3.9",
            "localhost:5000/a/b:1",
            "sha256:" + fake_charlie.id_of(BUSYBOX),
            fake_charlie.id_of(PAUSE),
            "busybox@" + fake_charlie.digest_of(BUSYBOX)]

# Odd characters: controls, NUL, bidi overrides, zero-width, BOM, combining
# marks, non-BMP (no lone surrogates: a proto string must be valid UTF-8).
ODD = ("\x00\x01\x07\x08\t\n\r\x1b\x7f\x85\xa0\u00e9\u0301\u200b\u200d"
       "\u202e\u2028\u2029\u3000\ufeff\ufffd\uffff\U0001f600\U0010ffff"
       "/:@.-_%\\\"' ")
SAFE = "abcdefghijklmnopqrstuvwxyz0123456789"
HEXDIGITS = "0123456789abcdef"

# Codes a well-behaved ImageService may answer to anything a client sends.
ALLOWED = { grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED }
FIELDS = ("image.image: ", "filter.image.image: ", "auth.auth: ")


## Functions ##

def text_random(r):
   "Return a random, usually malformed, image reference."
   k = r.randrange(14)
   if (k == 0):
      return ""
   if (k == 1):   # huge
      n = r.choice((100 * 1024, 4097, 1025, r.randrange(1000, 5000)))
      return "".join(r.choice(SAFE + "/:.") for _ in range(n))
   if (k == 2):   # printable junk
      return "".join(chr(r.randrange(32, 127))
                     for _ in range(r.randrange(1, 80)))
   if (k == 3):   # odd unicode and control characters
      return "".join(r.choice(ODD + SAFE) for _ in range(r.randrange(1, 60)))
   if (k == 4):   # path tricks
      return r.choice(("../", "./", "/", "..", "a/../", "//")) * \
             r.randrange(1, 6) + r.choice(("busybox", "etc/passwd", "",
                                           "busybox:latest"))
   if (k == 5):   # sha256: with the wrong length or digits
      n = r.choice((0, 1, 32, 63, 65, 128, r.randrange(200)))
      digits = r.choice((HEXDIGITS, HEXDIGITS.upper(), "xyz", SAFE))
      return r.choice(("sha256:", "", "sha512:", "SHA256:", "busybox@sha256:",
                       "sha256:sha256:")) + \
             "".join(r.choice(digits) for _ in range(n))
   if (k == 6):   # valid-looking, absent
      return ref_valid(r)
   if (k == 7):   # present
      return r.choice(EXISTING)
   if (k == 8):   # present, mutated
      t = list(r.choice(EXISTING))
      for _ in range(r.randrange(1, 4)):
         i = r.randrange(len(t) + 1)
         op = r.randrange(3)
         if (op == 0):
            t.insert(i, r.choice(ODD + SAFE))
         elif (t and i < len(t)):
            if (op == 1):
               del t[i]
            else:
               t[i] = r.choice(ODD + SAFE)
      return "".join(t)
   if (k == 9):   # deep paths (the parser's worst case)
      return "q.io/" + "a/" * r.randrange(100, 600) + "b"
   if (k == 10):   # tags and ports at their limits
      return "%s:%d/x:%s" % (r.choice(("localhost", "h.example", "10.0.0.1",
                                       "h")),
                             r.choice((0, 1, 65535, 65536, 99999, 123456)),
                             "t" * r.choice((1, 127, 128, 129, 300)))
   if (k == 11):   # IDs, present or not, bare or prefixed
      return r.choice(("sha256:", "")) + \
             r.choice((fake_charlie.id_of(BUSYBOX),
                       "".join(r.choice(HEXDIGITS) for _ in range(64))))
   if (k == 12):   # digests
      return "%s@sha256:%s" % (r.choice(("busybox", "quay.io/a/b",
                                         "busybox:1")),
                               "".join(r.choice(HEXDIGITS)
                                       for _ in range(64)))
   return r.choice(EXISTING) + r.choice(("@", ":", "/", "@sha256:", "\x00",
                                         " ", "\n", ":latest:latest"))


def ref_valid(r):
   "Return a well-formed reference that is (almost surely) not stored."
   name = "/".join("".join(r.choice("abcxyz019") for _ in range(r.randint(1,
                                                                        9)))
                   for _ in range(r.randint(1, 3)))
   host = r.choice(("", "", "quay.io/", "localhost:5000/", "127.0.0.1:1/",
                    "docker.io/"))
   tail = r.choice(("", ":v%d" % r.randrange(99), ":latest",
                    "@sha256:" + "".join(r.choice(HEXDIGITS)
                                         for _ in range(64))))
   return host + "z" + name + tail


def auth_random(r):
   "Return an AuthConfig, or None for no auth field."
   k = r.randrange(8)
   if (k < 3):
      return None
   if (k == 3):
      return pb.AuthConfig(username=text_random(r)[:200],
                           password=text_random(r)[:200])
   if (k == 4):   # base64 of user:password, or not
      raw = "%s:%s" % (text_random(r)[:50], text_random(r)[:50])
      good = base64.b64encode(raw.encode("utf-8")).decode()
      return pb.AuthConfig(auth=r.choice((good, good[:-1], good + "!",
                                          text_random(r)[:300])))
   if (k == 5):
      return pb.AuthConfig(identity_token=text_random(r)[:100] or "t")
   if (k == 6):
      return pb.AuthConfig(registry_token="t", username="u")
   return pb.AuthConfig(server_address=text_random(r)[:300])


def spec_random(r):
   s = pb.ImageSpec(image=text_random(r))
   if (r.random() < 0.2):
      s.annotations[text_random(r)[:50]] = text_random(r)[:50]
   if (r.random() < 0.1):
      s.runtime_handler = text_random(r)[:50]
      s.user_specified_image = text_random(r)[:50]
   return s


def request_random(r):
   "Return (method name, request, token auth?) for one random request."
   k = r.randrange(4)
   if (k == 0):
      req = pb.PullImageRequest(image=spec_random(r))
      a = auth_random(r)
      if (a is not None):
         req.auth.CopyFrom(a)
      token_p = bool(a is not None and (a.identity_token or a.registry_token))
      return ("PullImage", req, token_p)
   if (k == 1):
      return ("ImageStatus", pb.ImageStatusRequest(
         image=spec_random(r), verbose=r.random() < 0.5), False)
   if (k == 2):
      req = pb.ListImagesRequest()
      if (r.random() < 0.8):
         req.filter.image.CopyFrom(spec_random(r))
      return ("ListImages", req, False)
   return ("RemoveImage", pb.RemoveImageRequest(image=spec_random(r)), False)


## Tests ##

def test_requests_repeatable():
   a = [request_random(random.Random(SEED)) for _ in range(3)]
   b = [request_random(random.Random(SEED)) for _ in range(3)]
   assert a == b


def test_fuzz_image_service(serve):
   s = serve(registry=REGISTRY, table=TABLE)
   r = random.Random(SEED)
   seen = collections.Counter()
   for i in range(REQUEST_CT):
      (method, req, token_p) = request_random(r)
      where = "request %d (seed %#x): %s %r" % (i, SEED, method,
                                                str(req)[:300])
      try:
         getattr(s.images, method)(req, timeout=RPC_TIMEOUT)
         c = grpc.StatusCode.OK
      except grpc.RpcError as x:
         c = x.code()
         msg = x.details() or ""
         assert c in ALLOWED, "%s -> %s: %s" % (where, c, msg[:500])
         assert msg, where
         if (c == grpc.StatusCode.INVALID_ARGUMENT):
            assert msg.startswith(FIELDS), "%s -> %s" % (where, msg[:500])
         if (c == grpc.StatusCode.NOT_FOUND):
            assert method == "PullImage", where
         if (c == grpc.StatusCode.UNIMPLEMENTED):
            assert token_p and "token" in msg, where
      if (token_p):
         assert c == grpc.StatusCode.UNIMPLEMENTED, where
      seen[(method, c)] += 1
   # the fuzz reached past validation, both ways
   for want in (("PullImage", grpc.StatusCode.OK),
                ("PullImage", grpc.StatusCode.NOT_FOUND),
                ("PullImage", grpc.StatusCode.INVALID_ARGUMENT),
                ("PullImage", grpc.StatusCode.UNIMPLEMENTED),
                ("ImageStatus", grpc.StatusCode.OK),
                ("ImageStatus", grpc.StatusCode.INVALID_ARGUMENT),
                ("ListImages", grpc.StatusCode.OK),
                ("RemoveImage", grpc.StatusCode.OK),
                ("RemoveImage", grpc.StatusCode.INVALID_ARGUMENT)):
      assert seen[want] > 0, (want, seen)
   # still serving, and the index agrees with the storage
   v = s.runtime.Version(pb.VersionRequest(), timeout=RPC_TIMEOUT)
   assert v.runtime_name == "ch-cri"
   imgs = s.images.ListImages(pb.ListImagesRequest(),
                              timeout=RPC_TIMEOUT).images
   assert { i.id[7:] for i in imgs } == s.ch.image_ids()
   assert not [n for n in os.listdir(s.ch.img_dir)
               if not n.startswith("ch-cri%") or "%trash-" in n
               or "%pull-" in n]
   res = s.images.PullImage(pb.PullImageRequest(
      image=pb.ImageSpec(image="registry.k8s.io/pause:3.9")),
      timeout=RPC_TIMEOUT)
   assert res.image_ref == "sha256:" + fake_charlie.id_of(PAUSE)
