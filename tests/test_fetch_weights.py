"""tools/fetch_weights.py against a real HTTP server on 127.0.0.1 serving generated files.

The server answers ``Range`` requests (206 + Content-Range, ``If-Range`` on its ETag) and can cut
the connection in the middle of a file. Every socket connection made during these tests is recorded
and must go to loopback.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import socket
import threading
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import yaml

from dcac_plugin.cli.fetch_weights import main as fetch_main
from dcac_plugin.weights_fetch import (
    DIGESTS_FILE,
    MANIFEST,
    FetchError,
    ManifestError,
    fetch_one,
    load_manifest,
    select,
)

REPO = Path(__file__).resolve().parents[1]


class _Files(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, list[int]] = {}  # path -> byte offsets at which the next requests drop
        self.requests: list[tuple[str, str | None, str | None]] = []  # (path, Range, If-Range)
        self.no_range = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):  # noqa: N802 - http.server API
        srv: _Files = self.server
        path = self.path.split("?")[0]
        rng, if_range = self.headers.get("Range"), self.headers.get("If-Range")
        srv.requests.append((path, rng, if_range))
        body = srv.files.get(path)
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        start = 0
        if rng and not srv.no_range and (if_range is None or if_range == etag):
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.send_header("ETag", etag)
        self.end_headers()
        cuts = srv.cut.get(path)
        stop = cuts.pop(0) if cuts else None
        if stop is not None and stop > start:
            self.wfile.write(body[start:stop])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)  # drop the connection mid-file
            self.close_connection = True
            return
        self.wfile.write(body[start:])


@pytest.fixture
def connections(monkeypatch):
    """Record the address of every socket connection (on top of conftest's loopback-only guard)."""
    seen: list = []
    guarded = socket.socket.connect  # conftest's guard, already in place

    def record(self, address):
        seen.append(address)
        return guarded(self, address)

    monkeypatch.setattr(socket.socket, "connect", record)
    yield seen
    outside = [a for a in seen if not (isinstance(a, tuple) and str(a[0]).startswith("127."))]
    assert not outside, f"connections outside loopback: {outside}"


@pytest.fixture
def server(connections):
    srv = _Files()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _payload(n: int, seed: int) -> bytes:
    g = torch.Generator().manual_seed(seed)
    return bytes(torch.randint(0, 256, (n,), generator=g, dtype=torch.uint8).tolist())


def _checkpoint_bytes(tmp_path: Path, seed: int, rows: int = 64) -> bytes:
    """A real weights-only torch checkpoint (``rows`` x 3 KiB), as bytes."""
    torch.manual_seed(seed)
    p = tmp_path / f"ckpt{seed}.pth"
    torch.save({"conv.weight": torch.randn(rows, 3, 16, 16), "fc.bias": torch.randn(10)}, p)
    data = p.read_bytes()
    p.unlink()
    return data


def _manifest(tmp_path: Path, entries: list[dict]) -> Path:
    base = {"what": "test file", "group": "paper", "used_by": ["tests"], "backend": "http", "size": None,
            "sha256": None, "digest_source": "test"}
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump({"files": [{**base, **e} for e in entries]}))
    return path


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


# ------------------------------------------------------------------------------------- manifest


def test_manifest_names_every_weight_file_of_the_paper_and_baseline_configs():
    """Every file named by dcac.clip_weights / dcac.sd.weights / model.pretrained_path is in the manifest."""
    names = {e.name: e for e in load_manifest()}
    wanted = set()
    for cfg in [*REPO.glob("configs/dcac_*.yaml"), *REPO.glob("configs/clip_baseline_*.yaml"),
                *REPO.glob("configs/baselines/*.yaml")]:
        d = yaml.safe_load(cfg.read_text())
        for value in (d.get("dcac", {}).get("clip_weights"), d.get("dcac", {}).get("sd", {}).get("weights"),
                      d.get("model", {}).get("pretrained_path")):
            if value:
                assert value.startswith("pretrained/"), (cfg, value)
                wanted.add(value.split("/", 1)[1])
    assert wanted == {"ViT-B-16.pt", "v1-5-pruned.ckpt", "osnet_x1_0_imagenet.pth", "osnet_ain_x1_0_imagenet.pth",
                      "osnet_ibn_x1_0_imagenet.pth", "resnet50-19c8e357.pth"}
    assert wanted <= set(names) and all(not names[n].optional for n in wanted)
    assert {e.name for e in select(list(names.values()), None)} == wanted  # default set: exactly these
    # official digests where they exist; the OpenAI URL embeds its sha256
    clip = names["ViT-B-16.pt"]
    assert clip.urls[0].split("/")[-2] == clip.sha256
    assert names["v1-5-pruned.ckpt"].size == 7703807346
    assert names["resnet50-19c8e357.pth"].sha256_prefix == "19c8e357"
    for n in ("osnet_x1_0_imagenet.pth", "osnet_ain_x1_0_imagenet.pth", "osnet_ibn_x1_0_imagenet.pth"):
        assert names[n].backend == "gdown" and names[n].sha256 is None
        assert names[n].digest_source.startswith("no official digest")
    # the Google-Drive ids are torchreid's own
    import torchreid.reid.models.osnet as osnet
    import torchreid.reid.models.osnet_ain as osnet_ain

    assert names["osnet_x1_0_imagenet.pth"].urls[0] == osnet.pretrained_urls["osnet_x1_0"]
    assert names["osnet_ibn_x1_0_imagenet.pth"].urls[0] == osnet.pretrained_urls["osnet_ibn_x1_0"]
    assert names["osnet_ain_x1_0_imagenet.pth"].urls[0] == osnet_ain.pretrained_urls["osnet_ain_x1_0"]
    assert len([e for e in names.values() if e.group == "dcac-release"]) == 8


