# Port forwarding for the streaming server: SPDY (portforward.k8s.io, also
# tunnelled in WebSocket) and the WebSocket channel protocol.

import select
import socket
import threading
import time
import urllib.parse

import misc
import cri.stream.spdy as spdy
import cri.stream.wschan as wschan

from cri.errors import Stream_Error


## Globals ##

log = misc.log


## Functions ##

def socket_copy(sock, read, write, write_close, dead):
   """Copy between sock and a client stream: read(timeout) gives client
      bytes (b"" at end), write(bytes) sends to the client, write_close()
      ends that direction. Return when the socket has reached its end
      (waiting at most 1 s more for the client's side) or dead()."""
   up_done = threading.Event()

   def up():
      try:
         while (not dead()):
            data = read(0.5)
            if (data is None):
               if (down_done.is_set()):
                  break
               continue
            if (not data):
               sock.shutdown(socket.SHUT_WR)
               break
            sock.sendall(data)
      except OSError:
         pass
      finally:
         up_done.set()

   down_done = threading.Event()
   t = threading.Thread(target=up, daemon=True, name="stream-pf-up")
   t.start()
   try:
      while (not dead()):
         (r, _, _) = select.select([sock], [], [], 0.5)
         if (not r):
            continue
         data = sock.recv(65536)
         if (not data):
            break
         write(data)
   except (OSError, spdy.Closed_Error):
      pass
   finally:
      down_done.set()
      try:
         write_close()
      except spdy.Closed_Error:
         pass
   up_done.wait(1)
   sock.close()
   t.join(1)


def ws_port_forward(server, ws, cri_req, b64_p, query):
   "Port-forward over the channel protocol: data 2n, error 2n+1."
   ports = []
   for v in urllib.parse.parse_qs(query).get("port", []):
      ports.extend(int(p) for p in v.split(",") if p.isdigit())
   ports = ports or list(cri_req.port)
   queues = { 2*i: spdy.Chunk_Queue() for i in range(len(ports)) }
   chans = wschan.Ws_Channels(ws, b64_p, queues, server.idle_timeout)
   reader = threading.Thread(target=chans.run, daemon=True,
                             name="stream-ws")
   reader.start()

   def one(i, port):
      try:
         sock = server.backend.port_forward(cri_req.pod_sandbox_id, port)
      except Stream_Error as x:
         try:
            chans.write(2*i + 1, ("error forwarding port %d to pod %s, "
                                  "uid : %s" % (port,
                                  cri_req.pod_sandbox_id, x)).encode())
         except spdy.Closed_Error:
            pass
         return
      try:
         socket_copy(sock, queues[2*i].get,
                     lambda d: chans.write(2*i, d), lambda: None,
                     chans.dead.is_set)
      finally:
         sock.close()
         queues[2*i].discard()

   try:
      threads = []
      for (i, port) in enumerate(ports):
         prefix = port.to_bytes(2, "little")
         chans.write(2*i, prefix)
         chans.write(2*i + 1, prefix)
         t = threading.Thread(target=one, args=(i, port), daemon=True,
                              name="stream-pf")
         t.start()
         threads.append(t)
      for t in threads:
         t.join()
   except spdy.Closed_Error:
      pass
   finally:
      ws.close()
      reader.join(spdy.LINGER)


## Classes ##

class Port_Pair:
   """The data and error streams of one forwarded connection."""

   def __init__(self, rid):
      self.rid = rid
      self.created = time.monotonic()
      self.data = None
      self.error = None

   def error_print(self, msg):
      if (self.error is not None):
         try:
            self.error.write(msg.encode())
         except spdy.Closed_Error:
            pass


class Spdy_Port_Forward:
   """Port-forward over a SPDY session: pairs of streams (data, error)
      per request id, each pair a connection to the pod's port. lock is
      the session's cond; it guards pairs."""

   def __init__(self, server, pod_id):
      self.server = server
      self.pod_id = pod_id
      self.session = None
      self.pairs = dict()
      self.threads = []

   def on_stream(self, st):
      port = st.header("port", "")
      type_ = st.header("streamtype", "")
      if (not port.isdigit() or not 0 < int(port) < 65536
          or type_ not in ("data", "error")):
         log.warning("streaming: port-forward stream with port %r, type "
                     "%r refused", port, type_)
         return False
      rid = st.header("requestid")
      if (not rid):   # clients older than request ids: pair by stream id
         rid = str(st.id if type_ == "error" else st.id - 2)
      with self.session.cond:
         pair = self.pairs.setdefault(rid, Port_Pair(rid))
         if (getattr(pair, type_) is not None):
            dup = True
         else:
            dup = False
            setattr(pair, type_, st)
         complete = (not dup and pair.data is not None
                     and pair.error is not None)
         if (complete):
            del self.pairs[rid]
      if (dup):
         pair.error_print("error processing stream for request %s: %s "
                          "stream already assigned" % (rid, type_))
         return False
      if (complete):
         t = threading.Thread(target=self.pair_run, args=(pair, int(port)),
                              daemon=True, name="stream-pf")
         t.start()
         self.threads.append(t)
      return True

   def pair_run(self, pair, port):
      try:
         sock = self.server.backend.port_forward(self.pod_id, port)
      except Stream_Error as x:
         pair.error_print("error forwarding port %d to pod %s, uid : %s"
                          % (port, self.pod_id, x))
         pair.data.close()
         pair.error.close()
         return
      try:
         socket_copy(sock, pair.data.read, pair.data.write, pair.data.close,
                     lambda: self.session.dead_p)
      finally:
         sock.close()
         pair.data.discard()
         pair.data.close()
         pair.error.close()

   def run(self):
      "Expire incomplete pairs until the session ends."
      while (not self.session.dead.wait(1)):
         now = time.monotonic()
         with self.session.cond:
            old = [p for p in self.pairs.values()
                   if now - p.created > self.server.creation_timeout]
            for p in old:
               del self.pairs[p.rid]
         for p in old:
            p.error_print("timed out waiting for streams")
            for st in (p.data, p.error):
               if (st is not None):
                  st.reset()
      for t in self.threads:
         t.join(5)
