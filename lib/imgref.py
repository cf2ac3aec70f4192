# Image reference parsing and normalisation (Docker/OCI reference grammar).

import functools
import re

import lark


## Constants ##

DEFAULT_DOMAIN = "docker.io"
DEFAULT_TAG = "latest"
NAME_MAX = 255

# Lark grammar for "[host[:port]/]path[:tag][@algo:hex]". Which first
# component is a registry host is decided after parsing (the Docker rule:
# it has a dot or a port, is "localhost", or has upper case).
GRAMMAR = r"""
start: hostport? path tag? digest?
hostport: HOSTISH ":" PORT "/"
path: HOSTISH ("/" COMPONENT)*
tag: ":" TAG
digest: "@" DIGEST
HOSTISH: /[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?/
PORT: /[0-9]{1,5}/
COMPONENT: /[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*/
TAG: /[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}/
DIGEST: /[a-z0-9]+(?:[+._-][a-z0-9]+)*:[0-9a-fA-F]{32,}/
"""
COMPONENT_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*\Z")
SHA256_RE = re.compile(r"(?:sha256:)?([0-9a-f]{64})\Z")


## Globals ##

parser = None


## Exceptions ##

class Ref_Error(ValueError):
   "An image reference does not parse or is invalid."


## Functions ##

def id_parse(text):
   """Return the 64-hex image ID if text is "sha256:HEX" or bare HEX,
      else None.

      >>> id_parse("sha256:" + "a" * 64) == "a" * 64
      True
      >>> id_parse("busybox") is None
      True
   """
   m = SHA256_RE.match(text)
   return m.group(1) if m else None


@functools.lru_cache(maxsize=1024)
def parse(text):
   """Parse and normalise image reference text into a Ref. Raise Ref_Error
      with the reason if it is not a valid reference.

      >>> str(parse("busybox"))
      'docker.io/library/busybox:latest'
      >>> str(parse("localhost:5000/a/b:1.0"))
      'localhost:5000/a/b:1.0'
      >>> str(parse("registry.k8s.io/pause:3.9"))
      'registry.k8s.io/pause:3.9'
      >>> parse("quay.io/x/y@sha256:" + "0" * 64).tag is None
      True
      >>> parse("a" * 64)
      Traceback (most recent call last):
      ...
      imgref.Ref_Error: invalid image reference: 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa': a 64-hex name is an image ID, not a repository
      >>> parse("Busybox")
      Traceback (most recent call last):
      ...
      imgref.Ref_Error: invalid image reference: 'Busybox': repository name must be lower case
   """
   global parser
   if (not isinstance(text, str) or text == ""):
      raise Ref_Error("empty image reference")
   if (len(text) > 1024):
      raise Ref_Error("image reference too long: %d characters" % len(text))
   if (parser is None):
      parser = lark.Lark(GRAMMAR, parser="earley", lexer="dynamic")
   try:
      tree = parser.parse(text)
   except lark.exceptions.LarkError as x:
      col = getattr(x, "column", None)
      where = (" at character %d" % col) if (col and col > 0) else ""
      raise Ref_Error("invalid image reference: %r: syntax error%s"
                      % (text, where))
   host = None
   port = None
   path = []
   tag = None
   digest = None
   for ch in tree.children:
      if (ch.data == "hostport"):
         (host, port) = (str(ch.children[0]), int(ch.children[1]))
      elif (ch.data == "path"):
         path = [str(t) for t in ch.children]
      elif (ch.data == "tag"):
         tag = str(ch.children[0])
      elif (ch.data == "digest"):
         digest = str(ch.children[0]).lower()
   def bad(why):
      return Ref_Error("invalid image reference: %r: %s" % (text, why))
   if (host is None and len(path) > 1 and (   "." in path[0]
                                          or path[0] == "localhost"
                                          or path[0] != path[0].lower())):
      host = path.pop(0)
   if (re.fullmatch(r"[0-9a-f]{64}", text)):
      # Docker's rule: a bare 64-hex string is an image ID, not a name.
      raise bad("a 64-hex name is an image ID, not a repository")
   if (host in ("docker.io", "index.docker.io") and port is None):
      host = None   # so "docker.io/busybox" gets library/ like "busybox"
   if (host is None):
      domain = DEFAULT_DOMAIN
      if (len(path) == 1):
         path.insert(0, "library")
   else:
      domain = host if (port is None) else "%s:%d" % (host, port)
      if (port is not None and port > 65535):
         raise bad("port out of range")
   for c in path:
      if (not COMPONENT_RE.match(c)):
         if (c.lower() != c):
            raise bad("repository name must be lower case")
         raise bad("invalid path component %r" % c)
   name = "%s/%s" % (domain, "/".join(path))
   if (len(name) > NAME_MAX):
      raise bad("name longer than %d characters" % NAME_MAX)
   if (digest is not None and not digest.startswith("sha256:")):
      raise bad("unsupported digest algorithm (only sha256)")
   if (digest is not None and len(digest) != 71):
      raise bad("sha256 digest must have 64 hex digits")
   if (tag is None and digest is None):
      tag = DEFAULT_TAG
   return Ref(domain, "/".join(path), tag, digest)


## Classes ##

class Ref:
   """A normalised image reference: domain ("docker.io", "host:port"),
      path ("library/busybox"), tag or None, digest ("sha256:...") or None.
      Immutable; compares by its string form."""

   __slots__ = ("domain", "path", "tag", "digest")

   def __init__(self, domain, path, tag, digest):
      self.domain = domain
      self.path = path
      self.tag = tag
      self.digest = digest

   def __eq__(self, other):
      return isinstance(other, Ref) and str(self) == str(other)

   def __hash__(self):
      return hash(str(self))

   def __repr__(self):
      return "Ref(%r)" % str(self)

   def __str__(self):
      s = self.name
      if (self.tag is not None):
         s += ":" + self.tag
      if (self.digest is not None):
         s += "@" + self.digest
      return s

   @property
   def name(self):
      "Repository name with domain, e.g. docker.io/library/busybox."
      return "%s/%s" % (self.domain, self.path)

   @property
   def tagged(self):
      "name:tag, or None if the reference has no tag."
      return None if self.tag is None else "%s:%s" % (self.name, self.tag)

   def with_digest(self, digest):
      """Return name@digest.

         >>> parse("busybox:1").with_digest("sha256:" + "0" * 64)[:31]
         'docker.io/library/busybox@sha25'
      """
      return "%s@%s" % (self.name, digest)
