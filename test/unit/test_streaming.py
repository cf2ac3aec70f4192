# The streaming server: SPDY codec, tokens, HTTP errors, and the real
# crictl driving exec/attach/port-forward over SPDY and WebSocket.

import http.server
import json
import os
import pty
import re
import select
import socket
import struct
import subprocess
import termios
import threading
import time
import fcntl
import urllib.request
import zlib

import pytest

import cri.errors
import cri.metrics
import cri.stream.spdy as spdy
import cri.stream.server as streaming
import stream_fake

from cri_api.v1 import api_pb2 as pb


## Constants ##

CRICTL = "/var/cache/ch-cri-test/bin/crictl"
TIMEOUT = 15


## Fixtures ##

@pytest.fixture
def backend():
   b = stream_fake.Fake_Backend()
   yield b
   b.stop()


@pytest.fixture
def server(backend):
   s = streaming.Stream_Server(backend, idle_timeout=30)
   s.start()
   yield s
   s.stop()


@pytest.fixture
def crictl(root, server):
   "Return a function running crictl against a CRI server over server."
   if (not os.access(CRICTL, os.X_OK)):
      pytest.skip("no crictl at %s" % CRICTL)
   cri = stream_fake.Cri_Server(root, server)
   ep = "unix://" + cri.socket
   def run(*args, input_=b"", timeout=TIMEOUT):
      return subprocess.run([CRICTL, "--runtime-endpoint", ep,
                             "--image-endpoint", ep] + list(args),
                            input=input_, capture_output=True,
                            timeout=timeout)
   run.argv = [CRICTL, "--runtime-endpoint", ep, "--image-endpoint", ep]
   yield run
   cri.stop()


@pytest.fixture
def web():
   "An HTTP server on 127.0.0.1 answering every GET with its path."
   class Handler(http.server.BaseHTTPRequestHandler):
      def do_GET(self):
         body = ("path=%s" % self.path).encode()
         self.send_response(200)
         self.send_header("Content-Length", str(len(body)))
         self.end_headers()
         self.wfile.write(body)
      def log_message(self, *a):
         pass
   srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
   t = threading.Thread(target=srv.serve_forever, daemon=True)
   t.start()
   yield srv.server_address[1]
   srv.shutdown()
   srv.server_close()


## Helpers ##

def free_port():
   s = socket.socket()
   s.bind(("127.0.0.1", 0))
   port = s.getsockname()[1]
   s.close()
   return port


def http_get(port, path, timeout=5):
   end = time.monotonic() + timeout
   while True:
      try:
         with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path),
                                     timeout=5) as r:
            return r.read().decode()
      except OSError:
         if (time.monotonic() > end):
            raise
         time.sleep(0.1)


def raw_request(url, headers, method="POST"):
   "Send an HTTP request to url; return (socket, status, head bytes, rest)."
   (host, port) = url.split("/")[2].split(":")
   path = "/" + url.split("/", 3)[3]
   s = socket.create_connection((host, int(port)), timeout=10)
   req = "%s %s HTTP/1.1\r\nHost: %s:%s\r\n" % (method, path, host, port)
   req += "".join("%s: %s\r\n" % h for h in headers) + "\r\n"
   s.sendall(req.encode())
   buf = b""
   while (b"\r\n\r\n" not in buf):
      d = s.recv(4096)
      if (not d):
         break
      buf += d
   (head, _, rest) = buf.partition(b"\r\n\r\n")
   return (s, int(head.split()[1]), head, rest)


class Spdy_Client:
   "A minimal SPDY client for protocol tests."

   def __init__(self, url, proto="v4.channel.k8s.io"):
      (self.sock, self.status, self.head, rest) = raw_request(
         url, [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"),
               ("X-Stream-Protocol-Version", proto)])
      self.codec = spdy.Header_Codec()
      self.reader = spdy.Frame_Reader(self.codec, rest)
      self.next_id = 1

   def frame(self, timeout=5):
      "Return the next frame, or None at end of stream."
      end = time.monotonic() + timeout
      while True:
         for f in self.reader.frames():
            return f
         self.sock.settimeout(max(end - time.monotonic(), 0.01))
         d = self.sock.recv(65536)
         if (not d):
            return None
         self.reader.feed(d)

   def open(self, headers, fin=False):
      sid = self.next_id
      self.next_id += 2
      self.sock.sendall(self.codec.syn_stream(sid, headers, fin))
      return sid