def test_list_shows_source_and_digest_of_every_file(capsys):
    assert fetch_main(["--list"]) == 0
    out = capsys.readouterr().out
    for e in load_manifest():
        assert f"{e.name}  [{e.group}" in out
    assert "sha256:  5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f" in out
    assert "sha256:  e1441589a6f3c5a53f5f54d0975a18a7feb7cdf0b0dee276dfc3331ae376a053" in out
    assert out.count("no official digest (recorded at first verified download)") == 3 + 8
    assert "drive.google.com/uc?id=1LaG1EJpHrxdAxKnSCJ_i0u-nbxSAeiFY (via gdown)" in out


def test_malformed_manifest_and_unknown_name(tmp_path):
    bad = tmp_path / "m.yaml"
    bad.write_text(yaml.safe_dump({"files": [{"name": "a.pth", "sha256": "xyz", "digest_source": "t"}]}))
    with pytest.raises(ManifestError, match="sha256 must be 64 lowercase hex"):
        load_manifest(bad)
    bad.write_text(yaml.safe_dump({"files": [{"name": "a.pth"}]}))
    with pytest.raises(ManifestError, match="digest_source"):
        load_manifest(bad)
    with pytest.raises(FetchError, match=r"--only 'nope\*' matches no file.*ViT-B-16.pt"):
        select(load_manifest(MANIFEST), ["nope*"])


# ------------------------------------------------------------------------------------- download


def test_download_verifies_and_places_the_file(server, tmp_path, capsys):
    body = _payload(300_000, 1)
    server.files["/w/a.bin"] = body
    man = _manifest(tmp_path, [{"name": "a.bin", "urls": [server.url + "/w/a.bin"], "sha256": _sha(body),
                                "size": len(body)}])
    dest = tmp_path / "pretrained"
    assert fetch_main(["--manifest", str(man), "--dest", str(dest)]) == 0
    assert (dest / "a.bin").read_bytes() == body
    assert sorted(p.name for p in dest.iterdir()) == ["a.bin"]  # no partial or sidecar left
    out = capsys.readouterr().out
    assert "a.bin  FETCHED" in out and "sha256 matches the official digest" in out
    # a second run finds the good file and makes no request; it is never rewritten
    mtime = (dest / "a.bin").stat().st_mtime_ns
    n = len(server.requests)
    assert fetch_main(["--manifest", str(man), "--dest", str(dest)]) == 0
    assert len(server.requests) == n and (dest / "a.bin").stat().st_mtime_ns == mtime
    assert "a.bin  OK" in capsys.readouterr().out


def test_resume_after_a_cut_connection(server, tmp_path):
    body = _payload(500_000, 2)
    server.files["/a.bin"] = body
    server.cut["/a.bin"] = [123_457]
    man = _manifest(tmp_path, [{"name": "a.bin", "urls": [server.url + "/a.bin"], "sha256": _sha(body)}])
    entry = load_manifest(man)[0]
    dest = tmp_path / "pretrained"
    with pytest.raises(FetchError, match=r"connection lost after 123,457 of 500,000 bytes.*run the same command "
                                         r"again to resume"):
        fetch_one(entry, dest, retries=0)
    part = dest / ".partial" / "a.bin.part"
    assert part.stat().st_size == 123_457 and not (dest / "a.bin").exists()
    assert fetch_one(entry, dest, retries=0).status == "fetched"
    assert (dest / "a.bin").read_bytes() == body
    etag = '"' + _sha(body)[:16] + '"'
    assert server.requests[-1] == ("/a.bin", "bytes=123457-", etag)  # only the rest was asked for
    assert not (dest / ".partial").exists()


