"""Safety defaults: servers bind 127.0.0.1, `simassets sql` is read-only, models never run their own code.

Remote code (``auto_map`` in a model's config) and pickle checkpoints would execute code from the model
files; both are tested with payloads that would leave a marker file behind if they ever ran.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from simassets import cli
from simassets.core import models as m
from simassets.core.models import ModelRegistryError, ModelSpec
from simassets.core.paths import REPO_ROOT
from simassets.core.warehouse import Warehouse

WRITES = [
    "create table stolen as select 1 as x",
    "drop view benchmark_scores",
    "create or replace view benchmark_scores as select 1 as x",
    "create schema evil",
    "attach ':memory:' as other; create table other.t (x int)",
]


@pytest.fixture()
def warehouse_with_views(tiny_study) -> Warehouse:
    wh = Warehouse()
    row = pd.DataFrame([{"model": "m1", "benchmark": "b1", "category": "c", "language": "en", "n": 1, "acc": 1.0,
                         "acc_stderr": 0.0, "acc_norm": 1.0, "acc_norm_stderr": 0.0, "primary_metric": "acc",
                         "random_baseline": 0.5, "normalized_score": 100.0, "acc_ci_low": 0.21, "acc_ci_high": 1.0,
                         "acc_norm_ci_low": 0.21, "acc_norm_ci_high": 1.0, "model_fingerprint": "f", "params": "{}"}])
    wh.write_partition("benchmark_scores", "quick", {"model": "m1", "benchmark": "b1"}, row, "fp")
    assert wh.ensure_views() == "views created"
    return wh


@pytest.mark.parametrize("statement", WRITES)
def test_simassets_sql_is_read_only(statement, warehouse_with_views, capsys):
    db = warehouse_with_views.db_path
    before = db.read_bytes()
    assert cli.main(["sql", statement]) == 2
    err = capsys.readouterr().err
    assert "query failed" in err and "read-only" in err.lower(), err
    assert db.read_bytes() == before
    assert cli.main(["sql", "select model, acc from benchmark_scores", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"model": "m1", "acc": 1.0}]


def test_the_sql_session_does_not_lock_out_other_readers(warehouse_with_views):
    """`simassets sql` and the views are read-only; many readers may hold the file at once."""
    a = warehouse_with_views.connect_readonly()
    b = duckdb.connect(str(warehouse_with_views.db_path), read_only=True)
    try:
        assert a.execute("select count(*) from benchmark_scores").fetchone() == b.execute(
            "select count(*) from benchmark_scores").fetchone() == (1,)
    finally:
        a.close()
        b.close()


def test_ui_and_servers_bind_loopback_by_default():
    make = (REPO_ROOT / "Makefile").read_text()
    ui = re.search(r"^ui:.*?\n((?:\t.*\n)+)", make, re.M)
    assert ui and "simassets ui --host 127.0.0.1" in ui.group(1)
    from simassets import cli

    ui_cmd = cli.build_parser().parse_args(["ui"])  # `simassets ui` without --host binds loopback, and passes it on
    assert ui_cmd.host == "127.0.0.1"
    assert '"dev", "--host", args.host' in (REPO_ROOT / "simassets" / "cli.py").read_text()
    assert "host" not in (REPO_ROOT / "workspace.yaml").read_text()  # no code-server host override
    from dagster_webserver.cli import dagster_webserver

    host = next(p for p in dagster_webserver.params if p.name == "host")
    assert host.default == "127.0.0.1"  # `dg dev` without --host leaves the webserver's own default
    # nothing outside deploy/ (the cluster configuration, behind a ClusterIP service) binds every interface
    tops = [p for p in REPO_ROOT.iterdir() if p.name not in {".venv", ".git", "deploy", "data"}]
    files = [f for top in tops for f in ([top] if top.is_file() else top.rglob("*"))]
    offenders = [p for p in files if p.is_file() and p.suffix in {".py", ".yaml", ".yml", ".toml", ""}
                 and p.stat().st_size < 1 << 20 and "0.0.0.0" in p.read_text(errors="ignore")]
    assert offenders == [Path(__file__)] or offenders == [], offenders


def test_ui_names_the_virtual_environment_it_runs_in(monkeypatch, tmp_path, capsys):
    """`.venv/bin/simassets ui` from a shell that never activated .venv: dg dev gets the environment it runs in
    (without VIRTUAL_ENV, dg printed twice that the active environment does not match the project's)."""
    import os
    import signal
    import sys

    from simassets import runner
    from simassets.defs import liveness

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("VIRTUAL_ENV", "set")  # recorded, so the value _cmd_ui writes is undone after the test
    monkeypatch.delenv("VIRTUAL_ENV")
    monkeypatch.setattr(signal, "signal", lambda sig, handler: None)  # pytest keeps its own SIGINT handler
    monkeypatch.setattr(runner, "get_instance", lambda: None)
    monkeypatch.setattr(runner, "sync", lambda instance: [])
    monkeypatch.setattr(liveness, "fail_dead_runs", lambda instance: [])
    monkeypatch.chdir(tmp_path)  # _cmd_ui changes directory: restored after the test
    launched = {}
    monkeypatch.setattr(os, "execv",
                        lambda exe, argv: launched.update(argv=argv, venv=os.environ.get("VIRTUAL_ENV")))
    assert cli.main(["ui", "--port", "3999"]) == 0
    assert launched["argv"][1:] == ["dev", "--host", "127.0.0.1", "--port", "3999"]
    assert launched["venv"] == (sys.prefix if sys.prefix != sys.base_prefix else None)
    assert "UI on http://127.0.0.1:3999" in capsys.readouterr().out


class _Boom:
    """Unpickling this writes a marker file: proof that code in a checkpoint ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path(self.marker).write_text, ("pwned",))


def test_pickle_checkpoints_are_refused_and_never_unpickled(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SIMASSETS_HOME", str(tmp_path / "home"))
    marker = tmp_path / "pickle-ran"
    d = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, d)
    (d / "model.safetensors").unlink()
    (d / "pytorch_model.bin").write_bytes(pickle.dumps(_Boom(str(marker))))
    with pytest.raises(ModelRegistryError, match=r"only pickle checkpoints \(pytorch_model.bin\).*arbitrary code"):
        m.load_causal_lm(ModelSpec(id="pickled", kind="local", path=str(d)))
    assert not marker.exists()


def test_model_remote_code_is_never_run(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SIMASSETS_HOME", str(tmp_path / "home"))
    marker = tmp_path / "remote-code-ran"
    d = tmp_path / "custom"
    shutil.copytree(tiny_model_dir, d)
    config = json.loads((d / "config.json").read_text())
    config.update(model_type="evil", architectures=["EvilForCausalLM"],
                  auto_map={"AutoConfig": "modeling_evil.EvilConfig", "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"})
    (d / "config.json").write_text(json.dumps(config))
    (d / "modeling_evil.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('pwned')\n")
    m.clear_model_cache()
    with pytest.raises(ModelRegistryError) as exc:
        m.load_causal_lm(ModelSpec(id="custom", kind="local", path=str(d)))
    assert "model 'custom'" in str(exc.value) and "trust_remote_code" in str(exc.value)
    assert not marker.exists()
