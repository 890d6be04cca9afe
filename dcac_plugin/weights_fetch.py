"""Fetch the weight files the paper and baseline configs need, verified, into ``pretrained/``.

The manifest (``dcac_plugin/resources/weights_manifest.yaml``) lists every file with its source
URL(s), size and sha256 (or why there is no official digest). :func:`fetch` downloads a file into
``<dest>/.partial/`` (plain HTTP(S) with ``Range`` resume, or gdown for Google Drive, as torchreid
does), verifies it and only then moves it to ``<dest>/<name>``. It never overwrites a good file; a
file whose digest does not match is kept aside as ``<name>.mismatch-<sha8>`` (never under the real
name) and the error says what to do. ``--mirror`` takes the files from a folder or an internal URL
instead of the official sources (clusters whose compute nodes have no internet).

Where no official full digest exists, a downloaded file must read as a weights-only torch
checkpoint (and match a published sha256 prefix where there is one); the sha256 of that first
verified copy is recorded in ``<dest>/weights_digests.json`` and later runs compare against it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import http.client
import json
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gdown
import requests
import torch
import yaml
from safetensors.torch import save_file
from tqdm import tqdm

from dcac_plugin._torchreid import torchreid_checkpoint_globals
from dcac_plugin.shipped import RESOURCES
from dcac_plugin.utils.io import atomic_write_json

logger = logging.getLogger(__name__)

MANIFEST = RESOURCES / "weights_manifest.yaml"
DIGESTS_FILE = "weights_digests.json"
PARTIAL_DIR = ".partial"
GROUPS = ("paper", "baselines", "dcac-release")
BACKENDS = ("http", "gdown")
_CHUNK = 1 << 20
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_USER_AGENT = "dcac_plugin-fetch-weights"


class FetchError(RuntimeError):
    """A file could not be fetched or verified (the message names the file and what to do)."""


class ManifestError(ValueError):
    """The weights manifest is malformed."""


@dataclass(frozen=True)
class WeightFile:
    """One manifest entry (see the manifest's header for the fields)."""

    name: str
    what: str
    group: str
    used_by: tuple[str, ...]
    backend: str
    urls: tuple[str, ...]
    size: int | None
    sha256: str | None
    sha256_prefix: str | None
    digest_source: str
    optional: bool = False
    note: str = ""
    convert_to: str | None = None

    @property
    def digest_label(self) -> str:
        """The digest as ``--list`` shows it."""
        if self.sha256:
            return self.sha256
        if self.sha256_prefix:
            return f"{self.sha256_prefix}... (official prefix only; full digest recorded at first download)"
        return "no official digest (recorded at first verified download)"


def load_manifest(path: str | os.PathLike | None = None) -> list[WeightFile]:
    """Read and validate a weights manifest (default: the package's).

    Raises:
        ManifestError: a missing field, a duplicate name, an unknown group/backend or a malformed digest.
    """
    p = Path(path) if path else MANIFEST
    items = _manifest_items(p)
    out: list[WeightFile] = []
    seen: set[str] = set()
    for i, d in enumerate(items):
        out.append(_manifest_entry(d, f"{p}: files[{i}]", p, seen))
    return out


def _manifest_items(p: Path) -> list[Any]:
    """The manifest's ``files:`` list (non-empty)."""
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ManifestError(f"cannot read weights manifest {p}: {e}") from None
    items = data.get("files") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise ManifestError(f"{p}: expected a top-level 'files:' list")
    return items


def _manifest_entry(d: Any, where: str, p: Path, seen: set[str]) -> WeightFile:
    """One validated manifest entry (``where`` names it in errors until its name is known); adds its
    name to ``seen``, the names of the entries before it."""
    if not isinstance(d, dict) or not d.get("name"):
        raise ManifestError(f"{where}: every entry needs a 'name'")
    name = str(d["name"])
    where = f"{p}: '{name}'"
    if "/" in name or name.startswith("."):
        raise ManifestError(f"{where}: a name is a plain file name (no '/', no leading '.')")
    if name in seen:
        raise ManifestError(f"{where}: name occurs twice")
    seen.add(name)
    group, backend = d.get("group", "paper"), d.get("backend", "http")
    if group not in GROUPS:
        raise ManifestError(f"{where}: group '{group}' is not one of {list(GROUPS)}")
    if backend not in BACKENDS:
        raise ManifestError(f"{where}: backend '{backend}' is not one of {list(BACKENDS)}")
    sha, prefix, size = _manifest_digest(d, where)
    return WeightFile(
        name=name, what=str(d.get("what", "")), group=group, used_by=tuple(d.get("used_by") or ()),
        backend=backend, urls=tuple(str(u) for u in d.get("urls") or ()), size=size,
        sha256=str(sha) if sha else None, sha256_prefix=str(prefix) if prefix else None,
        digest_source=" ".join(str(d["digest_source"]).split()), optional=bool(d.get("optional", False)),
        note=" ".join(str(d.get("note", "")).split()), convert_to=d.get("convert_to"))


def _manifest_digest(d: dict[str, Any], where: str) -> tuple[Any, Any, Any]:
    """An entry's validated ``sha256``, ``sha256_prefix`` and ``size`` (each may be None)."""
    sha = d.get("sha256")
    if sha is not None and not _HEX64.match(str(sha)):
        raise ManifestError(f"{where}: sha256 must be 64 lowercase hex digits, got {sha!r}")
    prefix = d.get("sha256_prefix")
    if prefix is not None and not re.match(r"^[0-9a-f]{4,63}$", str(prefix)):
        raise ManifestError(f"{where}: sha256_prefix must be lowercase hex, got {prefix!r}")
    if not d.get("digest_source"):
        raise ManifestError(f"{where}: say where the digest comes from, or why there is none (digest_source)")
    size = d.get("size")
    if size is not None and (not isinstance(size, int) or size <= 0):
        raise ManifestError(f"{where}: size must be a positive number of bytes or null")
    return sha, prefix, size


def select(entries: list[WeightFile], only: list[str] | None) -> list[WeightFile]:
    """Entries named by ``only`` (names, fnmatch patterns or group names); default: every non-optional one.

    Raises:
        FetchError: a name or pattern matches nothing (the message lists the names).
    """
    if not only:
        return [e for e in entries if not e.optional]
    chosen: dict[str, WeightFile] = {}
    for pattern in only:
        hits = [e for e in entries if e.group == pattern or fnmatch.fnmatchcase(e.name, pattern)]
        if not hits:
            raise FetchError(f"--only {pattern!r} matches no file of the manifest; names: "
                             f"{', '.join(e.name for e in entries)}; groups: {', '.join(GROUPS)}")
        for e in hits:
            chosen[e.name] = e
    return [e for e in entries if e.name in chosen]


# ------------------------------------------------------------------------------------ digests


def sha256_file(path: str | os.PathLike, desc: str | None = None) -> str:
    """sha256 (hex) of a file, read in 1 MiB chunks; a progress bar for files over 64 MiB."""
    size = os.path.getsize(path)
    digest = hashlib.sha256()
    bar = _bar(size, f"sha256 {desc or Path(path).name}") if size > (64 << 20) else contextlib.nullcontext()
    with open(path, "rb") as f, bar as b:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
            if b is not None:
                b.update(len(chunk))
    return digest.hexdigest()


def read_digests(dest: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The digests recorded at first verified download (``<dest>/weights_digests.json``)."""
    p = Path(dest) / DIGESTS_FILE
    if not p.is_file():
        return {}
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except ValueError as e:
        raise FetchError(f"{p} is not valid JSON ({e}); move it away (its digests are then recorded again)") from None
    return data if isinstance(data, dict) else {}


def _record_digest(dest: Path, entry: WeightFile, sha: str, size: int, source: str) -> None:
    data = read_digests(dest)
    data[entry.name] = {"sha256": sha, "size": size, "source": source,
                        "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "why": "no official full digest: sha256 of the first verified copy"}
    atomic_write_json(data, dest / DIGESTS_FILE)


@dataclass
class Verdict:
    """Result of checking one local file against the manifest."""

    ok: bool
    detail: str
    sha256: str | None = None
    needs_record: bool = False


def _loads_as_checkpoint(path: Path) -> str | None:
    """None when ``path`` reads as a weights-only torch file (or TorchScript archive); else the reason."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
            if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
                return None  # TorchScript archive: structure readable, not unpickled here
            with torchreid_checkpoint_globals():
                torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        else:
            with torchreid_checkpoint_globals():
                torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - reported as a reason
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return None


def verify(path: str | os.PathLike, entry: WeightFile, recorded: dict[str, Any] | None = None) -> Verdict:
    """Check one local file: size, then the official sha256, else prefix / recorded digest / readability.

    Args:
        path: the local file.
        entry: its manifest entry.
        recorded: the ``weights_digests.json`` entry of this file, if any.

    Returns:
        A :class:`Verdict`; ``needs_record`` when the file passed and its digest should be recorded.
    """
    p = Path(path)
    size = p.stat().st_size
    if entry.size is not None and size != entry.size:
        return Verdict(False, f"size {size:,} B, expected {entry.size:,} B")
    sha = sha256_file(p, entry.name)
    if entry.sha256:
        if sha == entry.sha256:
            return Verdict(True, "sha256 matches the official digest", sha)
        return Verdict(False, f"sha256 {sha} != official {entry.sha256}", sha)
    if entry.sha256_prefix and not sha.startswith(entry.sha256_prefix):
        return Verdict(False, f"sha256 {sha} does not start with the official prefix {entry.sha256_prefix}", sha)
    if recorded and recorded.get("sha256"):
        if sha == recorded["sha256"]:
            how = "official prefix and the digest recorded at first download" if entry.sha256_prefix else \
                "the digest recorded at first download (no official digest)"
            return Verdict(True, f"sha256 matches {how}", sha)
        return Verdict(False, f"sha256 {sha} != {recorded['sha256']} recorded at first download", sha)
    reason = _loads_as_checkpoint(p)
    if reason:
        return Verdict(False, f"does not read as a weights-only torch checkpoint ({reason})", sha)
    how = "official sha256 prefix" if entry.sha256_prefix else "no official digest"
    return Verdict(True, f"{how}; reads as a torch checkpoint; sha256 {sha} recorded now", sha, needs_record=True)


# ----------------------------------------------------------------------------------- transfer


def _bar(total: int | None, desc: str, initial: int = 0):
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                dynamic_ncols=True, leave=True, disable=None)


def _set_aside(path: Path, sha: str | None) -> Path:
    """Rename ``path`` to ``<name>.mismatch-<sha8>`` (a free name) in the destination folder; return it."""
    tag = (sha or "unknown")[:8]
    folder = path.parent.parent if path.parent.name == PARTIAL_DIR else path.parent
    base = folder / f"{path.name.removesuffix('.part')}.mismatch-{tag}"
    target, n = base, 1
    while target.exists():
        n += 1
        target = base.with_name(f"{base.name}.{n}")
    os.replace(path, target)
    return target


def http_download(url: str, part: Path, desc: str, retries: int = 3, timeout: float = 60.0) -> None:
    """Download ``url`` into ``part``, resuming what ``part`` already holds (HTTP ``Range``).

    A sidecar ``<part>.json`` keeps the URL and the server's ``ETag``/``Last-Modified``; a resumed
    request sends ``If-Range`` with it so a changed remote file is never spliced onto old bytes. A
    dropped connection is resumed up to ``retries`` times within this call; after that the partial
    file stays for the next call.

    Raises:
        FetchError: HTTP error, or the transfer stopped ``retries + 1`` times (the partial file is kept).
    """
    meta_path = part.with_name(part.name + ".json")
    part.parent.mkdir(parents=True, exist_ok=True)
    last_error = ""
    for attempt in range(retries + 1):
        offset, headers = _resume_request(url, part, meta_path, desc)
        try:
            resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
        except urllib.error.HTTPError as e:
            if _partial_is_whole(e, offset, part, desc, url):
                return  # the caller verifies it
            continue
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", e)
            last_error = f"cannot reach {url} ({reason})"
            if attempt < retries:
                logger.warning("%s: %s; retrying", desc, last_error)
                time.sleep(min(2.0 ** attempt, 10.0))
                continue
            raise FetchError(f"{desc}: {last_error}") from None
        with resp:
            plan = _write_plan(resp, offset, part, desc)
            if plan is None:
                continue
            offset, mode, total = plan
            atomic_write_json({"url": url, "etag": resp.headers.get("ETag"),
                               "last_modified": resp.headers.get("Last-Modified"), "total": total}, meta_path)
            error = _receive(resp, part, mode, total, offset, desc)
        got = part.stat().st_size
        if error is None and (total is None or got >= total):
            meta_path.unlink(missing_ok=True)
            return
        last_error = (f"connection lost after {got:,} of {total:,} bytes" if total else
                      f"connection lost after {got:,} bytes") + (f" ({type(error).__name__})" if error else "")
        if attempt < retries:
            logger.warning("%s: %s; resuming", desc, last_error)
            time.sleep(min(0.5 * 2.0 ** attempt, 10.0))
    raise FetchError(f"{desc}: {last_error}. The bytes received are kept in {part}: run the same command again "
                     f"to resume")


def _resume_request(url: str, part: Path, meta_path: Path, desc: str) -> tuple[int, dict[str, str]]:
    """The offset to resume from (0 after dropping a partial file of another URL) and the request headers."""
    meta: dict[str, Any] = {}
    if meta_path.is_file():
        with contextlib.suppress(ValueError, OSError):
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
    offset = part.stat().st_size if part.is_file() else 0
    if offset and meta.get("url") != url:
        logger.info("%s: partial file from another source; starting over", desc)
        part.unlink()
        offset = 0
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        validator = meta.get("etag") or meta.get("last_modified")
        if validator:
            headers["If-Range"] = validator
    return offset, headers


def _partial_is_whole(e: urllib.error.HTTPError, offset: int, part: Path, desc: str, url: str) -> bool:
    """After an HTTP error: True when a 416 says the partial file already holds the whole file; False after
    dropping a partial file the server cannot resume (start over).

    Raises:
        FetchError: any other HTTP error.
    """
    if e.code == 416 and offset:
        total = _range_total(e.headers.get("Content-Range", ""))
        if total == offset or total is None:
            return True
        part.unlink()
        return False
    raise FetchError(f"{desc}: HTTP {e.code} {e.reason} from {url}") from None


def _write_plan(resp: Any, offset: int, part: Path, desc: str) -> tuple[int, str, int | None] | None:
    """``(offset, file mode, total size or None)`` for the server's answer; None (partial file dropped)
    when a range answer does not start at ``offset``."""
    if resp.status == 206:
        start, total = _content_range(resp.headers.get("Content-Range", ""))
        if start != offset:
            logger.info("%s: server answered range %s for offset %d; starting over", desc, start, offset)
            part.unlink(missing_ok=True)
            return None
        return offset, "ab", total
    if offset:
        logger.info("%s: the server sent the whole file (no range support or the file changed); "
                    "starting over", desc)
    length = resp.headers.get("Content-Length")
    return 0, "wb", (int(length) if length and length.isdigit() else None)


def _receive(resp: Any, part: Path, mode: str, total: int | None, offset: int, desc: str) -> BaseException | None:
    """Append (``mode`` 'ab') or write ('wb') the response body to ``part``; the error that cut it short, if any."""
    error: BaseException | None = None
    with open(part, mode) as f, _bar(total, desc, initial=offset) as bar:
        try:
            while True:
                chunk = resp.read(_CHUNK)
                if not chunk:
                    break
                f.write(chunk)
                bar.update(len(chunk))
        except (TimeoutError, http.client.IncompleteRead, ConnectionError, OSError) as e:
            error = e
    return error


def _content_range(value: str) -> tuple[int | None, int | None]:
    m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", value.strip())
    if not m:
        return None, None
    return int(m.group(1)), (int(m.group(3)) if m.group(3) != "*" else None)


def _range_total(value: str) -> int | None:
    m = re.match(r"bytes \*/(\d+)", value.strip())
    return int(m.group(1)) if m else None


def gdown_download(url: str, out: Path, desc: str, retries: int = 3, timeout: float = 60.0) -> None:
    """Download ``url`` (a Google-Drive link, or any plain URL) to ``out`` with gdown, as torchreid does.

    gdown keeps a partial download as ``<out><8 chars>.part`` next to ``out`` and resumes it
    (``Range``) on the next call; cookies are used only for Google Drive (its large-file confirmation).

    Raises:
        FetchError: gdown could not fetch the file (the partial file is kept for the next call).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    drive = "drive.google.com" in urllib.parse.urlsplit(url).netloc
    logger.info("%s: gdown %s", desc, url)
    try:
        gdown.download(url, str(out), quiet=False, resume=True, use_cookies=drive, retries=retries,
                       timeout=(30.0, timeout))
    except (gdown.exceptions.FileURLRetrievalError, gdown.exceptions.DownloadError,
            requests.exceptions.RequestException, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FetchError(f"{desc}: gdown could not fetch {url} ({first}). Any bytes received are kept in "
                         f"{out.parent}: run the same command again to resume") from None
    if not out.is_file():
        raise FetchError(f"{desc}: gdown finished without writing {out}")


def copy_with_progress(src: Path, dst: Path, desc: str) -> None:
    """Copy ``src`` to ``dst`` in 1 MiB chunks with a progress bar."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fi, open(dst, "wb") as fo, _bar(src.stat().st_size, desc) as bar:
        for chunk in iter(lambda: fi.read(_CHUNK), b""):
            fo.write(chunk)
            bar.update(len(chunk))


# --------------------------------------------------------------------------------------- fetch


@dataclass
class Outcome:
    """What happened to one file."""

    name: str
    status: str  # ok | fetched | missing | failed | mismatch | unverified
    detail: str
    path: Path | None = None
    extra: list[str] = field(default_factory=list)


def _is_url(text: str) -> bool:
    return urllib.parse.urlsplit(text).scheme in ("http", "https")


def _mirror_source(mirror: str, name: str) -> tuple[str, str]:
    """``('file', path)`` or ``('http', url)`` of ``name`` in a mirror folder or URL."""
    if _is_url(mirror):
        return "http", mirror.rstrip("/") + "/" + urllib.parse.quote(name)
    folder = Path(urllib.parse.urlsplit(mirror).path if mirror.startswith("file://") else mirror).expanduser()
    return "file", str(folder / name)


def fetch_one(entry: WeightFile, dest: str | os.PathLike, mirror: str | None = None, retries: int = 3,
              timeout: float = 60.0, convert: bool = False) -> Outcome:
    """Make ``<dest>/<entry.name>`` present and verified (see the module docstring).

    Returns:
        An :class:`Outcome` with status ``ok`` (already there and verified) or ``fetched``.

    Raises:
        FetchError: no source, transfer failure (partial kept) or digest mismatch (file kept aside).
    """
    dest = Path(dest)
    final = dest / entry.name
    dest.mkdir(parents=True, exist_ok=True)
    extra: list[str] = []
    if final.is_file():
        done = _keep_if_verified(entry, final, dest, convert, extra)
        if done is not None:
            return done
    sources = _sources(entry, mirror, final)
    partial = dest / PARTIAL_DIR
    errors = []
    for kind, where in sources:
        try:
            staged = _transfer(kind, where, partial, entry.name, retries, timeout)
        except FetchError as e:
            errors.append(str(e))
            continue
        return _place(entry, staged, where, dest, convert, extra)
    raise FetchError("; ".join(errors) + (f". Note: {entry.note}" if entry.note else ""))


def _keep_if_verified(entry: WeightFile, final: Path, dest: Path, convert: bool, extra: list[str]) -> Outcome | None:
    """The ``ok`` outcome when the file in place passes verification; else None, after moving it aside
    (noted in ``extra``)."""
    v = verify(final, entry, read_digests(dest).get(entry.name))
    if v.ok:
        if v.needs_record:
            _record_digest(dest, entry, v.sha256 or "", final.stat().st_size, f"already in {dest}")
        if convert:
            extra += _maybe_convert(entry, final, dest)
        return Outcome(entry.name, "ok", f"already there; {v.detail}", final, extra)
    aside = _set_aside(final, v.sha256)
    logger.warning("%s: the file in place fails verification (%s); moved aside to %s and fetching it again",
                   entry.name, v.detail, aside)
    extra.append(f"the previous {final} failed verification ({v.detail}); kept as {aside}")
    return None


def _sources(entry: WeightFile, mirror: str | None, final: Path) -> list[tuple[str, str]]:
    """``(kind, where)`` to try in turn: the mirror, else the manifest's URLs; FetchError when there is none."""
    if mirror:
        sources = [_mirror_source(mirror, entry.name)]
    else:
        sources = [(entry.backend, u) for u in entry.urls]
    if not sources:
        raise FetchError(f"{entry.name}: no public download ({entry.note or 'no URL in the manifest'}). Put the file "
                         f"at {final} yourself, or fetch it from a copy with --mirror DIR_OR_URL")
    return sources


def _place(entry: WeightFile, staged: Path, where: str, dest: Path, convert: bool, extra: list[str]) -> Outcome:
    """Verify a staged download and move it to its real name (or set it aside and raise FetchError)."""
    final = dest / entry.name
    v = verify(staged, entry, read_digests(dest).get(entry.name))
    if not v.ok:
        aside = _set_aside(staged, v.sha256)
        raise FetchError(
            f"{entry.name}: the file from {where} fails verification: {v.detail}. It is kept aside as {aside} "
            f"(never under the real name). What to do: delete {aside} and run the command again (a transfer "
            f"error gives a different file next time); if it fails again, the source has changed: compare "
            f"with the manifest ({entry.digest_source}) before using it, or get the file from a trusted copy "
            "with --mirror")
    if final.exists():  # appeared meanwhile (another process): keep it, drop ours
        staged.unlink()
        return Outcome(entry.name, "ok", "placed meanwhile by another process", final, extra)
    os.replace(staged, final)
    with contextlib.suppress(OSError):
        (dest / PARTIAL_DIR).rmdir()
    if v.needs_record:
        _record_digest(dest, entry, v.sha256 or "", final.stat().st_size, where)
    if convert:
        extra += _maybe_convert(entry, final, dest)
    return Outcome(entry.name, "fetched", f"from {where}; {v.detail}", final, extra)


def _transfer(kind: str, where: str, partial: Path, name: str, retries: int, timeout: float) -> Path:
    if kind == "file":
        src = Path(where)
        if not src.is_file():
            raise FetchError(f"{name}: the mirror has no {src}")
        staged = partial / name
        copy_with_progress(src, staged, name)
        return staged
    if kind == "gdown":
        staged = partial / name
        gdown_download(where, staged, name, retries, timeout)
        return staged
    staged = partial / (name + ".part")
    http_download(where, staged, name, retries, timeout)
    return staged


def check_one(entry: WeightFile, dest: str | os.PathLike) -> Outcome:
    """Verify ``<dest>/<entry.name>`` without any network access and without changing anything."""
    dest = Path(dest)
    final = dest / entry.name
    cmd = f"python tools/fetch_weights.py --only {entry.name}" + ("" if dest == Path("pretrained") else
                                                                    f" --dest {dest}")
    if not final.is_file():
        return Outcome(entry.name, "missing", f"not in {dest}; fetch it: {cmd}", None)
    v = verify(final, entry, read_digests(dest).get(entry.name))
    if not v.ok:
        return Outcome(entry.name, "mismatch", f"{v.detail}; fetch it again: {cmd} (the bad file is moved aside "
                                               "first)", final)
    if v.needs_record:
        return Outcome(entry.name, "unverified", f"present; {v.detail.replace(' recorded now', '')} (not recorded: "
                                                 "python tools/fetch_weights.py records it)", final)
    return Outcome(entry.name, "ok", v.detail, final)


# ---------------------------------------------------------------------------------- conversion


def convert_openai_clip(src: str | os.PathLike, out: str | os.PathLike) -> int:
    """Write OpenAI's TorchScript CLIP archive as a plain safetensors state dict (atomically).

    The archive is opened with ``torch.jit.load`` (trusted OpenAI file) once; the output holds
    every tensor of its ``state_dict()`` (dtype kept) except the scalar attributes
    ``input_resolution``, ``context_length`` and ``vocab_size``, so it is read with
    ``safetensors`` and never needs ``torch.jit.load`` again.

    Returns:
        The number of tensors written.
    """
    sd = torch.jit.load(str(src), map_location="cpu").state_dict()
    tensors = {k: v.detach().contiguous() for k, v in sd.items()
               if torch.is_tensor(v) and k not in ("input_resolution", "context_length", "vocab_size")}
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"source": Path(src).name, "format": "pt"})
    os.replace(tmp, out)
    return len(tensors)


def _maybe_convert(entry: WeightFile, final: Path, dest: Path) -> list[str]:
    if not entry.convert_to:
        return []
    out = dest / entry.convert_to
    if out.is_file():
        return [f"{out} already there (delete it to convert again)"]
    n = convert_openai_clip(final, out)
    return [f"wrote {out} ({n} tensors); set dcac.clip_weights {out} to read it without torch.jit.load"]
