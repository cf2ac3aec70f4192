# Unit tests of the configuration file and registry endpoints
# (lib/cri/config.py).

import os

import pytest

import imgref
import cri.config as config


## Functions ##

def toml_load(tmp_path, text, name="config.toml"):
   "Write text to a config file in tmp_path and load it."
   path = tmp_path / name
   path.write_text(text)
   return config.load(str(path), True)


def config_error(tmp_path, text):
   "Return the message of the Config_Error loading text raises."
   with pytest.raises(config.Config_Error) as ei:
      toml_load(tmp_path, text)
   return str(ei.value)


def endpoints(table, text):
   return [(e.host, e.prefix, e.mirror_p)
           for e in config.Registries(table).endpoints(imgref.parse(text))]


## Tests ##

def test_load_full(tmp_path):
   ca = tmp_path / "ca.pem"
   ca.write_text("not checked here\n")
   cfg = toml_load(tmp_path, """\
socket = "/run/x/cri.sock"
socket_mode = "0640"
state_dir = "/var/lib/x"
log_level = "debug"
cgroup_driver = "systemd"
pinned_images = ["registry.k8s.io/pause:3.9"]

[streaming]
port = 10010
token_ttl = 30

[registry."docker.io"]
mirrors = ["https://mirror.example:5000/v2/hub", "mirror2.example"]
upstream = false

[registry."mirror.example:5000"]
ca = "%s"
username = "u"
password = "p"

[registry."quay.io"]
skip_verify = true
""" % ca)
   assert cfg["socket"] == "/run/x/cri.sock"
   assert cfg["socket_mode"] == 0o640
   assert cfg["state_dir"] == "/var/lib/x"
   assert cfg["log_level"] == "debug"
   assert cfg["cgroup_driver"] == "systemd"
   assert cfg["pinned_images"] == ["registry.k8s.io/pause:3.9"]
   assert cfg["streaming"] == { "address": "127.0.0.1", "port": 10010,
                                "token_ttl": 30, "idle_timeout": 4 * 3600,
                                "allow_remote": False }
   assert cfg["registry"]["docker.io"]["upstream"] is False
   assert cfg["registry"]["quay.io"] == { "skip_verify": True }
   eps = config.Registries(cfg["registry"]).endpoints(
      imgref.parse("busybox"))
   assert [(e.host, e.prefix) for e in eps] \
          == [("mirror.example:5000", "hub"), ("mirror2.example", "")]
   assert (eps[0].ca, eps[0].username, eps[0].password) == (str(ca), "u", "p")
   assert (eps[1].ca, eps[1].username) == (None, None)
   assert eps[0].src_ref(imgref.parse("busybox:1")) \
          == "mirror.example:5000/hub/library/busybox:1"


def test_load_missing_file(tmp_path):
   path = str(tmp_path / "nope.toml")
   cfg = config.load(path, False)
   assert cfg["config"] == path
   assert cfg["registry"] == {} and cfg["log_level"] == "info"
   with pytest.raises(config.Config_Error) as ei:
      config.load(path, True)
   assert "not found" in str(ei.value) and path in str(ei.value)


def test_defaults_are_fresh():
   a = config.defaults()
   a["registry"]["x"] = {}
   a["streaming"]["port"] = 1
   b = config.defaults()
   assert b["registry"] == {} and b["streaming"]["port"] == 0


def test_bad_toml(tmp_path):
   msg = config_error(tmp_path, "socket = \n")
   assert "can't read config file" in msg


def test_ca_missing(tmp_path):
   msg = config_error(tmp_path, """\
[registry."docker.io"]
ca = "/nonexistent/ca.pem"
""")
   assert msg.startswith("registry.docker.io.ca:")
   assert "/nonexistent/ca.pem" in msg


@pytest.mark.parametrize(("text", "key"), [
   ("colour = 1\n", "colour"),
   ("[streaming]\nspeed = 1\n", "streaming.speed"),
   ("[registry.\"docker.io\"]\nmirror = [\"https://m\"]\n",
    "registry.docker.io.mirror"),
])
def test_unknown_key(tmp_path, text, key):
   assert config_error(tmp_path, text) == "unknown config key: %s" % key


def test_http_mirror_refused(tmp_path):
   msg = config_error(tmp_path, """\
[registry."docker.io"]
mirrors = ["https://ok.example", "http://plain.example"]
""")
   assert msg.startswith("registry.docker.io.mirrors[1]:")
   assert "HTTPS" in msg and "http://plain.example" in msg


def test_http_server_refused(tmp_path):
   msg = config_error(tmp_path, """\
[registry."r.example"]
server = "http://r.example"
""")
   assert msg.startswith("registry.r.example.server:")