def test_resume_within_one_call_and_a_changed_remote_file_is_not_spliced(server, tmp_path):
    body = _payload(400_000, 3)
    server.files["/a.bin"] = body
    server.cut["/a.bin"] = [100_000, 250_000]
    man = _manifest(tmp_path, [{"name": "a.bin", "urls": [server.url + "/a.bin"], "sha256": _sha(body)}])
    entry = load_manifest(man)[0]
    dest = tmp_path / "p"
    assert fetch_one(entry, dest, retries=3).status == "fetched"
    assert [r[1] for r in server.requests] == [None, "bytes=100000-", "bytes=250000-"]
    assert (dest / "a.bin").read_bytes() == body
    # a partial download, then the remote file changes: If-Range makes the server send it whole
    new = _payload(400_000, 4)
    server.files["/b.bin"] = body
    server.cut["/b.bin"] = [50_000]
    man2 = _manifest(tmp_path, [{"name": "b.bin", "urls": [server.url + "/b.bin"], "sha256": _sha(new)}])
    entry2 = load_manifest(man2)[0]
    with pytest.raises(FetchError):
        fetch_one(entry2, dest, retries=0)
    server.files["/b.bin"] = new
    assert fetch_one(entry2, dest, retries=0).status == "fetched"
    assert (dest / "b.bin").read_bytes() == new


def test_gdown_backend_downloads_and_resumes_a_plain_url(server, tmp_path):
    body = _checkpoint_bytes(tmp_path, 0, rows=900)  # 2.7 MB: gdown writes 512 KiB chunks
    server.files["/uc/osnet.pth"] = body
    server.cut["/uc/osnet.pth"] = [len(body) // 2]
    man = _manifest(tmp_path, [{"name": "osnet.pth", "backend": "gdown", "urls": [server.url + "/uc/osnet.pth"],
                                "sha256": None, "digest_source": "no official digest"}])
    entry = load_manifest(man)[0]
    dest = tmp_path / "pretrained"
    with pytest.raises(FetchError, match="gdown could not fetch.*run the same command again to resume"):
        fetch_one(entry, dest, retries=0)
    parts = list((dest / ".partial").glob("osnet.pth*.part"))
    kept = parts[0].stat().st_size
    assert len(parts) == 1 and 0 < kept < len(body)  # gdown's own partial file (whole chunks)
    out = fetch_one(entry, dest, retries=0)
    assert out.status == "fetched" and "no official digest; reads as a torch checkpoint" in out.detail
    assert (dest / "osnet.pth").read_bytes() == body
    assert any(r[1] == f"bytes={kept}-" for r in server.requests)  # resumed, not restarted
    # the digest of this first verified download is recorded, and later checks compare against it
    rec = json.loads((dest / DIGESTS_FILE).read_text())
    assert rec["osnet.pth"]["sha256"] == _sha(body) and rec["osnet.pth"]["size"] == len(body)


def test_checksum_mismatch_keeps_the_file_aside(server, tmp_path, capsys):
    good, evil = _payload(100_000, 5), _payload(100_000, 6)
    server.files["/a.bin"] = evil
    man = _manifest(tmp_path, [{"name": "a.bin", "urls": [server.url + "/a.bin"], "sha256": _sha(good)}])
    dest = tmp_path / "pretrained"
    assert fetch_main(["--manifest", str(man), "--dest", str(dest)]) == 1
    aside = dest / f"a.bin.mismatch-{_sha(evil)[:8]}"
    assert aside.read_bytes() == evil and not (dest / "a.bin").exists()
    out = capsys.readouterr().out
    assert "a.bin  FAILED" in out and f"kept aside as {aside} (never under the real name)" in out
    assert "delete" in out and "--mirror" in out
    # a bad file under the real name is moved aside first, then the good one is fetched
    (dest / "a.bin").write_bytes(evil[:10])
    server.files["/a.bin"] = good
    assert fetch_main(["--manifest", str(man), "--dest", str(dest)]) == 0
    assert (dest / "a.bin").read_bytes() == good
    assert (dest / f"a.bin.mismatch-{_sha(evil[:10])[:8]}").read_bytes() == evil[:10]


def test_prefix_digest_and_unreadable_file_without_official_digest(server, tmp_path):
    ckpt = _checkpoint_bytes(tmp_path, 1)
    server.files["/r.pth"] = ckpt
    server.files["/junk.pth"] = b"<html>not a checkpoint</html>"
    man = _manifest(tmp_path, [
        {"name": "r.pth", "urls": [server.url + "/r.pth"], "sha256_prefix": _sha(ckpt)[:8]},
        {"name": "bad-prefix.pth", "urls": [server.url + "/r.pth"], "sha256_prefix": "00000000"},
        {"name": "junk.pth", "urls": [server.url + "/junk.pth"]},
    ])
    entries = {e.name: e for e in load_manifest(man)}
    dest = tmp_path / "pretrained"
    assert "official sha256 prefix" in fetch_one(entries["r.pth"], dest).detail
    with pytest.raises(FetchError, match="does not start with the official prefix 00000000"):
        fetch_one(entries["bad-prefix.pth"], dest)
    with pytest.raises(FetchError, match="does not read as a weights-only torch checkpoint"):
        fetch_one(entries["junk.pth"], dest)
    assert not (dest / "junk.pth").exists() and list(dest.glob("junk.pth.mismatch-*"))


# --------------------------------------------------------------------------------------- mirror


def test_mirror_folder_touches_no_network(tmp_path, connections, capsys):
    body = _payload(50_000, 7)
    ckpt = _checkpoint_bytes(tmp_path, 2)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "a.bin").write_bytes(body)
    (mirror / "b.pth").write_bytes(ckpt)
    man = _manifest(tmp_path, [
        {"name": "a.bin", "urls": ["http://192.0.2.1/a.bin"], "sha256": _sha(body)},
        {"name": "b.pth", "backend": "gdown", "urls": ["https://drive.google.com/uc?id=x"]},
        {"name": "c.pth", "urls": [], "optional": True, "note": "not published"},
    ])
    dest = tmp_path / "pretrained"
    assert fetch_main(["--manifest", str(man), "--dest", str(dest), "--mirror", str(mirror)]) == 0
    assert (dest / "a.bin").read_bytes() == body and (dest / "b.pth").read_bytes() == ckpt
    assert connections == []
    # an optional file the mirror lacks: named, exit 1; without a mirror: "no public download"
    assert fetch_main(["--manifest", str(man), "--dest", str(dest), "--mirror", f"file://{mirror}",
                       "--only", "c.pth"]) == 1
    assert "the mirror has no" in capsys.readouterr().out
    assert fetch_main(["--manifest", str(man), "--dest", str(dest), "--only", "c.pth"]) == 1
    assert "no public download (not published)" in capsys.readouterr().out


