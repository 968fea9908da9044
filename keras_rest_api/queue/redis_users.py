"""Redis access by role: ACL users and passwords, optional TLS, and the client side of both:
connecting to the server REDIS_URL names, or to the primary that REDIS_SENTINELS report.

When `run.sh` or the test harness starts Redis itself, `prepare` writes everything that Redis
needs to refuse whoever is not one of the service's tiers:

    <secrets dir>/            0750 root:www-data (0700 when not run as root)
        users.acl             0600  the ACL: `default` off; web, model_server and admin users,
                                    each with its password's SHA-256 only (no plain password)
        web.password          0640 root:www-data  read by Apache's daemons (www-data)
        model_server.password 0600
        admin.password        0600  operators and tests (every command, every key)
        redis.conf            0600  what redis-server is started with (no password in it unless
                                    it replicates: then the admin password, for masterauth)
        tls/                  with --tls: a CA made here and Redis's certificate, signed by it

Each tier's user may run only the commands it issues, and only on its own keys (Redis 7 ACL
selectors pair commands with key patterns): the web user can queue a job, set, read and
delete its pending marker, wait for or peek at results and read heartbeats, but cannot write
a result or a heartbeat, delete queue entries, flush, or reconfigure Redis; the model-server
user can consume the queue and write results and heartbeats, and nothing else. See `acl_rules`, and the README
("Pointing the tiers at an existing Redis") for creating the same users on a Redis of your own.

Passwords reach a client through REDIS_USERNAME and REDIS_PASSWORD_FILE (or REDIS_PASSWORD),
never through the URL, a command line or a log line: `client_options` turns the settings into
redis-py keyword arguments, and `redact_url` is what any log line shows of a URL.

As a program (`python -m keras_rest_api.queue.redis_users`, used by run.sh; prints only paths and
user names, never a password):
    keras-rest-api-redis-users prepare --dir .run/redis-secrets --data-dir .run/redis --port 6379 [--tls]
    keras-rest-api-redis-users probe [--wait SECONDS] [--role admin --dir DIR]
    keras-rest-api-redis-users functions [--role admin --dir DIR]   # load queue/functions.py's library
    keras-rest-api-redis-users rules      # ACL SETUSER commands for a Redis of your own
    keras-rest-api-redis-users default-rules  # then this one: the default user off (see acl_file_text)
With REDIS_SENTINELS set, probe and functions reach the primary the Sentinels report, as the tiers do.
"""
from __future__ import annotations

import argparse
import grp
import hashlib
import logging
import os
import re
import secrets
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import urlparse

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from keras_rest_api import settings
from keras_rest_api.queue.functions import load_functions
from keras_rest_api.queue.records import Keys

log = logging.getLogger("redis_security")

WEB, MODEL_SERVER, ADMIN = "web", "model_server", "admin"
ROLES = (WEB, MODEL_SERVER, ADMIN)
# Apache started as root runs its daemons with this group (APACHE_GROUP, as apache/serve.sh
# reads it); they must read the web password.
DEFAULT_WEB_GROUP = "www-data"
# Characters that are special in Redis glob patterns: escaped so a prefix is matched literally.
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")
# ACL rules are whitespace-separated words, so a key prefix may not contain whitespace.
_NAME = re.compile(r"[^\s()]{1,200}")
_URL_USERINFO = re.compile(r"^(\w+://)([^@/]*@)")
# "off": no append-only file at all (what this project did before; a restart loses everything).
APPENDFSYNC_CHOICES = ("always", "everysec", "no", "off")


class RedisSecurityError(ValueError):
    """A Redis security setting that cannot work (unreadable password file, bad combination)."""


# --- the rules ---------------------------------------------------------------------------------
def _glob(literal: str) -> str:
    return _GLOB_SPECIAL.sub(r"\\\1", literal)


def key_patterns(prefix: str, queue_name: str) -> dict[str, str]:
    """ACL key patterns (literal prefix and queue name, glob tail) of every key the service uses,
    taken from the protocol's own key layout (protocol.Keys)."""
    for what, value in (("KEY_PREFIX", prefix), ("QUEUE_NAME", queue_name)):
        if not _NAME.fullmatch(value):
            raise RedisSecurityError(f"{what} must be 1-200 characters without spaces or parentheses "
                                     f"to be written into Redis ACL rules, received {value!r}.")
    keys = Keys(_glob(prefix), _glob(queue_name))
    return {"queue": keys.all_queues, "result": keys.all_results, "pending": keys.all_pending,
            "servers": keys.servers, "server": keys.all_servers}