def ws_key():
   return "dGhlIHNhbXBsZSBub25jZQ=="


## Tests: SPDY framing ##

def test_dictionary():
   # Length and Adler-32 of the SPDY/3 dictionary: the DICTID 0xe3c6a7c2
   # starts every SPDY/3 header block on the wire.
   assert spdy.dictionary_check() == (1423, 0xe3c6a7c2)
   assert spdy.DICTIONARY.startswith(b"\0\0\0\x07options\0\0\0\x04head")
   assert spdy.DICTIONARY.endswith(b"utf-,*,enq=0.")


def test_header_block_round_trip():
   a = spdy.Header_Codec()
   b = spdy.Header_Codec()
   for i in range(3):   # one zlib stream across blocks
      hs = { "streamtype": "stdout", "port": str(8000 + i),
             "x-multi": ["a", "b"] }
      block = a.compress(hs)
      if (i == 0):
         # zlib header (no FDICT check in the codec) then the DICTID
         assert block[0] & 0x0f == 8 and block[1] & 0x20
         assert block[2:6] == struct.pack(">I", 0xe3c6a7c2)
      assert b.decompress(block) == { "streamtype": ["stdout"],
                                      "port": [str(8000 + i)],
                                      "x-multi": ["a", "b"] }
   # Without the dictionary, inflating the first block fails.
   with pytest.raises(zlib.error):
      zlib.decompressobj().decompress(spdy.Header_Codec().compress({}))


def test_frame_round_trip():
   c = spdy.Header_Codec()
   wire = (c.syn_stream(5, { "streamtype": "error" }, fin=True)
           + spdy.data_frame(5, b"x" * 70000)
           + spdy.data_frame(5, b"", fin=True)
           + spdy.rst_frame(5, spdy.CANCEL) + spdy.ping_frame(7)
           + spdy.goaway_frame(5) + spdy.settings_frame([(7, 65536)])
           + spdy.window_update_frame(5, 1000)
           + c.syn_reply(5, { "a": "b" }))
   r = spdy.Frame_Reader(spdy.Header_Codec())
   frames = []
   for i in range(0, len(wire), 999):   # arbitrary split points
      r.feed(wire[i:i+999])
      frames.extend(r.frames())
   kinds = [(f.type_, f.stream_id, f.value) for f in frames]
   assert kinds == [(spdy.SYN_STREAM, 5, 0), (0, 5, 0), (0, 5, 0),
                    (spdy.RST_STREAM, 5, spdy.CANCEL), (spdy.PING, 0, 7),
                    (spdy.GOAWAY, 5, 0), (spdy.SETTINGS, 0, 0),
                    (spdy.WINDOW_UPDATE, 5, 1000), (spdy.SYN_REPLY, 5, 0)]
   assert frames[0].fin and frames[0].headers == { "streamtype": ["error"] }
   assert frames[1].data == b"x" * 70000 and not frames[1].fin
   assert frames[2].fin
   assert frames[6].headers == { 7: 65536 }
   assert frames[8].headers == { "a": ["b"] }


def test_session_ping_reset_data():
   (a, b) = socket.socketpair()
   got = []
   def on_stream(st):
      got.append(st)
      return st.header("streamtype") != "bogus"
   sess = spdy.Session(spdy.Socket_Transport(a), on_stream, idle_timeout=30)
   t = threading.Thread(target=sess.run, daemon=True)
   t.start()
   c = spdy.Header_Codec()
   r = spdy.Frame_Reader(spdy.Header_Codec())
   def frame():
      while True:
         for f in r.frames():
            return f
         r.feed(b.recv(65536))
   b.sendall(spdy.ping_frame(1))
   f = frame()
   assert (f.type_, f.value) == (spdy.PING, 1)
   b.sendall(c.syn_stream(1, { "streamtype": "stdin" }))
   f = frame()
   assert (f.type_, f.stream_id) == (spdy.SYN_REPLY, 1)
   b.sendall(spdy.data_frame(1, b"abc") + spdy.data_frame(1, b"", True))
   # The session may answer before its callback has recorded the stream.
   deadline = time.monotonic() + 5
   while (not got and time.monotonic() < deadline):
      time.sleep(0.01)
   assert got[0].read(5) == b"abc" and got[0].read(5) == b""
   got[0].write(b"out")
   f = frame()
   assert (f.type_, f.data) == (0, b"out")
   b.sendall(c.syn_stream(3, { "streamtype": "bogus" }))
   assert frame().type_ == spdy.SYN_REPLY
   f = frame()
   assert (f.type_, f.value) == (spdy.RST_STREAM, spdy.REFUSED_STREAM)
   b.sendall(c.syn_stream(3, {}))   # a reused id is a protocol error
   f = frame()
   assert (f.type_, f.stream_id, f.value) == (spdy.RST_STREAM, 3,
                                              spdy.PROTOCOL_ERROR)
   b.sendall(c.syn_stream(5, { "streamtype": "stdout" }))
   assert frame().type_ == spdy.SYN_REPLY
   b.sendall(spdy.rst_frame(5, spdy.CANCEL))
   assert got[-1].read(5) == b""
   b.close()
   t.join(5)
   assert sess.dead.is_set() and not t.is_alive()


