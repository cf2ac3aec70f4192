# SPDY/3.1 framing and a server-side session, as Kubernetes streaming
# (k8s.io/apimachinery httpstream/spdy over moby/spdystream) speaks it.

import collections
import select
import socket
import struct
import threading
import time
import zlib

import misc


## Constants ##

VERSION = 3

# Control frame types.
SYN_STREAM = 1
SYN_REPLY = 2
RST_STREAM = 3
SETTINGS = 4
PING = 6
GOAWAY = 7
HEADERS = 8
WINDOW_UPDATE = 9

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02

# RST_STREAM status codes.
PROTOCOL_ERROR = 1
INVALID_STREAM = 2
REFUSED_STREAM = 3
UNSUPPORTED_VERSION = 4
CANCEL = 5
INTERNAL_ERROR = 6

# GOAWAY status codes.
GOAWAY_OK = 0
GOAWAY_PROTOCOL_ERROR = 1

# Largest payload we put in one DATA frame (the format allows 2**24 - 1).
DATA_MAX = 32 * 1024
# Bytes a stream may hold unread before the session stops reading (the
# peers ignore flow control, so this is the only back-pressure there is).
BUFFER_MAX = 1024 * 1024
# Seconds a finished session waits for the peer to close before closing.
LINGER = 2.0

# The zlib dictionary of SPDY/3 header compression (draft 3, section
# 2.6.10.1): 4-byte big-endian lengths before each of the words, then the
# tail verbatim. Its Adler-32, e3c6a7c2, is the DICTID every SPDY/3 header
# block starts with.
DICT_WORDS = (
   "options head post put delete trace accept accept-charset "
   "accept-encoding accept-language accept-ranges age allow authorization "
   "cache-control connection content-base content-encoding "
   "content-language content-length content-location content-md5 "
   "content-range content-type date etag expect expires from host "
   "if-match if-modified-since if-none-match if-range "
   "if-unmodified-since last-modified location max-forwards pragma "
   "proxy-authenticate proxy-authorization range referer retry-after "
   "server te trailer transfer-encoding upgrade user-agent vary via "
   "warning www-authenticate method get status").split() \
   + ["200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie",
      "keep-alive", "origin"]
DICT_TAIL = (
   "100101201202205206300302303304305306307402405406407408409410411"
   "412413414415416417502504505203 Non-Authoritative Information204 No "
   "Content301 Moved Permanently400 Bad Request401 Unauthorized403 "
   "Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 "
   "Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec "
   "00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,"
   "image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,"
   "text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdch"
   "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.")
DICTIONARY = (b"".join(struct.pack(">I", len(w)) + w.encode()
                       for w in DICT_WORDS)
              + DICT_TAIL.encode())


## Globals ##

log = misc.log


## Exceptions ##

class Protocol_Error(Exception):
   "The peer sent something that is not SPDY/3."


class Closed_Error(Exception):
   "Writing to a stream or session that is reset or closed."


## Functions ##

def dictionary_check():
   """Return the length and Adler-32 of the header dictionary.

      >>> "%d %08x" % dictionary_check()
      '1423 e3c6a7c2'"""
   return (len(DICTIONARY), zlib.adler32(DICTIONARY))


def control(type_, flags, payload):
   "Return a control frame of type_ with flags and payload."
   return struct.pack(">HHI", 0x8000 | VERSION, type_,
                      (flags << 24) | len(payload)) + payload


def data_frame(stream_id, data, fin=False):
   """Return a DATA frame.

      >>> data_frame(1, b"hi", fin=True).hex()
      '00000001010000026869'"""
   assert (len(data) < 2**24)
   return struct.pack(">II", stream_id & 0x7fffffff,
                      ((FLAG_FIN if fin else 0) << 24) | len(data)) + data


def goaway_frame(last_id, status=GOAWAY_OK):
   return control(GOAWAY, 0, struct.pack(">II", last_id & 0x7fffffff,
                                         status))


def headers_pack(headers):
   """Return the uncompressed name/value block of headers, a dict of name
      to a string or a list of strings (joined with NUL as SPDY wants).

      >>> headers_pack({"a": ["b", "c"]})
      b'\\x00\\x00\\x00\\x01\\x00\\x00\\x00\\x01a\\x00\\x00\\x00\\x03b\\x00c'"""
   out = [struct.pack(">I", len(headers))]
   for (name, value) in headers.items():
      if (not isinstance(value, str)):
         value = "\0".join(value)
      n = name.lower().encode("latin-1")
      v = value.encode("latin-1")
      out.append(struct.pack(">I", len(n)) + n + struct.pack(">I", len(v)) + v)
   return b"".join(out)