def acl_rules(role: str, prefix: str, queue_name: str) -> str:
    """The ACL rules of `role` (without its password), for `ACL SETUSER name on >PASSWORD <rules>`.

    Every command each tier issues (see jobqueue.py) is listed with the keys it may touch; a
    command is allowed only when one selector `( ... )` allows it on all its keys. Commands run
    inside a function are checked the same way, so the web user's submit function can XADD to the
    queue and SET a pending marker; it may load or evaluate no script of its own.
    """
    k = key_patterns(prefix, queue_name)
    base = "resetkeys resetchannels -@all +ping +select"
    if role == WEB:
        return " ".join([
            base,
            # No script of its own (EVAL, SCRIPT, FUNCTION): the submit step is the function the
            # admin user loaded (queue.functions), called on the queue and a pending marker only.
            # WAIT: with MIN_REPLICAS, a job is accepted once that many replicas hold it.
            "+wait",
            f"(+fcall %RW~{k['queue']} %RW~{k['pending']})",
            f"(+xadd %W~{k['queue']})",
            f"(+xlen %R~{k['queue']})",
            # Pending markers: set by the submit script, read by GET /result, deleted once answered.
            f"(+set +del %W~{k['pending']})",
            f"(+get %R~{k['pending']})",
            # BLPOP takes the answer off its list; GET /result only peeks (LINDEX).
            f"(+blpop +lindex %RW~{k['result']})",
            # Heartbeats: read only (ZRANGE BYSCORE, MGET); model servers prune stale entries.
            f"(+zrangebyscore %R~{k['servers']})",
            f"(+mget %R~{k['server']})",
        ])
    if role == MODEL_SERVER:
        return " ".join([
            base,
            "+multi +exec +discard",
            # The reply function (queue.functions, loaded by the admin user): answers and
            # acknowledges the entries the server still holds; its own commands are checked by the
            # selectors below. No script of its own.
            f"(+fcall %RW~{k['queue']} %RW~{k['result']})",
            # Consumer group: create, read, take over, count deliveries, acknowledge and delete.
            f"(+xgroup|create +xreadgroup +xautoclaim +xpending +xack +xdel %RW~{k['queue']})",
            # XLEN: a draining version is unloaded only once its queue is empty.
            f"(+xlen %R~{k['queue']})",
            f"(+rpush +pexpire %W~{k['result']})",
            f"(+set +del %W~{k['server']})",
            f"(+zadd +zrem +zremrangebyscore %W~{k['servers']})",
        ])
    if role == ADMIN:
        return "resetkeys resetchannels ~* &* +@all"
    raise RedisSecurityError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")


def aof_replay_rules(prefix: str, queue_name: str) -> str:
    """What Redis needs to replay the tiers' logged transactions (see acl_file_text): their
    write commands, on their keys only."""
    k = key_patterns(prefix, queue_name)
    keys = " ".join(f"%RW~{k[kind]}" for kind in ("queue", "result", "pending", "servers", "server"))
    return f"+multi +exec (+xadd +xclaim +xack +xdel +xgroup|create +xgroup|createconsumer +xgroup|setid +xsetid +xautoclaim +xtrim " \
           f"+set +del +unlink +rpush +lpop +blpop +pexpire +pexpireat +zadd +zrem +zremrangebyscore {keys})"


def acl_file_text(password_hashes: Mapping[str, str], prefix: str, queue_name: str) -> str:
    """An ACL file: the default user off, and each role with the SHA-256 of its password.

    The default user is off: no connection can act as it (each must AUTH as a role). Its rules
    matter to one client only: Redis 7.0 replays the append-only file's transactions (MULTI/EXEC,
    which is how the tiers' scripts and replies are logged) as the default user and re-checks
    them at EXEC, so without the service's own commands on the service's own keys a restarted
    Redis dropped every job and result ("NOPERM ... AOF-loading-client" in its log).
    """
    lines = ["user default off resetkeys resetchannels -@all " + aof_replay_rules(prefix, queue_name)]
    for role in ROLES:
        lines.append(f"user {role} on #{password_hashes[role]} {acl_rules(role, prefix, queue_name)}")
    return "\n".join(lines) + "\n"