## Tests: tokens and HTTP ##

def test_tokens_single_use_and_expiry():
   now = [100.0]
   tok = streaming.Tokens(60, clock=lambda: now[0])
   req = pb.ExecRequest(container_id="c", cmd=["true"], stdout=True)
   t1 = tok.insert("exec", req)
   t2 = tok.insert("exec", req)
   assert len(t1) >= 32 and t1 != t2
   assert tok.consume("attach", t1) is None      # wrong kind, and used up
   assert tok.consume("exec", t1) is None
   assert tok.consume("exec", t2).cmd == ["true"]
   assert tok.consume("exec", t2) is None
   t3 = tok.insert("exec", req)
   now[0] += 61
   assert tok.consume("exec", t3) is None


def test_request_validation(server):
   with pytest.raises(cri.errors.Invalid_Argument):
      server.exec_url(pb.ExecRequest(container_id="c", cmd=["x"]))
   with pytest.raises(cri.errors.Invalid_Argument):
      server.exec_url(pb.ExecRequest(container_id="c", cmd=["x"], tty=True,
                                     stdout=True, stderr=True))
   with pytest.raises(cri.errors.Invalid_Argument):
      server.portforward_url(pb.PortForwardRequest())
   url = server.attach_url(pb.AttachRequest(container_id="c", stdout=True))
   assert url.startswith(server.base_url + "/attach/")


def test_remote_address_refused(backend):
   with pytest.raises(ValueError, match="10.9.8.7"):
      streaming.Stream_Server(backend, address="10.9.8.7").start()


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "192.0.2.1",
                                     "host.example", "::ffff:10.0.0.1"])
def test_non_loopback_refused_unless_allowed(backend, address):
   s = streaming.Stream_Server(backend, address=address)
   with pytest.raises(ValueError, match="allow_remote"):
      s.start()
   assert s.listener is None


def test_non_loopback_allowed_when_configured(backend):
   s = streaming.Stream_Server(backend, address="0.0.0.0", allow_remote=True)
   s.start()
   try:
      assert s.port > 0 and s.base_url.startswith("http://0.0.0.0:")
   finally:
      s.stop()


def test_tokens_unguessable():
   tok = streaming.Tokens(60)
   req = pb.ExecRequest(container_id="c", cmd=["true"], stdout=True)
   ts = [tok.insert("exec", req) for _ in range(streaming.TOKENS_MAX)]
   assert len(set(ts)) == len(ts)
   # at least 192 random bits, URL-safe, no structure shared between them
   assert all(re.fullmatch(r"[A-Za-z0-9_-]{32,}", t) for t in ts)
   assert len(os.path.commonprefix(ts)) == 0
   assert tok.consume("exec", ts[0][:-1]) is None    # no prefix matching
   assert tok.consume("exec", ts[0]) is not None


def test_http_errors(server):
   req = pb.ExecRequest(container_id=stream_fake.CTR, cmd=["true"],
                        stdout=True)
   up = [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"),
         ("X-Stream-Protocol-Version", "v4.channel.k8s.io")]
   (s, code, _, _) = raw_request(server.base_url + "/exec/nosuchtoken", up)
   s.close()
   assert code == 404
   url = server.exec_url(req)
   (s, code, _, _) = raw_request(url, [])   # no upgrade
   s.close()
   assert code == 400
   (s, code, _, _) = raw_request(url, up)   # the token is used up
   s.close()
   assert code == 404
   (s, code, head, _) = raw_request(
      server.exec_url(req), [("Connection", "Upgrade"),
                             ("Upgrade", "SPDY/3.1"),
                             ("X-Stream-Protocol-Version", "v9.example")])
   s.close()
   assert code == 403 and b"X-Accepted-Stream-Protocol-Versions" in head
   server.tokens.ttl = 0.2
   url = server.exec_url(req)
   time.sleep(0.3)
   (s, code, _, _) = raw_request(url, up)
   s.close()
   assert code == 404


