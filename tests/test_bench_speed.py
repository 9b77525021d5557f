"""`e2former bench speed`: the reduced run writes well-formed JSON and a plot; the analysis
(ratios, exponents, targets) is computed from the rows of the same file. No timing thresholds."""

import json
import math

import pytest

from openmmml_e2former.bench import speed
from openmmml_e2former.cli import main as cli_main


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The CI smoke run restricted to the 100-atom systems (a few subprocesses, ~1 min)."""
    out = tmp_path_factory.mktemp("bench") / "speed.json"
    code = cli_main(
        [
            "bench",
            "speed",
            "--quick",
            "--sizes",
            "100",
            "--no-compile",
            "--threads",
            "2",
            "--timeout-per-case",
            "120",
            "--budget-s",
            "150",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    return out, json.loads(out.read_text())


def test_smoke_run_json_is_well_formed(smoke):
    path, data = smoke
    for key in [
        "machine",
        "versions",
        "threads",
        "load_average_start",
        "load_average_end",
        "date",
        "rows",
        "ratios",
        "exponents",
        "metrics",
        "targets",
        "mace_off23",
    ]:
        assert key in data, key
    assert data["threads"] == 2 and data["device"] == "cpu" and data["quick"] is True
    assert {"hostname", "cores"} <= set(data["machine"])
    assert {"python", "torch", "openmm", "openmmtorch", "openmmml", "mace", "git_commit"} <= set(
        data["versions"]
    )
    assert len(data["load_average_start"]) == 3 and len(data["load_average_end"]) == 3
    ids = [row["id"] for row in data["rows"]]
    assert len(ids) == len(set(ids)) == len(speed.plan("cpu", quick=True, sizes=[100]))
    for row in data["rows"]:
        assert isinstance(row["status"], str) and row["status"], row
        assert row["id"] == speed.case_id(row)
        if row["status"] != "ok":
            continue
        if row["kind"] == "model":
            times = row["times_s"]
            assert row["median_s"] > 0 and times and all(t > 0 for t in times)
            assert math.isclose(
                row["median_s"],
                sorted(times)[len(times) // 2]
                if len(times) % 2
                else sum(sorted(times)[len(times) // 2 - 1 : len(times) // 2 + 1]) / 2,
            )
        else:
            assert row["ms_per_step"] > 0 and all(t > 0 for t in row["block_ms_per_step"])
            assert math.isclose(row["ns_per_day"], 86.4 / row["ms_per_step"])
        assert row["peak_rss_mib"] > 0
    # the pure-MM ceiling needs nothing but OpenMM: it must run
    amber = [r for r in data["rows"] if r["model"] == "amber14"]
    assert amber and amber[0]["status"] == "ok"
    mace = [r for r in data["rows"] if r["model"] == "mace-off23"]
    assert len(mace) == 1  # one MACE case: measured, or skipped with a reason
    assert path.with_suffix(".png").exists()


def test_smoke_run_ratios_and_targets_come_from_its_rows(smoke):
    _, data = smoke
    rows = {row["id"]: row for row in data["rows"]}
    for ratio in data["ratios"]:
        num, den = rows[ratio["numerator"]], rows[ratio["denominator"]]
        key = "median_s" if num["kind"] == "model" else "ms_per_step"
        assert math.isclose(ratio["value"], num[key] / den[key], rel_tol=1e-12)
    lsr, local = (rows.get(f"model/{m}-small/float32/cpu/100") for m in ("e2former-lsr", "e2former"))
    if lsr and local and lsr["status"] == local["status"] == "ok":
        (ratio,) = [r for r in data["ratios"] if r["name"] == "lsr_over_local.small" and r["atoms"] == 100]
        assert math.isclose(ratio["value"], lsr["median_s"] / local["median_s"])
    assert [t["target"] for t in data["targets"]] == [t.name for t in speed.TARGETS]
    for target in data["targets"]:
        assert target["met"] in (True, False, None) and isinstance(target["status"], str)
        if target["measured"] is None:
            assert target["met"] is not True


def _row(model, preset, atoms, median, device="cpu", **extra):
    case = speed.model_case(model, preset, atoms, device)
    return {
        "id": speed.case_id(case),
        **case,
        "status": "ok",
        "n_atoms": atoms,
        "median_s": median,
        "times_s": [median],
        "peak_rss_mib": 1024.0 + atoms,
        "rss_after_imports_mib": 500.0,
        **extra,
    }


def test_ratios_metrics_and_targets_from_synthetic_rows():
    rows = [
        _row("e2former-lsr", "small", 582, 0.2),
        _row("mace-off23", "small", 582, 0.5),
        _row("e2former-lsr", "paper", 582, 3.0),
        _row("mace-off23", "medium", 582, 2.0),
        _row("e2former-lsr", "small", 2000, 1.3),
        _row("e2former", "small", 2000, 1.0),
        _row("mace-off23", "small", 2000, 2.0),
        # compile + recompute comes first: the compiled ratios must not take it for plain compile
        {
            **_row("e2former-lsr", "small", 2000, 1.2, peak_rss_mib=2048.0),
            "compile": True,
            "recompute": True,
            "id": "lsr-compiled-recompute",
        },
        # a release case under another allocator released nothing: it must not count
        {**_row("e2former-lsr", "small", 2000, 9.0), "release_memory": True, "host_memory": "default"},
        {
            **_row("e2former-lsr", "small", 2000, 0.9, peak_rss_mib=3584.0),
            "compile": True,
            "id": "lsr-compiled",
        },
        {**_row("e2former", "small", 2000, 0.6), "compile": True, "id": "local-compiled"},
        {
            **_row("e2former-lsr", "paper", 2000, 0.0),
            "status": "out of memory: RuntimeError: x",
            "times_s": [],
        },
    ]
    values = {(r["name"], r["atoms"]): r["value"] for r in speed.ratios(rows)}
    assert math.isclose(values[("lsr_small_over_mace_small", 582)], 0.4)
    assert math.isclose(values[("paper_over_mace_medium", 582)], 1.5)
    assert math.isclose(values[("lsr_over_local.small", 2000)], 1.3)
    # compiled cases pair with compiled cases only; the MACE peer stays eager
    assert math.isclose(values[("lsr_over_local.small_compiled", 2000)], 1.5)
    assert math.isclose(values[("lsr_small_compiled_over_mace_small", 2000)], 0.45)
    assert math.isclose(values[("compiled_over_eager.small_lsr", 2000)], 0.9 / 1.3)
    met = {t["metric"]: t for t in speed.targets(rows)}
    assert met["cpu.582.lsr_small_over_mace_small"]["met"] is True
    assert met["cpu.582.paper_over_mace_medium"]["met"] is False
    assert met["cpu.2000.lsr_over_local.small"]["met"] is True  # 1.3 <= 1.3
    assert met["cpu.2000.paper.peak_rss_gib"]["met"] is False  # ran out of memory
    assert met["cpu.2000.lsr_small_over_mace_small"]["met"] is False  # 0.65
    assert met["cpu.2000.lsr_small_compiled_over_mace_small"]["met"] is True  # 0.45
    assert met["cpu.2000.lsr_over_local.small_compiled"]["met"] is False  # 1.5
    assert met["cpu.2000.small.peak_rss_gib_recompute"]["met"] is None  # not measured
    assert met["cpu.2000.small.peak_rss_gib_compile"]["measured"] == 3.5
    assert met["cpu.2000.small.peak_rss_gib_compile_recompute"]["measured"] == 2.0
    assert "cpu.2000.small.peak_rss_gib_release" not in speed.metrics(rows)  # released nothing
    assert ("release_over_plain.small_lsr", 2000) not in values
    assert met["gpu.mlmm.protein.small.ms_per_step"]["met"] is None


def test_exponent_fit_recovers_a_power_law():
    rows = [
        _row(
            "e2former-lsr",
            "small",
            n,
            1e-4 * n**1.2,
            device="cuda",
            periodic=True,
            gpu_max_allocated_mib=0.01 * n,
        )
        for n in (8867, 17734, 35468)
    ]
    (fit,) = speed.exponents(rows)
    assert math.isclose(fit["time_exponent"], 1.2, rel_tol=1e-9)
    assert math.isclose(fit["memory_exponent"], 1.0, rel_tol=1e-9)
    measured = speed.metrics(rows)
    assert math.isclose(measured["gpu.scaling.time_exponent"]["value"], 1.2, rel_tol=1e-9)
    assert measured["gpu.scaling.memory_exponent"]["status"] == "ok"


def test_plans_put_headline_cases_first_and_filters_select():
    gpu = [speed.case_id(c) for c in speed.plan("cuda")]
    assert gpu[0] == "openmm/e2former-lsr-small/float32/cuda/582/ml=protein/torchforce+graphs"
    assert gpu.index("openmm/amber14/float32/cuda/8867/ml=mm/-") < gpu.index(
        "model/e2former-lsr-small/float32/cuda/582"
    )
    assert any(i.endswith("/35468") for i in gpu) and len(gpu) == len(set(gpu))
    cpu = speed.plan("cpu")
    assert [c["atoms"] for c in cpu[:5]] == [582] * 5
    picked = speed.select(cpu, ["openmm/*"])
    assert picked and all(c["kind"] == "openmm" for c in picked)
    assert all(c["atoms"] == 100 or c["model"] == "amber14" for c in speed.plan("cpu", sizes=[100]))


def test_cli_lists_cases(capsys):
    assert cli_main(["bench", "speed", "--device", "cpu", "--quick", "--list"]) == 0
    listed = capsys.readouterr().out.split()
    assert listed == [speed.case_id(c) for c in speed.plan("cpu", quick=True)]
