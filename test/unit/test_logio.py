# Unit tests of the keeper's CRI log writer (lib/cri/keeper/logio.py).

import re

import cri.keeper.logio as logio


## Helpers ##

LINE_RE = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z "
                     rb"(stdout|stderr) ([PF]) (.*)$")


def written(tmp_path, feeds):
   """Feed (stream, data, eof) to a new Log (a new file); return [(stream,
      tag, text)]."""
   path = str(tmp_path / ("c%d.log" % len(list(tmp_path.iterdir()))))
   log = logio.Log(path)
   log.open()
   for (stream, data, eof) in feeds:
      log.feed(stream, data, eof)
   log.close()
   out = []
   for line in open(path, "rb").read().split(b"\n")[:-1]:
      m = LINE_RE.match(line)
      assert m, line
      out.append((m.group(1).decode(), m.group(2).decode(), m.group(3)))
   return out


## Tests ##

def test_full_lines_and_pieces(tmp_path):
   assert written(tmp_path, [("stdout", b"a\nb", False),
                             ("stdout", b"c\r\n", False),
                             ("stderr", b"e\n", False)]) \
      == [("stdout", "F", b"a"), ("stdout", "F", b"bc"),
          ("stderr", "F", b"e")]


def test_stream_ending_inside_a_line_is_partial(tmp_path):
   # The kubelet drops the newline of a P line only: "echo -n DONE" must
   # read back as "DONE" (node e2e's termination message from logs).
   assert written(tmp_path, [("stdout", b"x\nDONE", False),
                             ("stdout", b"", True)]) \
      == [("stdout", "F", b"x"), ("stdout", "P", b"DONE")]
   assert written(tmp_path, [("stdout", b"x\n", False),
                             ("stdout", b"", True)]) \
      == [("stdout", "F", b"x")]


def test_long_line_split(tmp_path):
   n = logio.LOG_LINE_MAX
   out = written(tmp_path, [("stdout", b"y" * (n + 5) + b"\n", False)])
   assert out == [("stdout", "P", b"y" * n), ("stdout", "F", b"y" * 5)]