# --- files -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TlsFiles:
    """A CA and the Redis server's certificate and key, signed by it."""

    ca_cert: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class Prepared:
    """What `prepare` wrote: the redis.conf to start redis-server with, and each role's files."""

    directory: Path
    conf: Path
    acl: Path
    tls: TlsFiles | None

    def password_file(self, role: str) -> Path:
        return self.directory / f"{role}.password"

    def password(self, role: str) -> str:
        return read_secret_file(self.password_file(role), f"the {role} password file")

    def client_settings(self, role: str) -> dict[str, str]:
        """The settings (environment) a tier needs to connect as `role`."""
        values = {"REDIS_USERNAME": role, "REDIS_PASSWORD_FILE": str(self.password_file(role))}
        if self.tls is not None:
            values["REDIS_TLS_CA_FILE"] = str(self.tls.ca_cert)
        return values


def _web_group(name: str) -> int | None:
    """The gid of `name` when this process may hand files to it (it runs as root), else None."""
    if os.geteuid() != 0:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        log.warning("group %r does not exist; the web password file stays readable by root only", name)
        return None


def _write_private(path: Path, text: str, mode: int = 0o600, gid: int | None = None) -> None:
    """Write `path` so that it is never readable beyond `mode`, not even for an instant."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    if gid is not None:
        os.chown(tmp, -1, gid)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def read_secret_file(path: str | os.PathLike[str], what: str) -> str:
    """The secret in a file (first line, surrounding whitespace dropped); the error never shows it."""
    try:
        with open(path, encoding="utf-8") as handle:
            value = handle.readline().strip()
    except OSError as exc:
        raise RedisSecurityError(
            f"{what} {os.fspath(path)!r} cannot be read ({type(exc).__name__}: {exc.strerror}). Expected a "
            f"file readable by this process's user (uid {os.geteuid()}) holding the secret on its first line."
        ) from None
    if not value:
        raise RedisSecurityError(f"{what} {os.fspath(path)!r} is empty; expected the secret on its first line.")
    return value


def generate_tls(directory: Path, hosts: Sequence[str], gid: int | None = None) -> TlsFiles:
    """A CA (kept if present) and a certificate for Redis valid for `hosts` (IPs or names), by openssl."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o750 if gid is not None else 0o755)
    if gid is not None:
        os.chown(directory, -1, gid)
    files = TlsFiles(directory / "ca.crt", directory / "redis.crt", directory / "redis.key")
    ca_key = directory / "ca.key"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    old_umask = os.umask(0o077)  # keys are created 0600
    try:
        if not (files.ca_cert.exists() and ca_key.exists()):
            _openssl(["req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(files.ca_cert), "-days", "3650",
                      "-subj", "/CN=keras-rest-api Redis CA",
                      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"])
        san = ",".join(f"IP:{h}" if re.fullmatch(r"[0-9.]+|[0-9a-fA-F:]+", h) else f"DNS:{h}" for h in hosts)
        extensions = directory / "redis.ext"
        extensions.write_text(f"subjectAltName={san}\nextendedKeyUsage=serverAuth,clientAuth\n")
        csr = directory / "redis.csr"
        _openssl(["req", "-new", *ec, "-keyout", str(files.key), "-out", str(csr), "-subj", "/CN=redis"])
        _openssl(["x509", "-req", "-in", str(csr), "-CA", str(files.ca_cert), "-CAkey", str(ca_key),
                  "-CAcreateserial", "-out", str(files.cert), "-days", "825", "-extfile", str(extensions)])
        csr.unlink()
    finally:
        os.umask(old_umask)
    os.chmod(files.ca_cert, 0o644)  # public: every client verifies Redis with it
    os.chmod(files.cert, 0o644)
    return files


def _openssl(args: list[str]) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RedisSecurityError(f"openssl {args[0]} failed ({result.returncode}): {result.stderr.strip()[-500:]}")


def memory_limit(config: Mapping[str, Any]) -> int:
    """Redis's maxmemory for these settings: REDIS_MAXMEMORY, or (0) sized from the queue bound."""
    if int(config["REDIS_MAXMEMORY"]) > 0:
        return int(config["REDIS_MAXMEMORY"])
    return 64 * 2**20 + 2 * int(config["MAX_QUEUE_LENGTH"]) * int(config["REDIS_JOB_BYTES"])


def prepare(directory: str | os.PathLike[str], *, prefix: str, queue_name: str, data_dir: str | os.PathLike[str],
            port: int, bind: Sequence[str] = ("127.0.0.1",), tls: bool = False, tls_hosts: Sequence[str] = (),
            web_group: str | None = None, maxmemory: int | None = None, appendfsync: str = "everysec",
            replication: bool = False, replica_of: tuple[str, int] | None = None,
            conf_name: str = "redis.conf") -> Prepared:
    """Write the ACL, passwords (kept from an earlier run, so running tiers stay valid), TLS files
    and `conf_name` for a Redis that only the service's users may use, holding at most `maxmemory`
    bytes (None: `memory_limit` of the default settings) and keeping its data in an append-only
    file in `data_dir` (fsynced per `appendfsync`).

    With `replication` (for a primary that Sentinel may demote) or `replica_of` (host, port: it
    starts as that primary's replica), it replicates as the admin user: the configuration file
    then holds the admin password (it is 0600, as the password files are).
    """
    if appendfsync not in APPENDFSYNC_CHOICES:
        raise RedisSecurityError(f"REDIS_APPENDFSYNC must be one of {', '.join(APPENDFSYNC_CHOICES)}, "
                                 f"received {appendfsync!r}.")
    root = Path(directory).resolve()
    root.mkdir(parents=True, exist_ok=True)
    gid = _web_group(web_group or os.environ.get("APACHE_GROUP") or DEFAULT_WEB_GROUP)
    os.chmod(root, 0o750 if gid is not None else 0o700)
    if gid is not None:
        os.chown(root, -1, gid)
    hashes = {}
    for role in ROLES:
        path = root / f"{role}.password"
        password = read_secret_file(path, f"the {role} password file") if path.exists() else secrets.token_urlsafe(32)
        readable_by_web = role == WEB and gid is not None
        _write_private(path, password + "\n", 0o640 if readable_by_web else 0o600, gid if readable_by_web else None)
        hashes[role] = hashlib.sha256(password.encode()).hexdigest()
    acl = root / "users.acl"
    _write_private(acl, acl_file_text(hashes, prefix, queue_name))

    tls_files = generate_tls(root / "tls", [*bind, *tls_hosts, "localhost"], gid) if tls else None
    lines = [
        f"bind {' '.join(bind)}",
        # With the default user off, protected mode refuses nobody who has a password; it stays on.
        "protected-mode yes",
        f"dir {Path(data_dir).resolve()}",
        # Persistence is the append-only file: a restarted Redis has its streams, consumer groups,
        # pending entries and results back (RDB snapshots would lose minutes of them).
        'save ""',
        *(["appendonly no"] if appendfsync == "off" else ["appendonly yes", f"appendfsync {appendfsync}"]),
        # hz 100: Redis ends blocking waits (the batch window) to within 10 ms.
        "hz 100",
        # Past maxmemory a write is refused (the web tier answers 503), never an accepted job evicted.
        f"maxmemory {memory_limit(settings.defaults()) if maxmemory is None else int(maxmemory)}",
        "maxmemory-policy noeviction",
        "loglevel warning",
        f"aclfile {acl}",
    ]
    if tls_files is None:
        lines.append(f"port {port}")
    else:
        lines += ["port 0", f"tls-port {port}", f"tls-cert-file {tls_files.cert}", f"tls-key-file {tls_files.key}",
                  f"tls-ca-cert-file {tls_files.ca_cert}",
                  # Clients prove who they are with their password; a client certificate is optional.
                  "tls-auth-clients optional"]
    if replication or replica_of is not None:
        lines += [f"masteruser {ADMIN}", f"masterauth {read_secret_file(root / f'{ADMIN}.password', 'the admin password')}"]
        if tls_files is not None:
            lines.append("tls-replication yes")
    if replica_of is not None:
        lines.append(f"replicaof {replica_of[0]} {replica_of[1]}")
    conf = root / conf_name
    _write_private(conf, "\n".join(lines) + "\n")
    return Prepared(root, conf, acl, tls_files)


# --- the client side ---------------------------------------------------------------------------
def redact_url(url: str) -> str:
    """`url` with any user:password part replaced, for log lines and error messages."""
    return _URL_USERINFO.sub(r"\1***@", url)


def client_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """redis-py keyword arguments (credentials, TLS files) from the settings in `config`.

    REDIS_USERNAME with REDIS_PASSWORD_FILE (or REDIS_PASSWORD); with a `rediss://` REDIS_URL,
    REDIS_TLS_CA_FILE (the CA that signed Redis's certificate) and, for Redis servers that
    require client certificates, REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE.
    """
    options: dict[str, Any] = {}
    if re.match(r"\w+://[^@/]*:[^@/]+@", str(config.get("REDIS_URL", ""))):
        log.warning("REDIS_URL carries a password; it can leak through settings dumps and process lists. "
                    "Set REDIS_USERNAME and REDIS_PASSWORD_FILE instead.")
    username = str(config.get("REDIS_USERNAME") or "")
    password = str(config.get("REDIS_PASSWORD") or "")
    password_file = str(config.get("REDIS_PASSWORD_FILE") or "")
    if password and password_file:
        raise RedisSecurityError("Both REDIS_PASSWORD and REDIS_PASSWORD_FILE are set; set only one "
                                 "(REDIS_PASSWORD_FILE keeps the password out of the environment).")
    if password_file:
        password = read_secret_file(password_file, "REDIS_PASSWORD_FILE")
    if username and not password:
        raise RedisSecurityError(f"REDIS_USERNAME is {username!r} but no password is set; set "
                                 "REDIS_PASSWORD_FILE to a file holding that user's password.")
    if username:
        options["username"] = username
    if password:
        options["password"] = password
    tls = {"ssl_ca_certs": "REDIS_TLS_CA_FILE", "ssl_certfile": "REDIS_TLS_CERT_FILE",
           "ssl_keyfile": "REDIS_TLS_KEY_FILE"}
    given = {option: str(config.get(name) or "") for option, name in tls.items()}
    if any(given.values()):
        url = str(config.get("REDIS_URL", ""))
        if not url.startswith("rediss://"):
            raise RedisSecurityError(f"TLS files are set ({', '.join(n for o, n in tls.items() if given[o])}) but "
                                     f"REDIS_URL is {redact_url(url)!r}; use a rediss:// URL to connect with TLS.")
        options.update({option: value for option, value in given.items() if value})
    return options


def sentinel_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """redis-py keyword arguments for the Sentinels' own authentication (REDIS_SENTINEL_USERNAME,
    REDIS_SENTINEL_PASSWORD_FILE); empty for Sentinels that require none."""
    username = str(config.get("REDIS_SENTINEL_USERNAME") or "")
    password_file = str(config.get("REDIS_SENTINEL_PASSWORD_FILE") or "")
    if username and not password_file:
        raise RedisSecurityError(f"REDIS_SENTINEL_USERNAME is {username!r} but REDIS_SENTINEL_PASSWORD_FILE is "
                                 "empty; set it to a file holding that Sentinel user's password.")
    options: dict[str, Any] = {}
    if password_file:
        options["password"] = read_secret_file(password_file, "REDIS_SENTINEL_PASSWORD_FILE")
    if username:
        options["username"] = username
    return options


def connect_from_settings(config: Mapping[str, Any], read_timeout: float | None) -> redis.Redis:
    """The Redis client the settings name: REDIS_URL's server, or the primary that REDIS_SENTINELS
    report for REDIS_SENTINEL_MASTER, with the tier's credentials and TLS files."""
    options = client_options(config)
    if not config.get("REDIS_SENTINELS"):
        return connect(config["REDIS_URL"], connect_timeout=config["REDIS_CONNECT_TIMEOUT"],
                       read_timeout=read_timeout, **options)
    return connect_sentinel(parse_sentinels(config["REDIS_SENTINELS"]), str(config.get("REDIS_SENTINEL_MASTER") or ""),
                            config["REDIS_URL"], connect_timeout=config["REDIS_CONNECT_TIMEOUT"],
                            read_timeout=read_timeout, sentinel_options=sentinel_options(config), **options)


def connect(url: str, connect_timeout: float, read_timeout: float | None, **options: Any) -> redis.Redis:
    """A Redis client that fails fast when Redis is unreachable and retries a broken connection once.

    `read_timeout` must exceed the longest blocking call made on it (BLPOP, XREADGROUP BLOCK).
    `options` are more redis-py arguments: credentials and TLS files (client_options).
    """
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=connect_timeout,
        socket_timeout=read_timeout,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=0,
        **options,
    )


def parse_sentinels(text: str) -> list[tuple[str, int]]:
    """REDIS_SENTINELS ("host:port,host:port") as addresses; ValueError says what is wrong."""
    addresses = []
    for item in (part.strip() for part in str(text).split(",")):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"REDIS_SENTINELS must be comma-separated host:port pairs (e.g. "
                             f"10.0.0.1:26379,10.0.0.2:26379), received the item {item[:100]!r}.")
        addresses.append((host.strip("[]"), int(port)))
    return addresses