def headers_unpack(block):
   """Return the dict (name to list of values) of an uncompressed block.

      >>> headers_unpack(headers_pack({"Port": "80", "x": ["1", "2"]}))
      {'port': ['80'], 'x': ['1', '2']}"""
   try:
      (ct,) = struct.unpack_from(">I", block, 0)
      i = 4
      headers = dict()
      for _ in range(ct):
         (n,) = struct.unpack_from(">I", block, i)
         name = block[i+4:i+4+n].decode("latin-1").lower()
         i += 4 + n
         (n,) = struct.unpack_from(">I", block, i)
         value = block[i+4:i+4+n].decode("latin-1")
         if (len(value) != n or not name):
            raise Protocol_Error("truncated or empty header")
         i += 4 + n
         headers.setdefault(name, []).extend(value.split("\0"))
      return headers
   except struct.error:
      raise Protocol_Error("truncated header block")


def ping_frame(id_):
   return control(PING, 0, struct.pack(">I", id_))


def rst_frame(stream_id, status):
   return control(RST_STREAM, 0, struct.pack(">II", stream_id & 0x7fffffff,
                                             status))


def settings_frame(pairs):
   "Return a SETTINGS frame of (id, value) pairs, no per-setting flags."
   body = struct.pack(">I", len(pairs))
   for (id_, value) in pairs:
      body += struct.pack(">II", id_ & 0xffffff, value)
   return control(SETTINGS, 0, body)


def window_update_frame(stream_id, delta):
   return control(WINDOW_UPDATE, 0, struct.pack(">II", stream_id & 0x7fffffff,
                                                delta & 0x7fffffff))


## Classes ##

class Header_Codec:
   """Compress and decompress SPDY/3 header blocks. Each direction of a
      session is one zlib stream, so one codec serves one session, and
      blocks must be packed in the order they are sent."""

   def __init__(self):
      self.z_out = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED,
                                    15, 8, zlib.Z_DEFAULT_STRATEGY,
                                    DICTIONARY)
      self.z_in = zlib.decompressobj(15, DICTIONARY)

   def compress(self, headers):
      return (self.z_out.compress(headers_pack(headers))
              + self.z_out.flush(zlib.Z_SYNC_FLUSH))

   def decompress(self, block):
      try:
         return headers_unpack(self.z_in.decompress(block))
      except zlib.error as x:
         raise Protocol_Error("header block: %s" % x)

   def syn_reply(self, stream_id, headers, fin=False):
      return control(SYN_REPLY, FLAG_FIN if fin else 0,
                     struct.pack(">I", stream_id & 0x7fffffff)
                     + self.compress(headers))

   def syn_stream(self, stream_id, headers, fin=False, assoc=0, prio=0):
      "Return a SYN_STREAM frame (what a client sends; tests use it)."
      return control(SYN_STREAM, FLAG_FIN if fin else 0,
                     struct.pack(">IIBB", stream_id & 0x7fffffff, assoc,
                                 (prio & 7) << 5, 0)
                     + self.compress(headers))


class Frame:
   """One unpacked frame. type_ is 0 for DATA; headers is set for frames
      that carry a header block; value holds the other numeric field
      (RST/GOAWAY status, PING id, WINDOW_UPDATE delta)."""

   __slots__ = ("type_", "flags", "stream_id", "data", "headers", "value",
                "version")

   def __init__(self, type_, flags, stream_id=0, data=b"", headers=None,
                value=0, version=VERSION):
      self.type_ = type_
      self.flags = flags
      self.stream_id = stream_id
      self.data = data
      self.headers = headers
      self.value = value
      self.version = version

   def __repr__(self):
      return ("Frame(type=%d flags=%d stream=%d value=%d data=%d bytes)"
              % (self.type_, self.flags, self.stream_id, self.value,
                 len(self.data)))

   @property
   def fin(self):
      return bool(self.flags & FLAG_FIN)


