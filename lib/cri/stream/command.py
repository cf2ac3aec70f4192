# An exec or attach session's I/O, once Stream_Server has upgraded its
# connection: the client's channels (SPDY streams or WebSocket channels),
# terminal resizes, the copying between them and the process, and the
# Kubernetes Status that ends it.

import json
import os
import select
import threading
import time

import misc
import cri.stream.spdy as spdy
import cri.stream.wschan as wschan


## Constants ##

DRAIN_IDLE = 2.0         # seconds output may pause after exit before we stop
WAIT_AFTER_CLOSE = 5     # seconds Proc.wait() may take after Proc.close()


## Globals ##

log = misc.log


## Functions ##

def exit_code_byte(code):
   """Return code as the 0-255 value Kubernetes clients accept; a signal
      death (negative code) becomes 128 + signal, as shells report it.

      >>> [exit_code_byte(c) for c in (0, 3, -9, 300)]
      [0, 3, 137, 255]"""
   if (code < 0):
      code = 128 - code
   return min(code, 255)


def status_json(status, message=None, reason=None, causes=None, code=None):
   """Return a metav1.Status as the JSON Kubernetes writes (fields in
      Go's order, empty ones omitted).

      >>> status_json("Success")
      b'{"metadata":{},"status":"Success"}'"""
   obj = { "metadata": {}, "status": status }
   if (message):
      obj["message"] = message
   if (reason):
      obj["reason"] = reason
   if (causes):
      obj["details"] = { "causes": causes }
   if (code):
      obj["code"] = code
   return json.dumps(obj, separators=(",", ":")).encode()


def status_exit(cmd, code):
   """Return (JSON, plain text) of the status of a command that exited
      with code, as the kubelet writes it.

      >>> status_exit(["sh", "-c", "exit 3"], 3)[1].decode()[-45:]
      'executing command [sh -c exit 3], exit code 3'"""
   if (code == 0):
      return (status_json("Success"), b"")
   code = exit_code_byte(code)
   msg = ("command terminated with non-zero exit code: error executing "
          "command [%s], exit code %d" % (" ".join(cmd), code))
   return (status_json("Failure", msg, "NonZeroExitCode",
                       [{ "reason": "ExitCode", "message": str(code) }]),
           msg.encode())


def status_internal(msg):
   "Return (JSON, plain text) of an internal error status."
   full = "Internal error occurred: %s" % msg
   return (status_json("Failure", full, "InternalError",
                       [{ "message": msg }], 500), full.encode())


## Classes ##

class Resize_Parser:
   """Terminal sizes from a resize stream: JSON objects {"Width": w,
      "Height": h}, back to back. The last size is kept until a target
      is attached. lock guards buf, fn and last."""

   def __init__(self):
      self.lock = threading.Lock()
      self.buf = ""
      self.fn = None
      self.last = None
      self.decoder = json.JSONDecoder()

   def attach(self, fn):
      with self.lock:
         self.fn = fn
         last = self.last
      if (last is not None):
         self.apply(fn, last)

   def apply(self, fn, size):
      try:
         fn(*size)
      except Exception as x:
         log.debug("streaming: resize %s failed: %s", size, x)

   def feed(self, data):
      sizes = []
      with self.lock:
         self.buf += data.decode("utf-8", "replace")
         while True:
            self.buf = self.buf.lstrip()
            try:
               (obj, end) = self.decoder.raw_decode(self.buf)
            except ValueError:
               if (len(self.buf) > 4096):
                  self.buf = ""
               break
            self.buf = self.buf[end:]
            if (isinstance(obj, dict)):
               try:
                  self.last = (int(obj.get("Width", 0)),
                               int(obj.get("Height", 0)))
               except (TypeError, ValueError):
                  continue
               sizes.append(self.last)
         fn = self.fn
      if (fn is not None):
         for s in sizes:
            self.apply(fn, s)


class Spdy_Command_Chans:
   """Exec/attach streams of a SPDY session, by stream type. cond is the
      session's; it guards streams."""

   def __init__(self):
      self.session = None
      self.streams = dict()
      self.resize = Resize_Parser()

   @property
   def dead(self):
      return self.session.dead

   def close_ch(self, name):
      st = self.streams.get(name)
      if (st is not None):
         st.close()

   def finish(self):
      self.session.finish()

   def on_stream(self, st):
      type_ = st.header("streamtype")
      with self.session.cond:
         if (type_ not in ("error", "stdin", "stdout", "stderr", "resize")
             or type_ in self.streams):
            log.warning("streaming: unexpected stream type %r", type_)
            return True   # the kubelet replies and ignores it too
         if (type_ == "resize"):
            st.data_cb = self.resize.feed
         self.streams[type_] = st
         self.session.cond.notify_all()
      return True

   def read_stdin(self, timeout):
      return self.streams["stdin"].read(timeout)

   def stdin_discard(self):
      st = self.streams.get("stdin")
      if (st is not None):
         st.discard()

   def wait_streams(self, expected, timeout):
      end = time.monotonic() + timeout
      with self.session.cond:
         while (not expected <= set(self.streams)):
            left = end - time.monotonic()
            if (left <= 0 or self.session.dead_p):
               return False
            self.session.cond.wait(left)
      return True

   def write(self, name, data):
      st = self.streams.get(name)
      if (st is not None):
         st.write(data)