def connect_sentinel(sentinels: Sequence[tuple[str, int]], master: str, url: str, connect_timeout: float,
                     read_timeout: float | None, sentinel_options: Mapping[str, Any] | None = None,
                     **options: Any) -> redis.Redis:
    """A client of the primary the Sentinels report for `master`, as `connect`'s clients behave.

    Every new connection asks the Sentinels where the primary is, and a connection that finds its
    server demoted (READONLY) is dropped, so after a failover each connection moves to the new
    primary on its next use (a failed command is retried once, on a new connection). `url` gives
    only the scheme (rediss:// for TLS) and the database number.
    """
    if not master:
        raise ValueError("REDIS_SENTINELS is set but REDIS_SENTINEL_MASTER is empty; set it to the name the "
                         "Sentinels monitor the primary under (their `sentinel monitor NAME ...` line).")
    parsed = urlparse(url)
    tls = parsed.scheme == "rediss"
    tls_options = {k: v for k, v in options.items() if k.startswith("ssl_")}
    db = int(parsed.path.strip("/") or 0) if parsed.path.strip("/").isdigit() else 0
    sentinel = Sentinel(
        list(sentinels),
        sentinel_kwargs={"socket_connect_timeout": connect_timeout, "socket_timeout": connect_timeout,
                         "ssl": tls, **tls_options, **(sentinel_options or {})},
    )
    return sentinel.master_for(
        master, redis_class=redis.Redis, socket_connect_timeout=connect_timeout, socket_timeout=read_timeout,
        retry=Retry(NoBackoff(), 1), health_check_interval=0, db=db, ssl=tls, **options,
    )