def test_mirror_url(server, tmp_path):
    body = _payload(80_000, 8)
    server.files["/mirror/v1-5-pruned.ckpt"] = body
    man = _manifest(tmp_path, [{"name": "v1-5-pruned.ckpt", "urls": ["https://huggingface.co/x"],
                                "sha256": _sha(body)}])
    dest = tmp_path / "pretrained"
    assert fetch_main(["--manifest", str(man), "--dest", str(dest), "--mirror", server.url + "/mirror/"]) == 0
    assert (dest / "v1-5-pruned.ckpt").read_bytes() == body
    assert [r[0] for r in server.requests] == ["/mirror/v1-5-pruned.ckpt"]


# ---------------------------------------------------------------------------------------- check


def test_check_verifies_without_network_and_changes_nothing(tmp_path, monkeypatch, capsys):
    def no_socket(*a, **k):
        raise AssertionError("--check opened a socket")

    monkeypatch.setattr(socket.socket, "connect", no_socket)
    good, ckpt = _payload(20_000, 9), _checkpoint_bytes(tmp_path, 3)
    man = _manifest(tmp_path, [
        {"name": "good.bin", "urls": ["https://example.org/good.bin"], "sha256": _sha(good)},
        {"name": "bad.bin", "urls": ["https://example.org/bad.bin"], "sha256": _sha(good)},
        {"name": "rec.pth", "urls": ["https://example.org/rec.pth"]},
        {"name": "new.pth", "urls": ["https://example.org/new.pth"]},
        {"name": "gone.bin", "urls": ["https://example.org/gone.bin"], "sha256": _sha(good)},
    ])
    dest = tmp_path / "pretrained"
    dest.mkdir()
    (dest / "good.bin").write_bytes(good)
    (dest / "bad.bin").write_bytes(good[:-1] + b"x")
    (dest / "rec.pth").write_bytes(ckpt)
    (dest / "new.pth").write_bytes(ckpt)
    (dest / DIGESTS_FILE).write_text(json.dumps({"rec.pth": {"sha256": _sha(ckpt[:-1])}}))
    before = {p.name: p.read_bytes() for p in dest.iterdir()}
    assert fetch_main(["--manifest", str(man), "--dest", str(dest), "--check"]) == 1
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")}
    assert "OK" in lines["good.bin"] and "official digest" in lines["good.bin"]
    assert "MISMATCH" in lines["bad.bin"] and "--only bad.bin" in lines["bad.bin"]
    assert "MISMATCH" in lines["rec.pth"] and "recorded at first download" in lines["rec.pth"]
    assert "UNVERIFIED" in lines["new.pth"] and "no official digest" in lines["new.pth"]
    assert "MISSING" in lines["gone.bin"]
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == before  # nothing moved, nothing recorded
    assert fetch_main(["--manifest", str(man), "--dest", str(dest), "--check", "--only", "good.bin", "new.pth"]) == 0