class Frame_Reader:
   """Split a byte stream into Frames. feed() bytes, then take frames()
      until it returns nothing. Header blocks are decompressed in order
      with codec (a Header_Codec)."""

   def __init__(self, codec, initial=b""):
      self.codec = codec
      self.buf = bytearray(initial)

   def feed(self, data):
      self.buf += data

   def frames(self):
      "Yield the complete frames buffered so far."
      while (len(self.buf) >= 8):
         (w1, w2) = struct.unpack_from(">II", self.buf, 0)
         length = w2 & 0xffffff
         if (len(self.buf) < 8 + length):
            return
         body = bytes(self.buf[8:8+length])
         del self.buf[:8+length]
         flags = w2 >> 24
         if (not w1 & 0x80000000):
            yield Frame(0, flags, w1 & 0x7fffffff, body)
            continue
         version = (w1 >> 16) & 0x7fff
         type_ = w1 & 0xffff
         yield self.control_parse(version, type_, flags, body)

   def control_parse(self, version, type_, flags, body):
      f = Frame(type_, flags, version=version)
      if (version != VERSION):
         return f   # the session refuses it
      try:
         if (type_ == SYN_STREAM):
            (f.stream_id, f.value) = struct.unpack_from(">II", body, 0)
            f.stream_id &= 0x7fffffff
            f.value &= 0x7fffffff   # associated-to stream
            f.headers = self.codec.decompress(body[10:])
         elif (type_ in (SYN_REPLY, HEADERS)):
            (f.stream_id,) = struct.unpack_from(">I", body, 0)
            f.stream_id &= 0x7fffffff
            f.headers = self.codec.decompress(body[4:])
         elif (type_ in (RST_STREAM, WINDOW_UPDATE, GOAWAY)):
            (f.stream_id, f.value) = struct.unpack_from(">II", body, 0)
            f.stream_id &= 0x7fffffff
            if (type_ == WINDOW_UPDATE):
               f.value &= 0x7fffffff
         elif (type_ == PING):
            (f.value,) = struct.unpack_from(">I", body, 0)
         elif (type_ == SETTINGS):
            (ct,) = struct.unpack_from(">I", body, 0)
            f.headers = dict()
            for i in range(ct):
               (id_, value) = struct.unpack_from(">II", body, 4 + 8*i)
               f.headers[id_ & 0xffffff] = value
         else:
            f.data = body   # unknown control frames are ignored
      except struct.error:
         raise Protocol_Error("short control frame type %d" % type_)
      return f


class Chunk_Queue:
   """Bytes received for one reader, in order, with end of stream. put()
      blocks while more than BUFFER_MAX bytes wait, unless the reader has
      gone (discard()), in which case data is dropped. All state is guarded
      by cond, which may be shared (a session shares one among streams)."""

   def __init__(self, cond=None):
      self.cond = cond or threading.Condition()
      self.chunks = collections.deque()
      self.size = 0
      self.eof_p = False
      self.discard_p = False

   def discard(self):
      with self.cond:
         self.discard_p = True
         self.chunks.clear()
         self.size = 0
         self.cond.notify_all()

   def eof(self):
      with self.cond:
         self.eof_p = True
         self.cond.notify_all()

   def get(self, timeout=None):
      """Return the next chunk, b"" at end of stream, or None if nothing
         arrived within timeout seconds."""
      with self.cond:
         end = None if timeout is None else time.monotonic() + timeout
         while (not self.chunks and not self.eof_p):
            left = None if end is None else end - time.monotonic()
            if (left is not None and left <= 0):
               return None
            self.cond.wait(left)
         if (not self.chunks):
            return b""
         chunk = self.chunks.popleft()
         self.size -= len(chunk)
         self.cond.notify_all()
         return chunk

   def put(self, data, abort=None):
      "Queue data; abort() true stops waiting for room."
      with self.cond:
         while (self.size > BUFFER_MAX and not self.discard_p
                and not self.eof_p and not (abort and abort())):
            self.cond.wait(1)
         if (self.discard_p or self.eof_p):
            return
         self.chunks.append(data)
         self.size += len(data)
         self.cond.notify_all()


class Socket_Transport:
   """A connected socket as a session transport: recv() with a timeout,
      sendall() bounded by send_timeout seconds, shutdown and close. The
      socket is non-blocking so that no call can hang."""

   def __init__(self, sock, send_timeout=60):
      self.sock = sock
      self.send_timeout = send_timeout
      sock.setblocking(False)

   def close(self):
      try:
         self.sock.close()
      except OSError:
         pass

   def fileno(self):
      return self.sock.fileno()

   def recv(self, timeout):
      """Return received bytes, b"" at end of stream, or None when nothing
         arrived within timeout seconds."""
      try:
         (r, _, _) = select.select([self.sock], [], [], timeout)
      except (OSError, ValueError):
         return b""
      if (not r):
         return None
      try:
         return self.sock.recv(65536)
      except (BlockingIOError, InterruptedError):
         return None
      except OSError:
         return b""

   def sendall(self, data):
      view = memoryview(data)
      end = time.monotonic() + self.send_timeout
      while (view):
         try:
            n = self.sock.send(view)
            view = view[n:]
            continue
         except (BlockingIOError, InterruptedError):
            pass
         left = end - time.monotonic()
         if (left <= 0):
            raise Closed_Error("send timed out")
         try:
            select.select([], [self.sock], [], min(left, 1))
         except (OSError, ValueError):
            raise Closed_Error("socket closed")

   def shutdown(self, how=socket.SHUT_WR):
      try:
         self.sock.shutdown(how)
      except OSError:
         pass


