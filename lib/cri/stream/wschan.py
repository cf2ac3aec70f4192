# WebSocket transports of Kubernetes streaming: the channel protocols
# (channel.k8s.io, v4 and v5, base64 variants) and SPDY tunnelled in binary
# messages (SPDY/3.1+portforward.k8s.io), over wsproto.

import base64
import socket
import threading
import time

import wsproto
import wsproto.events as wse

import misc
import cri.stream.spdy as spdy


## Constants ##

# Channel numbers of exec/attach.
STDIN = 0
STDOUT = 1
STDERR = 2
ERROR = 3
RESIZE = 4
# v5: a message on this channel whose payload is a channel number closes
# that channel (half-close).
CLOSE = 255


## Globals ##

log = misc.log


## Classes ##

class Ws_Conn:
   """A server-side WebSocket over transport (a spdy.Socket_Transport).
      raw is the HTTP upgrade request as received; request is wsproto's
      parsed Request event (subprotocols, target). accept() completes the
      handshake. One thread reads (recv); any thread may send. lock (an
      RLock) guards the wsproto state and keeps messages whole on the
      wire."""

   def __init__(self, transport, raw):
      self.transport = transport
      self.ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
      self.lock = threading.RLock()
      self.pending = []
      self.partial = []
      self.closed_p = False
      self.ws.receive_data(raw)
      self.request = None
      for ev in self.ws.events():
         if (isinstance(ev, wse.Request)):
            self.request = ev
         else:
            self.pending.append(ev)
      if (self.request is None):
         raise ValueError("not a WebSocket upgrade request")

   def accept(self, subprotocol):
      with self.lock:
         self.transport.sendall(self.ws.send(wse.AcceptConnection(
            subprotocol=subprotocol or None)))

   def close(self, code=1000):
      "Send a close frame (once); the peer answers and recv() sees it."
      with self.lock:
         if (self.closed_p):
            return
         self.closed_p = True
         try:
            self.transport.sendall(self.ws.send(wse.CloseConnection(
               code=code)))
         except (spdy.Closed_Error, wsproto.utilities.LocalProtocolError):
            pass

   def recv(self, timeout):
      """Return the next whole message as bytes (binary) or str (text),
         "" or b"" never; None if nothing arrived within timeout; False
         when the connection has ended."""
      while True:
         while (self.pending):
            ev = self.pending.pop(0)
            res = self.event_handle(ev)
            if (res is not None):
               return res
         data = self.transport.recv(timeout)
         if (data is None):
            return None
         with self.lock:
            try:
               self.ws.receive_data(data or None)
               self.pending.extend(self.ws.events())
            except wsproto.utilities.RemoteProtocolError as x:
               log.warning("websocket: protocol error: %s", x)
               return False
         if (not data and not self.pending):
            return False

   def event_handle(self, ev):
      if (isinstance(ev, wse.Message)):
         self.partial.append(ev.data)
         if (not ev.message_finished):
            return None
         whole = (b"" if isinstance(ev.data, bytes) else "").join(self.partial)
         self.partial = []
         return whole
      if (isinstance(ev, wse.Ping)):
         self.send_event(ev.response())
         return None
      if (isinstance(ev, wse.CloseConnection)):
         with self.lock:
            if (not self.closed_p):
               self.closed_p = True
               try:
                  self.transport.sendall(self.ws.send(ev.response()))
               except (spdy.Closed_Error,
                       wsproto.utilities.LocalProtocolError):
                  pass
         return False
      return None   # pongs and the like

   def send_bytes(self, data):
      self.send_event(wse.BytesMessage(data=data))

   def send_event(self, ev):
      with self.lock:
         if (self.closed_p):
            raise spdy.Closed_Error("websocket closed")
         try:
            self.transport.sendall(self.ws.send(ev))
         except wsproto.utilities.LocalProtocolError as x:
            raise spdy.Closed_Error(str(x))

   def send_text(self, text):
      self.send_event(wse.TextMessage(data=text))


class Ws_Tunnel:
   """The transport interface of spdy.Socket_Transport over binary
      WebSocket messages, for SPDY tunnelled in a WebSocket."""

   def __init__(self, conn):
      self.conn = conn

   def close(self):
      self.conn.transport.close()

   def recv(self, timeout):
      while True:
         m = self.conn.recv(timeout)
         if (m is None):
            return None
         if (m is False):
            return b""
         if (isinstance(m, str)):
            log.warning("websocket tunnel: text message ignored")
            continue
         if (m):
            return m

   def sendall(self, data):
      self.conn.send_bytes(bytes(data))

   def shutdown(self, how=socket.SHUT_WR):
      self.conn.close()


class Ws_Channels:
   """The channel protocol over a Ws_Conn: each message is one channel
      byte and data (binary), or a digit and base64 data (text, b64_p).
      reads maps channel numbers we read to spdy.Chunk_Queues; resize_cb
      receives resize-channel data; v5 close signals end a channel's
      queue. run() is the reader loop; dead is set when it ends."""

   def __init__(self, conn, b64_p, reads, idle_timeout, v5_p=False):
      self.conn = conn
      self.b64_p = b64_p
      self.v5_p = v5_p
      self.reads = reads
      self.idle_timeout = idle_timeout
      self.resize_cb = None
      self.dead = threading.Event()

   def message_handle(self, m):
      if (isinstance(m, str)):
         if (not m):
            return
         try:
            (ch, data) = (int(m[0]), base64.b64decode(m[1:]))
         except ValueError:
            log.warning("websocket: bad base64 message ignored")
            return
      else:
         if (not m):
            return
         (ch, data) = (m[0], m[1:])
      if (ch == CLOSE and self.v5_p):
         for c in data:
            q = self.reads.get(c)
            if (q is not None):
               q.eof()
         return
      if (ch == RESIZE and self.resize_cb is not None):
         self.resize_cb(data)
         return
      q = self.reads.get(ch)
      if (q is not None and data):
         q.put(data, lambda: self.dead.is_set())

   def run(self):
      last = time.monotonic()
      try:
         while True:
            m = self.conn.recv(min(self.idle_timeout, 5))
            if (m is None):
               if (time.monotonic() - last > self.idle_timeout):
                  log.info("websocket: idle for %ds, closing",
                           self.idle_timeout)
                  break
               continue
            if (m is False):
               break
            last = time.monotonic()
            self.message_handle(m)
      finally:
         self.dead.set()
         for q in self.reads.values():
            q.eof()

   def write(self, ch, data):
      "Send data on channel ch; raise spdy.Closed_Error if we cannot."
      if (self.b64_p):
         self.conn.send_text(chr(ord("0") + ch)
                             + base64.b64encode(data).decode("ascii"))
      else:
         self.conn.send_bytes(bytes([ch]) + bytes(data))