def probe(client: redis.Redis) -> str:
    """"ok" when `client`'s Redis answers PING with its credentials, "unreachable" when nothing
    answers there (or no Sentinel reports a primary), "refused" when something answers but refuses
    them (or the TLS handshake)."""
    try:
        client.ping()
        return "ok"
    except (redis.AuthenticationError, redis.ResponseError):
        return "refused"
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        # A TLS failure is a ConnectionError too, but something did answer on that port.
        return "refused" if "SSL" in str(exc) or "certificate" in str(exc) else "unreachable"


def _load_functions(client: redis.Redis, where: str) -> int:
    try:
        load_functions(client)
    except redis.RedisError as exc:
        print(f"redis_users: cannot load the queue's functions into {where} ({exc}). "
              "Load them as a user allowed FUNCTION LOAD (e.g. --role admin --dir SECRETS).", file=sys.stderr)
        return 4
    finally:
        client.close()
    return 0


def _where(config: Mapping[str, Any]) -> str:
    """Which Redis the settings name, for messages: the URL, or the Sentinels and their service."""
    if config.get("REDIS_SENTINELS"):
        return (f"the primary that the Sentinels {config['REDIS_SENTINELS']} report for "
                f"{config.get('REDIS_SENTINEL_MASTER') or '(REDIS_SENTINEL_MASTER unset)'}")
    return f"Redis at {redact_url(config['REDIS_URL'])}"


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="keras-rest-api-redis-users", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare", help="write the ACL, passwords, TLS files and redis.conf; print "
                               "shell assignments of their paths (never a password)")
    prep.add_argument("--dir", required=True, help="the secrets folder")
    prep.add_argument("--data-dir", required=True, help="redis-server's working folder")
    prep.add_argument("--port", type=int, required=True)
    prep.add_argument("--bind", action="append", help="addresses Redis listens on (default 127.0.0.1)")
    prep.add_argument("--tls", action="store_true", help="TLS only, with a CA and certificate made here")
    prep.add_argument("--tls-host", action="append", default=[], help="an extra name for Redis's certificate")
    commands.add_parser("rules", help="print the ACL SETUSER commands that create the web and model_server "
                        "users for KEY_PREFIX and QUEUE_NAME on a Redis of your own (passwords left to fill in)")
    commands.add_parser("default-rules", help="print the ACL SETUSER command that turns the default user off "
                        "yet lets Redis 7.0 replay the service's logged transactions from its append-only file "
                        "(run it last, as an admin user)")
    pro = commands.add_parser("probe", help="exit 0 if Redis at REDIS_URL answers with the configured "
                              "credentials, 3 if nothing answers, 4 if it refuses them")
    pro.add_argument("--wait", type=float, default=0.0, help="seconds to keep trying while nothing answers")
    pro.add_argument("--role", choices=ROLES, help="connect as this role, with its password from --dir")
    pro.add_argument("--dir", help="the secrets folder (with --role)")
    fun = commands.add_parser("functions", help="load the queue's Redis functions (queue/functions.py) as a user "
                              "allowed FUNCTION LOAD (admin): once after Redis starts without them")
    fun.add_argument("--role", choices=ROLES, help="connect as this role, with its password from --dir")
    fun.add_argument("--dir", help="the secrets folder (with --role)")
    args = parser.parse_args(argv)
    try:
        config = settings.load()
    except ValueError as exc:
        print(f"redis_users: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "prepare":
            done = prepare(args.dir, prefix=config["KEY_PREFIX"], queue_name=config["QUEUE_NAME"],
                           data_dir=args.data_dir, port=args.port, bind=args.bind or ["127.0.0.1"], tls=args.tls,
                           tls_hosts=args.tls_host, maxmemory=memory_limit(config),
                           appendfsync=config["REDIS_APPENDFSYNC"])
            shell = {"redis_conf": str(done.conf)}
            for role, name in ((WEB, "web"), (MODEL_SERVER, "model"), (ADMIN, "admin")):
                shell[f"redis_{name}_user"] = role
                shell[f"redis_{name}_password_file"] = str(done.password_file(role))
            shell["redis_ca_file"] = str(done.tls.ca_cert) if done.tls else ""
            print("\n".join(f"{name}={shlex.quote(value)}" for name, value in shell.items()))
            return 0
        if args.command == "default-rules":
            print(f"ACL SETUSER default reset off {aof_replay_rules(config['KEY_PREFIX'], config['QUEUE_NAME'])}")
            return 0
        if args.command == "rules":
            for role in (WEB, MODEL_SERVER):
                print(f"ACL SETUSER {role} reset on >{role.upper()}_PASSWORD "
                      f"{acl_rules(role, config['KEY_PREFIX'], config['QUEUE_NAME'])}")
            return 0
        if args.role:
            if not args.dir:
                parser.error("--role needs --dir")
            config.update(Prepared(Path(args.dir), Path(), Path(), None).client_settings(args.role))
        # Behind Sentinels this asks them for the primary, so both commands reach the server the tiers will.
        if args.command == "functions":
            return _load_functions(connect_from_settings(config, read_timeout=10.0), _where(config))
        # One client for every try: a failed ping leaves no connection behind, and each new
        # connection asks the Sentinels (if any) for the primary again.
        client = connect_from_settings({**config, "REDIS_CONNECT_TIMEOUT": min(float(config["REDIS_CONNECT_TIMEOUT"]), 1.0)},
                                       read_timeout=1.0)
        deadline = time.monotonic() + args.wait
        try:
            while (outcome := probe(client)) == "unreachable" and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            client.close()
    except (RedisSecurityError, ValueError) as exc:
        print(f"redis_users: {exc}", file=sys.stderr)
        return 2
    if outcome == "refused":
        instead = "" if config.get("REDIS_SENTINELS") else ", or stop it so that run.sh starts its own"
        print(f"redis_users: {_where(config)} answers but refuses these credentials "
              f"(REDIS_USERNAME={config.get('REDIS_USERNAME') or '(none)'}). Set REDIS_USERNAME and "
              f"REDIS_PASSWORD_FILE for it{instead}.", file=sys.stderr)
        return 4
    if outcome == "unreachable" and config.get("REDIS_SENTINELS"):
        print(f"redis_users: nothing answers as {_where(config)}: no Sentinel answered with a primary "
              "(check REDIS_SENTINELS, REDIS_SENTINEL_MASTER and the Sentinels' password file).", file=sys.stderr)
    return 0 if outcome == "ok" else 3


if __name__ == "__main__":
    sys.exit(main())