class Stream:
   """One stream of a Session, opened by the peer. headers maps lower-case
      names to lists of values. Read with read(), write with write();
      close() half-closes our side (FIN), reset() aborts the stream."""

   def __init__(self, session, id_, headers, fin):
      self.session = session
      self.id = id_
      self.headers = headers
      self.inq = Chunk_Queue(session.cond)
      self.local_fin = False
      self.reset_p = False
      self.data_cb = None   # if set, called with each chunk (reader thread)
      if (fin):
         self.inq.eof()

   def __repr__(self):
      return "Stream(%d %s)" % (self.id, self.header("streamtype"))

   def close(self):
      "Half-close our side (idempotent)."
      with self.session.cond:
         if (self.local_fin or self.reset_p):
            return
         self.local_fin = True
      try:
         self.session.send(data_frame(self.id, b"", fin=True))
      except Closed_Error:
         pass
      self.session.stream_maybe_forget(self)

   def discard(self):
      "Drop buffered and future data: nobody will read it."
      self.inq.discard()

   def header(self, name, default=None):
      return self.headers.get(name, [default])[0]

   def read(self, timeout=None):
      """Return the next bytes received, b"" at end (FIN, reset, or the
         session ended), or None if nothing arrived within timeout."""
      return self.inq.get(timeout)

   def reset(self, status=CANCEL):
      with self.session.cond:
         if (self.reset_p):
            return
         self.reset_p = True
      self.inq.eof()
      try:
         self.session.send(rst_frame(self.id, status))
      except Closed_Error:
         pass
      self.session.stream_forget(self)

   def write(self, data):
      "Send data; raise Closed_Error if the stream can no longer send."
      with self.session.cond:
         if (self.local_fin or self.reset_p or self.session.dead_p):
            raise Closed_Error("stream %d closed" % self.id)
      view = memoryview(data)
      for i in range(0, len(view), DATA_MAX):
         self.session.send(data_frame(self.id, bytes(view[i:i+DATA_MAX])))