@pytest.mark.parametrize(("text", "key"), [
   ("log_level = \"loud\"\n", "log_level"),
   ("log_level = 3\n", "log_level"),
   ("cgroup_driver = \"cgroup2\"\n", "cgroup_driver"),
   ("socket = 5\n", "socket"),
   ("socket_mode = \"999\"\n", "socket_mode"),
   ("pinned_images = [\"Bad/../x\"]\n", "pinned_images"),
   ("pinned_images = \"pause\"\n", "pinned_images"),
   ("[streaming]\nport = \"80\"\n", "streaming.port"),
   ("[streaming]\nport = true\n", "streaming.port"),
   ("registry = 1\n", "registry"),
   ("[registry]\n\"docker.io\" = 1\n", "registry.docker.io"),
   ("[registry.\"q.io\"]\nskip_verify = \"yes\"\n",
    "registry.q.io.skip_verify"),
   ("[registry.\"q.io\"]\nupstream = \"no\"\n", "registry.q.io.upstream"),
   ("[registry.\"q.io\"]\nusername = 1\n", "registry.q.io.username"),
   ("[registry.\"q.io\"]\nmirrors = [1]\n", "registry.q.io.mirrors"),
   ("[registry.\"q.io\"]\nmirrors = [\"https://u@m\"]\n",
    "registry.q.io.mirrors[0]"),
])
def test_bad_value_names_key(tmp_path, text, key):
   assert config_error(tmp_path, text).startswith(key + ":")


def test_mirrors_must_be_a_list(tmp_path):
   msg = config_error(tmp_path, """\
[registry."docker.io"]
mirrors = "mirror.example"
""")
   assert msg.startswith("registry.docker.io.mirrors:")


def test_endpoints_default_upstream():
   assert endpoints({}, "busybox") \
          == [("registry-1.docker.io", "", False)]
   assert endpoints({}, "quay.io/a/b:1") == [("quay.io", "", False)]
   assert endpoints({}, "localhost:5000/a") \
          == [("localhost:5000", "", False)]


def test_endpoints_mirrors_then_upstream():
   table = { "docker.io": { "mirrors": ["https://m1.example/v2/pfx/",
                                        "m2.example:5443"] } }
   assert endpoints(table, "busybox") \
          == [("m1.example", "pfx", True), ("m2.example:5443", "", True),
              ("registry-1.docker.io", "", False)]
   # other registries are unaffected
   assert endpoints(table, "quay.io/a/b") == [("quay.io", "", False)]


def test_endpoints_upstream_false():
   table = { "docker.io": { "mirrors": ["https://m.example"],
                            "upstream": False },
             "quay.io": { "upstream": False } }
   assert endpoints(table, "busybox") == [("m.example", "", True)]
   assert endpoints(table, "quay.io/a/b") == []


def test_endpoints_server_and_settings(tmp_path):
   table = { "r.example": { "server": "https://real.example:444/v2/sub",
                            "username": "ru", "skip_verify": True },
             "real.example:444": { "ca": "/ca.pem", "username": "hu",
                                   "password": "hp" } }
   eps = config.Registries(table).endpoints(
      imgref.parse("r.example/app@sha256:" + "a" * 64))
   assert len(eps) == 1
   e = eps[0]
   assert (e.host, e.prefix, e.mirror_p) == ("real.example:444", "sub", False)
   # the registry's own settings win over the server host's table
   assert (e.ca, e.skip_verify, e.username, e.password) \
          == ("/ca.pem", True, "ru", "hp")
   assert e.src_ref(imgref.parse("r.example/app@sha256:" + "a" * 64)) \
          == "real.example:444/sub/app@sha256:" + "a" * 64


@pytest.mark.parametrize(("url", "out"), [
   ("https://h", ("h", "")),
   ("h:5000", ("h:5000", "")),
   ("https://h/v2", ("h", "")),
   ("https://h/v2/a/b/", ("h", "a/b")),
   ("https://h/mirror", ("h", "mirror")),
])
def test_endpoint_parse(url, out):
   assert config.endpoint_parse(url, "x") == out


@pytest.mark.parametrize("url", ["http://h", "ftp://h", "https://",
                                 "https://h?q=1", "https://h#f",
                                 "https://user:pw@h"])
def test_endpoint_parse_bad(url):
   with pytest.raises(config.Config_Error) as ei:
      config.endpoint_parse(url, "where")
   assert str(ei.value).startswith("where: ")


@pytest.mark.parametrize(("v", "mode"), [
   ("0660", 0o660), ("660", 0o660), ("0o755", 0o755), (0o600, 0o600),
   ("0", 0), ("777", 0o777)])
def test_mode_parse(v, mode):
   assert config.mode_parse(v) == mode


@pytest.mark.parametrize("v", ["rw", "0999", "1000", -1, 0o1000, "", "8"])
def test_mode_parse_bad(v):
   with pytest.raises(config.Config_Error) as ei:
      config.mode_parse(v)
   assert str(ei.value).startswith("socket_mode: ")


def test_socket_mode_int_in_toml(tmp_path):
   assert toml_load(tmp_path, "socket_mode = 0o600\n")["socket_mode"] \
          == 0o600


def test_validate_cli_values():
   cfg = config.defaults()
   cfg["log_level"] = "chatty"
   with pytest.raises(config.Config_Error) as ei:
      config.validate(cfg)
   assert str(ei.value).startswith("log_level:")
   cfg = config.defaults()
   config.validate(cfg)
   assert os.path.isabs(cfg["state_dir"])