# -------------------------------------------------------------------------------------- convert


def _openai_style_archive(path: Path) -> nn.Module:
    """A tiny TorchScript archive with the structure of OpenAI's ViT-B-16.pt (fp16, scalar attributes)."""
    from dcac_plugin.models.clip_reid import build_visual_tower

    torch.manual_seed(0)
    visual = build_visual_tower("tiny", image_size=(64, 64))

    class OpenAIStyle(nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = visual
            self.token_embedding = nn.Embedding(10, 8)
            self.logit_scale = nn.Parameter(torch.ones([]))
            self.register_buffer("input_resolution", torch.tensor(64))
            self.register_buffer("context_length", torch.tensor(77))
            self.register_buffer("vocab_size", torch.tensor(10))

        def forward(self, x):
            return x * self.logit_scale

    model = OpenAIStyle().half()
    torch.jit.script(model).save(str(path))
    return model


def test_convert_writes_a_plain_safetensors_state_dict(server, tmp_path):
    from safetensors.torch import load_file

    from dcac_plugin.models.weights import is_torchscript_archive, load_clip_visual_state_dict

    src = tmp_path / "src.pt"
    model = _openai_style_archive(src)
    body = src.read_bytes()
    server.files["/clip/ViT-B-16.pt"] = body
    man = _manifest(tmp_path, [{"name": "ViT-B-16.pt", "urls": [server.url + "/clip/ViT-B-16.pt"],
                                "sha256": _sha(body), "convert_to": "ViT-B-16.safetensors"}])
    dest = tmp_path / "pretrained"
    assert fetch_main(["--manifest", str(man), "--dest", str(dest), "--convert"]) == 0
    out = dest / "ViT-B-16.safetensors"
    assert is_torchscript_archive(dest / "ViT-B-16.pt") and not is_torchscript_archive(out)
    sd = load_file(str(out))
    assert "input_resolution" not in sd and "vocab_size" not in sd and "context_length" not in sd
    want = {k: v for k, v in model.state_dict().items() if k not in ("input_resolution", "context_length",
                                                                       "vocab_size")}
    assert set(sd) == set(want)
    for k, v in want.items():
        assert sd[k].dtype == torch.float16 and torch.equal(sd[k], v), k
    # the loaders read both to the same tensors: nothing needs torch.jit.load any more
    a, b = load_clip_visual_state_dict(dest / "ViT-B-16.pt"), load_clip_visual_state_dict(out)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    # a second --convert leaves the existing output alone
    mtime = out.stat().st_mtime_ns
    assert fetch_main(["--manifest", str(man), "--dest", str(dest), "--convert"]) == 0
    assert out.stat().st_mtime_ns == mtime


def test_cli_bad_input_exits_2(monkeypatch, capsys):
    from dcac_plugin.cli.fetch_weights import cli

    monkeypatch.setattr("sys.argv", ["fetch_weights.py", "--only", "nothing-like-this"])
    with pytest.raises(SystemExit) as exc:
        cli()
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("error: --only 'nothing-like-this' matches no file")
    assert "Traceback" not in err


def test_console_scripts_point_at_the_clis():
    import importlib

    text = (REPO / "setup.py").read_text()
    for script, target in (("dcac-fetch-weights", "dcac_plugin.cli.fetch_weights:cli"),
                           ("dcac-check-data", "dcac_plugin.cli.check_data:cli")):
        assert f'"{script}={target}"' in text
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func))
    assert "resources/*" in text  # the manifest ships inside the package