class Session:
   """The server side of a SPDY/3.1 session over transport (recv, sendall,
      shutdown, close, like Socket_Transport). run() reads frames until the
      connection ends; call it in its own thread. For each stream the peer
      opens we send SYN_REPLY and then call on_stream(stream) in the
      reader thread; it must not block. It returns False to refuse the
      stream (we reset it). PINGs are answered; flow control is ignored,
      as Kubernetes' own peers ignore it.

      Locking: cond (a Condition) guards streams, every stream's state and
      queue, and the flags; wlock serialises writes to the transport and
      the header compressor. cond is never held while writing."""

   def __init__(self, transport, on_stream, idle_timeout=14400,
                initial=b"", name="spdy"):
      self.transport = transport
      self.on_stream = on_stream
      self.idle_timeout = idle_timeout
      self.name = name
      self.codec = Header_Codec()
      self.reader = Frame_Reader(self.codec, initial)
      self.cond = threading.Condition()
      self.wlock = threading.Lock()
      self.streams = dict()
      self.last_id = 0
      self.peer_goaway_p = False
      self.goaway_sent_p = False
      self.dead_p = False
      self.dead = threading.Event()
      self.active = time.monotonic()
      self.linger_end = None
      self.tick = min(idle_timeout, 5.0)

   def finish(self):
      """End the session gracefully: GOAWAY, stop writing, and let run()
         wait LINGER seconds for the peer to close."""
      self.goaway()
      with self.cond:
         if (self.linger_end is None):
            self.linger_end = time.monotonic() + LINGER
            self.tick = min(self.tick, 0.2)
      with self.wlock:
         self.transport.shutdown(socket.SHUT_WR)

   def frame_handle(self, f):
      if (f.type_ == 0):
         with self.cond:
            st = self.streams.get(f.stream_id)
         if (st is None):
            return
         if (f.data):
            if (st.data_cb is not None):
               st.data_cb(f.data)
            else:
               st.inq.put(f.data, lambda: self.dead_p)
         if (f.fin):
            st.inq.eof()
            self.stream_maybe_forget(st)
         return
      if (f.version != VERSION):
         raise Protocol_Error("SPDY version %d" % f.version)
      if (f.type_ == SYN_STREAM):
         self.syn_stream_handle(f)
      elif (f.type_ == RST_STREAM):
         with self.cond:
            st = self.streams.pop(f.stream_id, None)
            if (st is not None):
               st.reset_p = True
         if (st is not None):
            st.inq.eof()
      elif (f.type_ == PING):
         if (f.value & 1):   # the peer's (odd); ours would be even
            self.send(ping_frame(f.value))
      elif (f.type_ == GOAWAY):
         with self.cond:
            self.peer_goaway_p = True
            self.cond.notify_all()
      elif (f.type_ == HEADERS):
         with self.cond:
            st = self.streams.get(f.stream_id)
            if (st is not None):
               for (k, v) in f.headers.items():
                  st.headers.setdefault(k, []).extend(v)
         if (st is not None and f.fin):
            st.inq.eof()
      # SYN_REPLY (we open no streams), SETTINGS, WINDOW_UPDATE and unknown
      # control frames need nothing from us.

   def goaway(self):
      with self.cond:
         if (self.goaway_sent_p or self.dead_p):
            return
         self.goaway_sent_p = True
         last = self.last_id
      try:
         self.send(goaway_frame(last))
      except Closed_Error:
         pass

   def run(self):
      "Read and handle frames until the connection ends."
      try:
         while True:
            for f in self.reader.frames():
               self.frame_handle(f)
            data = self.transport.recv(self.tick)
            now = time.monotonic()
            if (data is None):
               with self.cond:
                  linger_end = self.linger_end
               if (linger_end is not None and now > linger_end):
                  break
               if (now - self.active > self.idle_timeout):
                  log.info("%s: idle for %ds, closing", self.name,
                           self.idle_timeout)
                  break
               continue
            if (not data):
               break
            self.active = now
            self.reader.feed(data)
      except Protocol_Error as x:
         log.warning("%s: protocol error: %s", self.name, x)
         try:
            self.send(goaway_frame(self.last_id, GOAWAY_PROTOCOL_ERROR))
         except Closed_Error:
            pass
      except Closed_Error:
         pass
      finally:
         self.teardown()

   def send(self, frame):
      "Write one encoded frame; raise Closed_Error if we cannot."
      with self.wlock:
         self.write_locked(frame)

   def stream_forget(self, st):
      with self.cond:
         self.streams.pop(st.id, None)
         self.cond.notify_all()

   def stream_maybe_forget(self, st):
      "Forget st once both sides are closed."
      with self.cond:
         if (st.local_fin and st.inq.eof_p):
            self.streams.pop(st.id, None)
            self.cond.notify_all()

   def syn_stream_handle(self, f):
      sid = f.stream_id
      with self.cond:
         ok = (sid % 2 == 1 and sid > self.last_id and sid not in self.streams)
         refuse = self.goaway_sent_p or self.dead_p
         if (ok):
            self.last_id = sid
      if (not ok):
         self.send(rst_frame(sid, PROTOCOL_ERROR))
         return
      if (refuse):
         self.send(rst_frame(sid, REFUSED_STREAM))
         return
      st = Stream(self, sid, f.headers, f.fin)
      if (f.flags & FLAG_UNIDIRECTIONAL):
         st.local_fin = True
      with self.cond:
         self.streams[sid] = st
      # Reply before handing the stream over, so that nothing can be
      # written on it before the reply (the peer drops such data).
      with self.wlock:
         self.write_locked(self.codec.syn_reply(sid, {}))
      if (self.on_stream(st) is False):
         st.reset(REFUSED_STREAM)

   def write_locked(self, frame):
      "Write frame; the caller holds wlock."
      if (self.dead_p):
         raise Closed_Error("session closed")
      try:
         self.transport.sendall(frame)
      except OSError as x:
         raise Closed_Error(str(x))
      self.active = time.monotonic()

   def teardown(self):
      with self.cond:
         self.dead_p = True
         streams = list(self.streams.values())
         self.streams.clear()
         self.cond.notify_all()
      for st in streams:
         st.inq.eof()
      with self.wlock:
         self.transport.close()
      self.dead.set()
