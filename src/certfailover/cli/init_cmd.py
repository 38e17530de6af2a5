"""`certfailover init`: create the store and print the web server lines for each site."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..store.files import atomic_write
from .common import emit, load_config

TEMPLATE = """\
# certfailover configuration. Reference: docs/config.md
[store]
directory = "/var/lib/certfailover"

[[ca]]
name = "letsencrypt"
directory = "https://acme-v02.api.letsencrypt.org/directory"
email = "ops@example.com"

[[ca]]
name = "zerossl"
directory = "https://acme.zerossl.com/v2/DV90"
email = "ops@example.com"
eab_kid = "YOUR-EAB-KID"
eab_hmac_key = "env:ZEROSSL_EAB_HMAC"     # secrets are references: env:NAME or file:/path

[[server]]
name = "web"
type = "nginx"
test = ["nginx", "-t"]
reload = ["nginx", "-s", "reload"]

[[site]]
name = "example"
domains = ["example.com", "www.example.com"]
cas = ["letsencrypt", "zerossl"]
server = "web"
endpoints = ["127.0.0.1:443"]
trust = ["system"]
[site.challenge]
type = "http-01-webroot"
webroot = "/var/www/acme"
"""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("init", help="create the store; print server config lines per site "
                                    "(writes an example config if none exists)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path: Path = args.config
    if not path.exists():
        atomic_write(path, TEMPLATE.encode(), mode=0o640)
        emit(args, {"written": str(path)},
             f"wrote an example config to {path}; edit it, then run `certfailover init` again")
        return 0
    from ..wiring import open_store
    config = load_config(args)
    db, vault = open_store(config)
    sites = []
    lines = [f"store: {config.store} (schema version {db.version()})", ""]
    for site in config.sites:
        live = vault.live_path(site.name)
        sites.append({"site": site.name, "live": str(live),
                      "nginx": [f"ssl_certificate {live}/fullchain.pem;",
                                f"ssl_certificate_key {live}/privkey.pem;"],
                      "apache": [f"SSLCertificateFile {live}/fullchain.pem",
                                 f"SSLCertificateKeyFile {live}/privkey.pem"],
                      "haproxy": [f"bind :443 ssl crt {live}/combined.pem"]})
        lines.append(f"# site {site.name}: nginx server block")
        lines += ["    " + x for x in sites[-1]["nginx"]]
        lines.append("# Apache <VirtualHost>")
        lines += ["    " + x for x in sites[-1]["apache"]]
        lines.append("# HAProxy frontend")
        lines += ["    " + x for x in sites[-1]["haproxy"]]
        lines.append("")
    emit(args, {"store": str(config.store), "schema_version": db.version(), "sites": sites},
         "\n".join(lines))
    return 0
