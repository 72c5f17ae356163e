"""What a new user meets first, as the README promises it: a hub id fails in seconds without a
network, set-password works without a terminal, a run without captions says how to give them, the
own-study helpers (tiny models, simulated ratings of a manifest) do what they say."""

from __future__ import annotations

import http.server
import io
import socket
import threading
import time

import pandas as pd
import pytest

from annotate.__main__ import main as annotate_main
from cmc_common import hub
from generate.__main__ import main as generate_main
from mos.simulate import main as simulate_main


@pytest.fixture
def silent_endpoint(monkeypatch):
    """A hub endpoint that accepts connections and never answers (a black-holed network), set
    where huggingface_hub reads it; the probe's verdict and the offline flag restored after."""
    import huggingface_hub.constants as constants

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    url = f"http://127.0.0.1:{server.getsockname()[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 10)  # the library's default
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hub, "_probed", None)
    yield url
    server.close()


def test_an_unreachable_hub_switches_to_offline_in_seconds(silent_endpoint, capsys):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    started = time.monotonic()
    assert hub.offline_unless_reachable(timeout=1.0) is True
    with pytest.raises(LocalEntryNotFoundError):  # not cached: refused at once, no request
        hf_hub_download("nobody/no-such-model", "model_index.json")
    assert time.monotonic() - started < 8  # one etag wait alone would be 10 s
    assert "does not answer" in capsys.readouterr().err
    assert hub.offline_unless_reachable() is True  # probed once per process


def test_a_hub_that_answers_is_left_online(monkeypatch):
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):  # noqa: N802 — http.server's hook
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        import huggingface_hub.constants as constants

        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(hub, "_probed", None)
        assert hub.offline_unless_reachable(timeout=5.0) is False
    finally:
        server.shutdown()


def test_only_hub_ids_are_probed(tmp_path):
    assert hub.is_hub_id("stabilityai/stable-diffusion-xl-base-1.0")
    assert not hub.is_hub_id(str(tmp_path))
    assert not hub.is_hub_id("./weights/sd") and not hub.is_hub_id("weights/tiny/sd/unet")
    assert not hub.is_hub_id("")


def test_set_password_without_a_terminal_says_to_use_stdin(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert annotate_main(["--instance", str(tmp_path), "set-password"]) == 2
    err = capsys.readouterr().err
    assert "--stdin" in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "admin_password_hash").exists()
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough password\n"))
    assert annotate_main(["--instance", str(tmp_path), "set-password", "--stdin"]) == 0


def test_a_run_that_needs_captions_says_how_to_give_them(tmp_path, capsys):
    from PIL import Image

    refs = tmp_path / "refs"
    refs.mkdir()
    Image.new("RGB", (64, 64), "gray").save(refs / "a.png")
    plan = tmp_path / "plan.csv"
    assert generate_main(["plan", "--references", str(refs), "--out", str(plan), "--preset",
                          "benchmark", "--models", "SD15"]) == 0  # fmt: skip
    capsys.readouterr()
    assert generate_main(["run", str(plan), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("generate: error: ") and "--captions" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_tiny_models_make_a_models_toml_that_loads(tmp_path, capsys):
    from generate.registry import load_registry

    assert generate_main(["tiny-models", str(tmp_path / "w")]) == 0
    registry = load_registry(tmp_path / "w" / "models.toml")
    for name in ("SD15", "RealVis"):
        assert (tmp_path / "w" / registry[name].weights / "model_index.json").is_file()
    assert "--models-config" in capsys.readouterr().out
    (tmp_path / "file").write_text("")
    assert generate_main(["tiny-models", str(tmp_path / "file")]) == 2


def test_simulated_ratings_of_a_manifest_name_its_images(tmp_path, capsys):
    from annotate.demo import build_demo

    manifest = build_demo(tmp_path / "study")
    out = tmp_path / "sim" / "ratings.csv"
    assert simulate_main(["--manifest", str(manifest), "--out", str(out), "--viewers", "6",
                          "--bad-viewers", "1"]) == 0  # fmt: skip
    ratings = pd.read_csv(out)
    frame = pd.read_csv(manifest)
    assert set(ratings["stimulus"]) == set(frame["id"])
    assert ratings.groupby("stimulus")["distorted_path"].nunique().eq(1).all()
    assert ratings["viewer"].nunique() == 6
    with pytest.raises(SystemExit) as stop:
        simulate_main(["--manifest", str(tmp_path / "none.csv"), "--out", str(tmp_path / "x.csv")])
    assert stop.value.code == 2 and "no such file" in capsys.readouterr().err


def test_a_metric_that_cannot_be_built_names_the_callers_options(monkeypatch):
    """compare names a checkpoint as --metric NAME:FILE (it has no --weights), and nobody is told
    to pass the --no-pretrained they already gave."""
    from train_iqa import model

    def offline(*args, **kwargs):
        raise OSError("cannot download")

    monkeypatch.setattr(model, "_create_metric", offline)
    with pytest.raises(model.MetricError) as compare_style:
        model.create("lpips", True, None, "cpu", False, weights_option="--metric lpips:FILE")
    assert "--metric lpips:FILE" in str(compare_style.value) and "--weights" not in str(
        compare_style.value
    )
    assert "--no-pretrained" in str(compare_style.value)
    with pytest.raises(model.MetricError) as at_random:
        model.create("lpips", False, None, "cpu", True)
    assert "--no-pretrained" not in str(at_random.value)
    assert "even at random" in str(at_random.value)
