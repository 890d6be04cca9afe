"""Ranked lists: hand-checked lists and AP, the pictures' borders, test.visrank in the engines, the CLI."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny
from PIL import Image

from dcac_plugin.cli import visrank as visrank_cli
from dcac_plugin.cli.train import main as train_main
from dcac_plugin.config import ConfigError
from dcac_plugin.evaluation import evaluate_features
from dcac_plugin.inference.visrank import (
    BORDER,
    GREEN,
    QUERY_EXTRA_SPACING,
    RED,
    draw_ranked_list,
    ranked_lists,
    select_queries,
)
from dcac_plugin.runner import load_config

ROOT = Path(__file__).resolve().parents[1]
TINY = tiny.TINY + ["train.print_freq", "1", "train.max_epoch", "1"]


def _hand_case():
    # 1-D features: distance = squared difference. Query 0 (pid 1, cam 0) at 0.0.
    qf = torch.tensor([[0.0], [10.0]])
    gf = torch.tensor([[1.0], [0.5], [2.0], [3.0], [0.2], [10.1]])
    g_pids = [1, 2, 1, 3, 1, 2]
    g_cams = [1, 0, 0, 1, 0, 1]
    # query 0: nearest gallery order 4 (0.2, pid 1 cam 0: same cam -> removed), 1 (0.5), 0 (1.0, match),
    # 2 (2.0, pid 1 cam 0 -> removed), 3 (3.0), 5
    return qf, gf, [1, 2], g_pids, [0, 0], g_cams


def test_ranked_lists_hand_checked():
    qf, gf, q_pids, g_pids, q_cams, g_cams = _hand_case()
    r = ranked_lists(qf, gf, q_pids, g_pids, q_cams, g_cams, topk=3)
    assert r.index[0].tolist() == [1, 0, 3]
    assert r.match[0].tolist() == [False, True, False]
    assert r.distance[0].tolist() == pytest.approx([0.25, 1.0, 9.0])
    assert r.first_match[0] == 2
    assert r.ap[0] == pytest.approx(50.0)  # one positive at rank 2 of the kept list
    # query 1 (pid 2, cam 0): gallery 5 (pid 2, cam 1) is nearest
    assert r.index[1, 0] == 5 and r.match[1, 0] and r.ap[1] == pytest.approx(100.0) and r.first_match[1] == 1
    # mean AP equals the evaluator's mAP
    m = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams)
    assert np.nanmean(r.ap) == pytest.approx(m["mAP"])
    # a topk longer than what is left pads with -1 / NaN
    r = ranked_lists(qf, gf, q_pids, g_pids, q_cams, g_cams, topk=6)
    assert r.index[0].tolist() == [1, 0, 3, 5, -1, -1] and np.isnan(r.distance[0, 4])


def test_ranked_lists_match_the_evaluator_on_random_data():
    g = torch.Generator().manual_seed(0)
    qf, gf = torch.randn(30, 8, generator=g), torch.randn(80, 8, generator=g)
    q_pids, g_pids = torch.randint(0, 10, (30,), generator=g), torch.randint(0, 10, (80,), generator=g)
    q_cams, g_cams = torch.randint(0, 3, (30,), generator=g), torch.randint(0, 3, (80,), generator=g)
    for kw in ({"metric": "euclidean", "normalize": True}, {"metric": "cosine"},
               {"metric": "euclidean", "normalize": True, "rerank": True, "k1": 5, "k2": 3, "lambda_value": 0.3}):
        r = ranked_lists(qf, gf, q_pids, g_pids, q_cams, g_cams, 5, **kw)
        m = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, **kw)
        assert np.nanmean(r.ap) == pytest.approx(m["mAP"], abs=1e-6)
        valid = ~np.isnan(r.ap)
        assert 100.0 * np.mean(r.first_match[valid] == 1) == pytest.approx(m["rank1"], abs=1e-4)
        for i in range(30):  # no same-identity same-camera image in any list
            idx = r.index[i][r.index[i] >= 0]
            assert not ((g_pids[idx] == q_pids[i]) & (g_cams[idx] == q_cams[i])).any()


def test_select_queries_orders():
    qf, gf, q_pids, g_pids, q_cams, g_cams = _hand_case()
    r = ranked_lists(qf, gf, q_pids, g_pids, q_cams, g_cams, topk=3)
    assert select_queries(r, 2, "worst") == [0, 1]
    assert select_queries(r, 2, "best") == [1, 0]
    assert select_queries(r, 1, "best") == [1]
    assert sorted(select_queries(r, 5, "random", seed=3)) == [0, 1]
    with pytest.raises(ValueError, match="order"):
        select_queries(r, 1, "middle")


def test_picture_borders(tmp_path):
    paths = []
    for i, c in enumerate([(200, 200, 200), (50, 50, 50), (120, 10, 10)]):
        p = tmp_path / f"{i}.png"
        Image.new("RGB", (30, 60), c).save(p)
        paths.append(str(p))
    img = draw_ranked_list(paths[0], paths[1:], [True, False], [0.1, 0.2], size=(40, 20))
    cell_w = 20 + 2 * BORDER
    assert img.size == (3 * cell_w + QUERY_EXTRA_SPACING + 10, 40 + 2 * BORDER + 16)
    assert img.getpixel((1, 1)) == (0, 0, 0)  # query: black border
    assert img.getpixel((BORDER + 5, BORDER + 5)) == (200, 200, 200)
    x1 = cell_w + QUERY_EXTRA_SPACING
    assert img.getpixel((x1 + 1, 1)) == GREEN and img.getpixel((x1 + BORDER + 3, BORDER + 3)) == (50, 50, 50)
    x2 = x1 + cell_w + 10
    assert img.getpixel((x2 + 1, 1)) == RED


def test_visrank_needs_a_positive_topk():
    with pytest.raises(ConfigError, match="visrank_topk"):
        load_config(ROOT / "configs/demo/clip_tiny.yaml", ["test.visrank", "True", "test.visrank_topk", "0"])
    assert load_config(None, ["test.visrank", "True"]).test.visrank is True


@pytest.fixture(scope="module")
def visrank_run(synthetic_tiny_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("vr") / "clip"
    rec = train_main(["--config-file", str(ROOT / "configs/demo/clip_tiny.yaml"), "data.root",
                      str(synthetic_tiny_root), "data.save_dir", str(out), *TINY, "data.targets",
                      "msmt17,market1501", "test.visrank", "True", "test.visrank_topk", "4"])
    return out, rec


def _check_page(index: Path) -> list[str]:
    text = index.read_text()
    assert "http" not in text and "<script" not in text
    srcs = re.findall(r'<img src="([^"]+)"', text)
    assert srcs and all("/" not in s and (index.parent / s).is_file() for s in srcs)
    return srcs


def test_engine_writes_ranked_lists_of_every_query(visrank_run):
    out, rec = visrank_run
    from dcac_plugin.data.manager import test_split as split_of

    cfg = load_config(out / "config.yaml")
    for target in ("msmt17", "market1501"):
        d = out / "visrank" / target
        query, _ = split_of(cfg, target)
        pngs = sorted(d.glob("*.png"))
        assert len(pngs) == len(query)
        assert _check_page(d / "index.html") == [p.name for p in pngs]
        with Image.open(pngs[0]) as im:
            assert im.size == (5 * (128 + 2 * BORDER) + QUERY_EXTRA_SPACING + 3 * 10, 256 + 2 * BORDER + 16)
        assert f"{rec['results'][target]['mAP']:.1f}" in (d / "index.html").read_text()


def test_torchreid_engine_writes_ranked_lists(synthetic_tiny_root, tmp_path):
    out = tmp_path / "osnet"
    train_main(["--config-file", str(ROOT / "configs/demo/osnet.yaml"), "data.root", str(synthetic_tiny_root),
                "data.save_dir", str(out), *TINY, "test.visrank", "True", "test.visrank_topk", "3"])
    assert len(list((out / "visrank" / "msmt17").glob("*.png"))) > 0
    _check_page(out / "visrank" / "msmt17" / "index.html")


def test_visrank_cli_worst_first(visrank_run, tmp_path, capsys):
    out, rec = visrank_run
    res = visrank_cli.main(["--run-dir", str(out), "--target", "market1501", "--topk", "3", "--num-queries", "4",
                            "--order", "worst", "--output", str(tmp_path / "v")])
    assert res["mAP"] == pytest.approx(rec["results"]["market1501"]["mAP"], abs=1e-4)
    srcs = _check_page(tmp_path / "v" / "index.html")
    assert len(srcs) == 4
    aps = [float(a) for a in re.findall(r"</td><td>([0-9.]+)</td><td class=", (tmp_path / "v" / "index.html")
                                        .read_text())]
    assert aps == sorted(aps) and len(aps) == 4
    assert "wrote 4 ranked lists" in capsys.readouterr().out
    best = visrank_cli.main(["--run-dir", str(out), "--target", "market1501", "--num-queries", "2", "--order",
                             "best", "--output", str(tmp_path / "b")])
    assert best["queries"] != res["queries"][:2]


def test_visrank_cli_unknown_target_lists_the_evaluated_ones(visrank_run, tmp_path):
    out, _ = visrank_run
    with pytest.raises(ValueError, match=r"'dukemtmcreid' was not evaluated.*market1501, msmt17"):
        visrank_cli.main(["--run-dir", str(out), "--target", "dukemtmcreid", "--output", str(tmp_path / "x")])
    (tmp_path / "norun").mkdir()
    with pytest.raises(FileNotFoundError, match="results.json"):
        visrank_cli.main(["--run-dir", str(tmp_path / "norun"), "--target", "msmt17"])
    rec = json.loads((out / "results.json").read_text())
    assert set(rec["results"]) == {"msmt17", "market1501"}


_PROBE_PAGE = """<!DOCTYPE html><html><body><iframe id="f" src="{src}" width="1200" height="800"></iframe>
<script>
document.getElementById("f").addEventListener("load", function () {{
  var doc = this.contentDocument, imgs = Array.prototype.slice.call(doc.images);
  var ok = imgs.filter(function (im) {{ return im.complete && im.naturalWidth > 0; }});
  var out = document.createElement("pre");
  out.id = "result";
  out.textContent = JSON.stringify({{title: doc.title, images: imgs.length, decoded: ok.length,
    widths: ok.map(function (im) {{ return im.naturalWidth; }})}});
  document.body.appendChild(out);
}});
</script></body></html>"""


@pytest.mark.slow
def test_ranked_list_page_renders_in_headless_chromium(visrank_run, tmp_path):
    """The ranked-list page as a browser sees it: every picture it shows loads and decodes (the page is
    opened in an iframe of a probe page that counts the decoded images; file:// access allowed)."""
    import shutil
    import subprocess

    from components import unavailable

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        unavailable("chromium", "chromium not on PATH (Debian/Ubuntu package: chromium; `make test` installs "
                    "it when it runs as root with apt-get)")
    out, _ = visrank_run
    index = out / "visrank" / "market1501" / "index.html"
    n_png = len(list(index.parent.glob("*.png")))
    probe = tmp_path / "probe.html"
    probe.write_text(_PROBE_PAGE.format(src=index.resolve().as_uri()))
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--allow-file-access-from-files",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = re.search(r'<pre id="result">([^<]+)</pre>', proc.stdout)
    assert m, proc.stdout[-2000:]
    got = json.loads(m.group(1).replace("&quot;", '"'))
    assert got["images"] == n_png > 0 and got["decoded"] == n_png, got
    with Image.open(sorted(index.parent.glob("*.png"))[0]) as im:
        assert set(got["widths"]) == {im.size[0]}
