"""`vla-ros bench inference` end to end on tiny models of the same architectures."""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("torch", reason="the inference benchmark runs torch policies")
pytest.importorskip("transformers", minversion="5.4", reason="the pi0 model needs transformers>=5.4")
pytest.importorskip("matplotlib", reason="the benchmark draws a plot")

from vla_ros.bench.inference import MODELS, parse_models  # noqa: E402
from vla_ros.cli.main import main  # noqa: E402
from vla_ros.core.errors import ConfigError  # noqa: E402

REPEATS = 2


def test_tiny_run_writes_json_and_plot(tmp_path, capsys):
    out = tmp_path / "inference.json"
    models = ",".join(MODELS)
    assert main(["bench", "inference", "--tiny", "--models", models, "--repeats", str(REPEATS), "--device", "cpu",
                 "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results == json.loads(capsys.readouterr().out)  # printed and written alike
    assert (results["benchmark"], results["device"], results["dtype"], results["tiny"]) == (
        "inference", "cpu", "float32", True)
    assert "warm-up" in results["load_time_includes"]
    assert [m["model"] for m in results["models"]] == list(MODELS)
    for model in results["models"]:
        timing = model["chunk_ms"]
        assert timing["count"] == REPEATS
        assert 0 < timing["p50"] <= timing["p90"] <= timing["max"]
        assert model["load_time_s"] > 0 and model["parameters"] > 0
        assert model["chunk_size"] == 50 and model["cameras"] == len(MODELS[model["model"]].camera_keys)
        assert model["actions_per_s_at_p50"] == pytest.approx(50 / (timing["p50"] / 1e3), rel=1e-3, abs=0.006)
    assert (tmp_path / "inference.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_model_names_the_choices():
    with pytest.raises(ConfigError, match="--models: unknown value 'pi00'.*Did you mean 'pi0'"):
        parse_models("pi00")