class Ws_Command_Chans:
   "Exec/attach channels of a WebSocket (see wschan.Ws_Channels)."

   CHANNELS = { "stdout": wschan.STDOUT, "stderr": wschan.STDERR,
                "error": wschan.ERROR }

   def __init__(self, conn, b64_p, v5_p, idle_timeout):
      self.stdin = spdy.Chunk_Queue()
      self.resize = Resize_Parser()
      self.chans = wschan.Ws_Channels(conn, b64_p, { wschan.STDIN:
                                                     self.stdin },
                                      idle_timeout, v5_p)
      self.chans.resize_cb = self.resize.feed
      self.conn = conn

   @property
   def dead(self):
      return self.chans.dead

   def close_ch(self, name):
      pass   # the channel protocol has no server-side half-close

   def finish(self):
      self.conn.close()

   def read_stdin(self, timeout):
      return self.stdin.get(timeout)

   def stdin_discard(self):
      self.stdin.discard()

   def write(self, name, data):
      self.chans.write(self.CHANNELS[name], data)


class Command_Run:
   """Copy between a backend Proc and a client's channels (chans, one of
      the *_Command_Chans) until the process ends or the client goes.
      run() returns the exit code, or None if the client went first.
      The fds are ours to close; proc.close() is called once."""

   def __init__(self, chans, proc, stdin_p, stdout_p, stderr_p):
      self.chans = chans
      self.proc = proc
      self.want = { "stdin": stdin_p, "stdout": stdout_p,
                    "stderr": stderr_p }
      self.stop = threading.Event()
      self.exited = threading.Event()
      self.code = None
      self.progress = time.monotonic()

   def fds(self):
      "Return (stdin, stdout, stderr) fds, distinct, unwanted ones closed."
      fin = self.proc.stdin
      fout = self.proc.stdout
      ferr = self.proc.stderr
      if (fin is not None and fin in (fout, ferr)):
         fin = os.dup(fin)   # a pty: one fd for both ways
      if (ferr is not None and ferr == fout):
         ferr = None
      if (fin is not None and not self.want["stdin"]):
         os.close(fin)   # the process sees EOF at once
         fin = None
      return (fin, fout, ferr)

   def pump_in(self, fd):
      try:
         os.set_blocking(fd, False)
         while (not self.stop.is_set()):
            data = self.chans.read_stdin(0.5)
            if (data is None):
               continue
            if (not data):
               break
            view = memoryview(data)
            while (view and not self.stop.is_set()):
               try:
                  view = view[os.write(fd, view):]
               except BlockingIOError:
                  select.select([], [fd], [], 0.5)
      except OSError:
         pass   # EPIPE: the process has gone or closed its stdin
      finally:
         self.chans.stdin_discard()
         os.close(fd)

   def pump_out(self, fd, name):
      try:
         while (not self.stop.is_set()):
            (r, _, _) = select.select([fd], [], [], 0.5)
            if (not r):
               continue
            try:
               data = os.read(fd, 65536)
            except BlockingIOError:
               continue
            except OSError:
               break   # EIO: a pty whose other side is closed
            if (not data):
               break
            self.progress = time.monotonic()
            if (self.want[name]):
               self.chans.write(name, data)
      except spdy.Closed_Error:
         pass
      finally:
         os.close(fd)
         self.chans.close_ch(name)

   def run(self):
      self.chans.resize.attach(self.proc.resize)
      (fin, fout, ferr) = self.fds()
      outs = []
      for (fd, name) in ((fout, "stdout"), (ferr, "stderr")):
         if (fd is not None):
            outs.append(threading.Thread(target=self.pump_out,
                                         args=(fd, name), daemon=True,
                                         name="stream-%s" % name))
         elif (self.want[name]):
            self.chans.close_ch(name)
      pumps = list(outs)
      if (fin is not None):
         pumps.append(threading.Thread(target=self.pump_in, args=(fin,),
                                       daemon=True, name="stream-stdin"))
      for t in pumps:
         t.start()
      waiter = threading.Thread(target=self.wait, daemon=True,
                                name="stream-wait")
      waiter.start()
      closed_p = False
      try:
         while (not self.exited.is_set() and not self.chans.dead.is_set()):
            self.exited.wait(0.2)
         if (not self.exited.is_set()):
            closed_p = True
            self.stop.set()
            self.proc.close()
            waiter.join(WAIT_AFTER_CLOSE)
            if (waiter.is_alive()):
               log.warning("streaming: Proc.wait() still blocked after "
                           "close(); abandoning it")
         else:
            # Let output written just before the exit drain, but do not
            # wait for a background child that keeps the pipe open.
            while (any(t.is_alive() for t in outs)
                   and time.monotonic() - self.progress < DRAIN_IDLE
                   and not self.chans.dead.is_set()):
               time.sleep(0.02)
         self.stop.set()
         for t in pumps:
            t.join()
      finally:
         self.stop.set()
         if (not closed_p):
            self.proc.close()
      return None if closed_p else self.code

   def wait(self):
      try:
         self.code = self.proc.wait()
      except Exception as x:
         log.warning("streaming: Proc.wait() failed: %s", x)
         self.code = -1
      self.exited.set()