## Tests: streams end cleanly ##

def exec_raw(server, cmd, stdin=False):
   "Start an exec over raw SPDY; return the client with its streams open."
   c = Spdy_Client(server.exec_url(pb.ExecRequest(
      container_id=stream_fake.CTR, cmd=cmd, stdin=stdin, stdout=True,
      stderr=True)))
   assert c.status == 101 and b"v4.channel.k8s.io" in c.head
   ids = { t: c.open({ "streamtype": t })
           for t in ["error", "stdout", "stderr"] + (["stdin"] if stdin
                                                      else []) }
   return (c, ids)


def test_client_disconnect_kills_exec(server, backend):
   (c, _) = exec_raw(server, ["sleep", "100"], stdin=True)
   end = time.monotonic() + 5
   while (not backend.procs and time.monotonic() < end):
      time.sleep(0.05)
   proc = backend.procs[0]
   assert proc.p.poll() is None
   c.sock.close()
   end = time.monotonic() + 5
   while (proc.p.poll() is None and time.monotonic() < end):
      time.sleep(0.05)
   assert proc.p.returncode == -9


def test_sessions_gauge(server, backend):
   def open_ct():
      return cri.metrics.REGISTRY.get_sample_value(
         "ch_cri_streaming_sessions", { "kind": "exec" }) or 0
   def wait_for(pred):
      end = time.monotonic() + 5
      while (not pred() and time.monotonic() < end):
         time.sleep(0.05)
      assert pred()
   n = open_ct()
   (c, _) = exec_raw(server, ["sleep", "100"], stdin=True)
   wait_for(lambda: backend.procs)
   assert open_ct() == n + 1
   c.sock.close()
   wait_for(lambda: open_ct() == n)


def test_idle_timeout(backend):
   s = streaming.Stream_Server(backend, idle_timeout=0.5)
   s.start()
   try:
      (c, _) = exec_raw(s, ["sleep", "100"])
      t0 = time.monotonic()
      while (c.frame(10) is not None):
         pass   # SYN_REPLYs, then the server closes
      assert time.monotonic() - t0 < 8
      proc = backend.procs[0]
      proc.p.wait(5)
      assert proc.p.returncode == -9
   finally:
      s.stop()


def test_exec_status_frames(server):
   (c, ids) = exec_raw(server, ["sh", "-c", "echo out; exit 4"])
   data = dict()
   fins = set()
   goaway = False
   while True:
      f = c.frame()
      if (f is None):
         break
      if (f.type_ == 0):
         data[f.stream_id] = data.get(f.stream_id, b"") + f.data
         if (f.fin):
            fins.add(f.stream_id)
      goaway |= (f.type_ == spdy.GOAWAY)
   assert data[ids["stdout"]] == b"out\n"
   st = json.loads(data[ids["error"]])
   assert st["status"] == "Failure" and st["reason"] == "NonZeroExitCode"
   assert st["details"]["causes"] == [{ "reason": "ExitCode",
                                        "message": "4" }]
   assert st["message"] == ("command terminated with non-zero exit code: "
                            "error executing command [sh -c echo out; "
                            "exit 4], exit code 4")
   assert fins >= set(ids.values()) - set() and goaway


## Tests: crictl ##

@pytest.mark.parametrize("transport", ["spdy", "websocket"])
def test_crictl_exec(crictl, transport):
   r = crictl("exec", "-r", transport, stream_fake.CTR, "echo", "hi")
   assert (r.returncode, r.stdout) == (0, b"hi\n")
   data = os.urandom(300000).hex().encode()
   r = crictl("exec", "-r", transport, "-i", stream_fake.CTR, "cat",
              input_=data)
   assert r.returncode == 0 and r.stdout == data
   r = crictl("exec", "-r", transport, stream_fake.CTR, "sh", "-c",
              "echo oops >&2; exit 3")
   # crictl 1.36 exits 1 on any exec error; the code reaches it intact.
   assert r.returncode != 0
   assert b"oops" in r.stderr and b"exit code 3" in r.stderr


