"""make_adapter, Endpoint parsing, argv checks: pure logic, no server processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from certfailover.servers import Endpoint, make_adapter
from certfailover.servers.apache import ApacheAdapter
from certfailover.servers.command import CommandAdapter
from certfailover.servers.files import FilesAdapter
from certfailover.servers.haproxy import HAProxyAdapter
from certfailover.servers.nginx import NginxAdapter


@pytest.mark.parametrize(("text", "host", "port"), [
    ("127.0.0.1:8443", "127.0.0.1", 8443), ("www.test:443", "www.test", 443),
    ("[::1]:443", "::1", 443),
])
def test_endpoint_parse(text: str, host: str, port: int) -> None:
    ep = Endpoint.parse(text)
    assert (ep.host, ep.port) == (host, port)
    assert str(ep) == text


@pytest.mark.parametrize(("text", "why"), [
    ("localhost", "host:port"), (":443", "host:port"), ("h:0", "out of range"),
    ("h:70000", "out of range"), ("::1:443", "must be written"), ("[zz]:443", "bad IPv6"),
    ("h:x", "host:port"),
])
def test_endpoint_parse_errors_name_the_text(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as info:
        Endpoint.parse(text)
    assert repr(text) in str(info.value)


def test_nginx_defaults_and_custom_argv() -> None:
    a = make_adapter({"name": "w", "type": "nginx"})
    assert isinstance(a, NginxAdapter) and a.test[0] == "nginx" and "reload" in a.reload
    b = make_adapter({"name": "w", "type": "nginx", "test": ["x", "-t"], "reload": ["y"]})
    assert isinstance(b, NginxAdapter) and b.test == ("x", "-t") and b.reload == ("y",)


def test_apache_haproxy_command_files() -> None:
    assert isinstance(make_adapter({"name": "a", "type": "apache"}), ApacheAdapter)
    h = make_adapter({"name": "h", "type": "haproxy", "socket": "/run/h.sock"})
    assert isinstance(h, HAProxyAdapter) and h.socket_path == Path("/run/h.sock")
    c = make_adapter({"name": "c", "type": "command", "command": ["true"],
                      "paths": {"cert": "/x/{site}.crt", "key": "/x/{site}.key"}})
    assert isinstance(c, CommandAdapter) and c.command == ("true",)
    f = make_adapter({"name": "f", "type": "files", "paths": {"combined": "/x/all.pem"}})
    assert isinstance(f, FilesAdapter) and not isinstance(f, CommandAdapter)


@pytest.mark.parametrize(("spec", "key"), [
    ({"type": "nginx"}, "'name'"),
    ({"name": "w", "type": "lighttpd"}, "'type'"),
    ({"name": "w", "type": "nginx", "socket": "/s"}, "'socket'"),
    ({"name": "w", "type": "nginx", "reload": "nginx -s reload"}, "'reload'"),
    ({"name": "w", "type": "nginx", "test": []}, "'test'"),
    ({"name": "h", "type": "haproxy"}, "'socket'"),
    ({"name": "h", "type": "haproxy", "socket": 3}, "'socket'"),
    ({"name": "c", "type": "command", "paths": {"cert": "/c"}}, "'command'"),
    ({"name": "f", "type": "files"}, "'paths'"),
    ({"name": "f", "type": "files", "paths": {"certificate": "/c"}}, "'paths.certificate'"),
    ({"name": "f", "type": "files", "paths": {"cert": ""}}, "'paths.cert'"),
    ({"name": "f", "type": "files", "paths": {"cert": "/c/{host}"}}, "'paths.cert'"),
])
def test_bad_specs_name_the_key(spec: dict[str, object], key: str) -> None:
    with pytest.raises(ValueError) as info:
        make_adapter(spec)
    assert key in str(info.value)


def test_haproxy_reload_only_is_allowed() -> None:
    h = make_adapter({"name": "h", "type": "haproxy", "reload": ["systemctl", "reload", "x"]})
    assert isinstance(h, HAProxyAdapter) and h.socket_path is None


def test_nginx_pid_file() -> None:
    a = make_adapter({"name": "w", "type": "nginx", "pid_file": "/run/nginx.pid"})
    assert isinstance(a, NginxAdapter) and a.pid_file == Path("/run/nginx.pid")
    assert isinstance(a, NginxAdapter) and a.reload == ("nginx", "-s", "reload")
    assert make_adapter({"name": "w", "type": "nginx"}).pid_file is None  # type: ignore[attr-defined]


@pytest.mark.parametrize("spec", [
    {"name": "w", "type": "nginx", "pid_file": "run/nginx.pid"},
    {"name": "w", "type": "nginx", "pid_file": ""},
    {"name": "w", "type": "nginx", "pid_file": ["/run/nginx.pid"]},
    {"name": "a", "type": "apache", "pid_file": "/run/apache2.pid"},
])
def test_bad_pid_file_names_the_key(spec: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="'pid_file'"):
        make_adapter(spec)