def test_crictl_stdin_not_read(crictl):
   # The command never reads stdin and exits while crictl still sends.
   r = crictl("exec", "-i", stream_fake.CTR, "sh", "-c", "sleep 0.3; "
              "echo done", input_=b"x" * (8 << 20))
   assert r.returncode == 0 and r.stdout == b"done\n"


def test_crictl_backend_error(crictl, backend):
   backend.fail = "container is on fire"
   r = crictl("exec", stream_fake.CTR, "true")
   assert r.returncode != 0 and b"container is on fire" in r.stderr


@pytest.mark.parametrize("transport", ["spdy", "websocket"])
def test_crictl_exec_tty(crictl, transport):
   (m, s) = pty.openpty()
   fcntl.ioctl(s, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
   p = subprocess.Popen(crictl.argv + ["exec", "-r", transport, "-it",
                                       stream_fake.CTR, "sh"],
                        stdin=s, stdout=s, stderr=s, start_new_session=True)
   os.close(s)
   out = b""
   def until(pat, timeout=8):
      nonlocal out
      end = time.monotonic() + timeout
      while (pat not in out and time.monotonic() < end):
         (r, _, _) = select.select([m], [], [], 0.1)
         if (r):
            try:
               out += os.read(m, 4096)
            except OSError:
               return
   try:
      until(b"# ")
      os.write(m, b"stty size; echo mark$((6*7))\r")
      until(b"mark42")
      os.write(m, b"exit 5\r")
      until(b"exit code 5")
      assert p.wait(10) != 0
   finally:
      if (p.poll() is None):
         p.kill()
      os.close(m)
   assert b"33 101" in out and b"mark42" in out
   assert b"exit code 5" in out


@pytest.mark.parametrize("transport", ["spdy", "websocket"])
def test_crictl_attach(crictl, transport):
   r = crictl("attach", "-r", transport, "-i", stream_fake.CTR,
              input_=b"hello\nquit\n")
   assert r.returncode == 0, r.stderr
   assert r.stdout == b"got hello\ngot quit\n"


@pytest.mark.parametrize("transport", ["spdy", "websocket"])
def test_crictl_port_forward(crictl, web, transport):
   local = free_port()
   p = subprocess.Popen(crictl.argv + ["port-forward", "-r", transport,
                                       stream_fake.POD,
                                       "%d:%d" % (local, web)],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
   try:
      for i in range(3):
         assert http_get(local, "/x%d" % i) == "path=/x%d" % i
   finally:
      p.terminate()
      p.wait(5)


def test_crictl_port_forward_refused(crictl):
   local = free_port()
   dead = free_port()
   p = subprocess.Popen(crictl.argv + ["port-forward", stream_fake.POD,
                                       "%d:%d" % (local, dead)],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
   try:
      with pytest.raises(OSError):
         http_get(local, "/", timeout=2)
   finally:
      p.terminate()
      (_, err_) = p.communicate(timeout=5)
   assert b"error forwarding port %d" % dead in err_


def stream_threads():
   return [t.name for t in threading.enumerate()
           if t.name.startswith("stream-") and t.name != "stream-accept"]


def test_crictl_concurrent(crictl, web):
   fd_ct = len(os.listdir("/proc/self/fd"))
   ports = [free_port() for i in range(5)]
   fwd = [subprocess.Popen(crictl.argv + ["port-forward", stream_fake.POD,
                                          "%d:%d" % (p, web)],
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL) for p in ports]
   execs = [subprocess.Popen(crictl.argv + ["exec", stream_fake.CTR, "sh",
                                            "-c", "sleep 1; echo n%d" % i],
                             stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)
            for i in range(20)]
   try:
      got = [http_get(p, "/p%d" % i) for (i, p) in enumerate(ports)]
      outs = [e.communicate(timeout=TIMEOUT)[0] for e in execs]
   finally:
      for f in fwd:
         f.terminate()
         f.wait(5)
   assert got == ["path=/p%d" % i for i in range(5)]
   assert outs == [b"n%d\n" % i for i in range(20)]
   # Every connection's threads end once the clients are gone.
   end = time.monotonic() + 8
   while (stream_threads() and time.monotonic() < end):
      time.sleep(0.1)
   assert stream_threads() == []
   assert len(os.listdir("/proc/self/fd")) <= fd_ct + 2   # + grpc's
