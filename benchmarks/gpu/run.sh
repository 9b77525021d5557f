#!/usr/bin/env bash
# GPU checks and speed benchmark of openmmml_e2former on a lent GPU machine (the workplace's
# `device` tool; nvidia-h200: Python 3.12, torch 2.11+cu130, no OpenMM, no network).
# benchmarks/gpu/README.md says how to call it and where its results go.
#
#   bash benchmarks/gpu/run.sh                  on the device, from the repo root, $OUT set,
#                                               `.whl` carried (see README.md)
#   DRY_RUN=1 bash benchmarks/gpu/run.sh        here, on the CPU: the same logic with .venv/bin/python,
#                                               no wheel install, speed harness on the CPU
#   bash benchmarks/gpu/run.sh --make-wheels    here: download and slim the wheels into .whl/
#                                               (benchmarks/gpu/wheels.txt lists what it makes)
#   bash benchmarks/gpu/run.sh --size           here: MiB that would travel (tree + .whl) of 64
#   bash benchmarks/gpu/run.sh --slim|--unslim  here: move data the device never reads out of the
#                                               tree before the call / back after it
#
# Steps (each runs whatever happened before it; the script always exits 0):
#   1. env    install .whl/*.whl into $SITE (/tmp/site), put the repo and $SITE on PYTHONPATH,
#             register the package's openmm-ml entry points (a generated .dist-info in $SITE),
#             versions, OpenMM platforms, a CUDA Context, openmmtorch, MLPotential names -> env.txt
#   2. tests  pytest -m gpu on the four modules holding `gpu` tests -> gpu-tests.log
#   3. speed  python -m openmmml_e2former.bench.speed --device cuda -> speed_gpu.json/.png, speed.log
#   4. summary.txt: exit code and seconds of each step (written after every step)
#
# Knobs (environment): SPEED_BUDGET_S (300), TESTS_S (240, wall-clock cap of step 2), TOTAL_S (520:
# the speed budget is cut to what is left of it), SITE, PY, DRY_RUN, SPEED_DEVICE (cuda; cpu when
# DRY_RUN=1), PYTEST_EXTRA (extra pytest arguments, e.g. -x).
set -uo pipefail
export PYTHONUNBUFFERED=1

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT" || exit 0

# The modules that hold tests marked `gpu` (pytest imports every module it is given, and an
# ImportError in any one stops collection: only these are collected).
GPU_TEST_FILES=(tests/test_openmm.py tests/test_model_invariants.py tests/test_shipped_potential.py tests/test_training.py)

# ------------------------------------------------------------------------------- --make-wheels
# Run here (not on the device): download the cp312 manylinux x86_64 wheels, build the two pure
# Python ones from their sdists, and repack each without what the checks do not use, LZMA-compressed,
# so that they and the tracked tree stay under the 64 MiB that travels to the device.
make_wheels() {
    local dest="$ROOT/.whl" raw="${WHEEL_CACHE:-/tmp/e2f-gpu-wheels-raw}"
    local py="${MAKE_WHEELS_PY:-python3}"
    local plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64
        --platform manylinux_2_24_x86_64 --platform manylinux_2_34_x86_64)
    local binary=(openmm==8.5.2 openmm-cuda-13==8.5.2 acellera-openmmtorch-cu13==1.10
        vesin-torch==0.6.2 ase==3.29.0)
    local sdist=(openmmml==1.7 pdbfixer==1.12.0)  # no wheels on PyPI: built here (pure Python)
    mkdir -p "$raw" "$dest" || return 1
    grep -qx '/.whl/' "$ROOT/.git/info/exclude" 2>/dev/null || echo '/.whl/' >>"$ROOT/.git/info/exclude"
    local name
    for name in "${binary[@]}"; do
        "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            "${plat[@]}" -d "$raw" "$name" || return 1
    done
    for name in "${sdist[@]}"; do
        "$py" -m pip download -q --no-deps --no-binary=:all: -d "$raw/sdist" "$name" || return 1
    done
    # fixed zip timestamps, so that the built wheels (and their sha256) come out the same each time
    SOURCE_DATE_EPOCH=1700000000 "$py" -m pip wheel -q --no-deps --no-cache-dir -w "$raw" "$raw"/sdist/*.tar.gz || return 1
    rm -f "$dest"/*.whl
    "$py" - "$raw" "$dest" <<'EOF' || return 1
import base64, csv, fnmatch, glob, hashlib, io, os, sys, zipfile

raw, dest = sys.argv[1], sys.argv[2]
# (wheel-name prefix, member patterns to drop); fnmatch's * also matches '/'
DROP = {
    "openmm-": [
        "OpenMM.libs/include/*",                      # C++ headers
        "OpenMM.libs/lib/plugins/*OpenCL*",           # OpenCL platform (the device has CUDA)
        "openmm/app/data/charmm*",                    # CHARMM force fields (amber14 is used)
        "openmm/app/data/amoeba*",
        *[f"openmm/app/data/{lipid}.pdb" for lipid in ("DOPC", "POPC", "DPPC", "DLPE", "POPE", "DMPC", "DLPC")],
    ],
    "openmm_cuda_13-": ["OpenMM.libs/include/*"],
    "acellera_openmmtorch_cu13-": ["OpenMM.libs/lib/plugins/libOpenMMTorchOpenCL.so"],
    # one build per torch minor version: keep those openmmtorch 1.10 accepts (torch >=2.10,<2.13)
    "vesin_torch-": [f"vesin_torch/torch-2.{m}/*" for m in (3, 4, 5, 6, 7, 8, 9, 13, 14)],
    "pdbfixer-": ["pdbfixer/tests/*"],
    "ase-": ["ase/test/*", "ase/gui/*"],
}

def record_hash(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

for path in sorted(glob.glob(os.path.join(raw, "*.whl"))):
    name = os.path.basename(path)
    drop = next((v for k, v in DROP.items() if name.startswith(k)), [])
    with zipfile.ZipFile(path) as src:
        members = [(i, src.read(i)) for i in src.infolist() if not i.is_dir()]
    record = next(i.filename for i, _ in members if i.filename.endswith(".dist-info/RECORD"))
    kept = [(i, d) for i, d in members
            if i.filename != record and not any(fnmatch.fnmatch(i.filename, p) for p in drop)]
    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    for info, data in kept:
        writer.writerow([info.filename, record_hash(data), len(data)])
    writer.writerow([record, "", ""])
    with zipfile.ZipFile(os.path.join(dest, name), "w", zipfile.ZIP_LZMA) as out:
        for info, data in kept + [(zipfile.ZipInfo(record), rows.getvalue().encode())]:
            new = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            new.external_attr = info.external_attr or (0o644 << 16)
            new.compress_type = zipfile.ZIP_LZMA
            out.writestr(new, data)
    print(f"{name}: {os.path.getsize(path)} -> {os.path.getsize(os.path.join(dest, name))} bytes, "
          f"{len(members) - len(kept)} files dropped")
EOF
    (cd "$dest" && ls -l ./*.whl && du -cb ./*.whl | tail -1 && sha256sum ./*.whl)
    size_report
}

# What travels to the device: tracked + untracked-not-ignored files + .whl (carried), limit 64 MiB.
size_report() {
    local tree wheels
    tree=$( (git -C "$ROOT" ls-files -z; git -C "$ROOT" ls-files -z --others --exclude-standard) |
        (cd "$ROOT" && xargs -0 du -cb 2>/dev/null) | awk '$2 == "total" {s += $1} END {print s + 0}')
    wheels=$(cat "$ROOT"/.whl/*.whl 2>/dev/null | wc -c)
    awk -v t="$tree" -v w="$wheels" 'BEGIN {m = 1048576; printf "travels: tree %.2f MiB + .whl %.2f MiB = %.2f MiB of 64 MiB (%.2f MiB left)\n", t/m, w/m, (t+w)/m, 64-(t+w)/m}'
}

# Data the device never reads (the size-scaling set and its labels, round-4 pieces, packed MD
# records, accuracy checkpoints): --slim moves them into .gpu-slim/ (ignored, so it does not
# travel; a rename on the same disk) before the device call, --unslim puts them back right after.
SLIM_DIR="$ROOT/.gpu-slim"
SLIM_PATHS=(datasets/scaling datasets/labelling benchmarks/results/accuracy_runs)
slim() {
    local moved=0 path
    if [[ -e "$SLIM_DIR" ]]; then
        echo "$SLIM_DIR exists: run --unslim first" >&2
        return 1
    fi
    for path in "${SLIM_PATHS[@]}" stability/*/records.tar.xz; do
        [[ -e "$ROOT/$path" ]] || continue
        mkdir -p "$SLIM_DIR/$(dirname "$path")" || return 1
        mv "$ROOT/$path" "$SLIM_DIR/$path" || { echo "could not move $path; run --unslim" >&2; return 1; }
        moved=$((moved + 1))
    done
    echo "moved $moved paths to $SLIM_DIR; put them back with: bash benchmarks/gpu/run.sh --unslim"
    size_report
}
unslim() {
    local path
    [[ -d "$SLIM_DIR" ]] || { echo "nothing to put back ($SLIM_DIR missing)"; return 0; }
    local records=()
    for path in "$SLIM_DIR"/stability/*/records.tar.xz; do
        [[ -e "$path" ]] && records+=("${path#"$SLIM_DIR"/}")
    done
    for path in "${SLIM_PATHS[@]}" "${records[@]}"; do
        [[ -e "$SLIM_DIR/$path" ]] || continue
        if [[ -e "$ROOT/$path" ]]; then
            echo "$path exists in the tree and in $SLIM_DIR: left both, sort it out by hand" >&2
            return 1
        fi
        mkdir -p "$ROOT/$(dirname "$path")" || return 1
        mv "$SLIM_DIR/$path" "$ROOT/$path" || { echo "could not move $path back" >&2; return 1; }
    done
    find "$SLIM_DIR" -depth -type d -empty -delete
    if [[ -e "$SLIM_DIR" ]]; then
        echo "files left in $SLIM_DIR:" >&2
        find "$SLIM_DIR" -type f >&2
        return 1
    fi
    git -C "$ROOT" status --short | grep '^ D' && { echo "tracked files still missing" >&2; return 1; }
    echo "restored"
}

case "${1:-}" in
    --make-wheels) make_wheels; exit $? ;;
    --size) size_report; exit 0 ;;
    --slim) slim; exit $? ;;
    --unslim) unslim; exit $? ;;
esac

# ------------------------------------------------------------------------------- settings
DRY_RUN="${DRY_RUN:-0}"
if [[ "$DRY_RUN" == 1 ]]; then
    PY="${PY:-$ROOT/.venv/bin/python}"
    SITE="${SITE:-/tmp/e2f-gpu-dryrun-site}"
    SPEED_DEVICE="${SPEED_DEVICE:-cpu}"
    SPEED_BUDGET_S="${SPEED_BUDGET_S:-30}"
else
    PY="${PY:-python3}"
    SITE="${SITE:-/tmp/site}"
    SPEED_DEVICE="${SPEED_DEVICE:-cuda}"
    SPEED_BUDGET_S="${SPEED_BUDGET_S:-300}"
fi
TESTS_S="${TESTS_S:-210}"
TOTAL_S="${TOTAL_S:-520}"
if [[ -z "${OUT:-}" ]]; then
    OUT="$(mktemp -d /tmp/e2f-gpu-out.XXXXXX)"
    echo "OUT was not set: writing to $OUT"
fi
mkdir -p "$OUT" "$SITE"
SUMMARY="$OUT/summary.txt"
START=$SECONDS

note() { echo "$*" | tee -a "$SUMMARY"; }
# step NAME RC T0: one summary line per step
step_done() { note "step $1: exit $2 ($((SECONDS - $3)) s)"; }

: >"$SUMMARY"
note "benchmarks/gpu/run.sh  $(date -u +%Y-%m-%dT%H:%M:%SZ)  host $(hostname)  dry_run=$DRY_RUN"
note "commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (+ uncommitted changes)')"
note "python $PY, site $SITE, out $OUT"

# ------------------------------------------------------------------------------- 1. env
t0=$SECONDS
rc_env=0
(
    echo "== wheels"
    ls -l .whl/*.whl 2>&1
    if [[ "$DRY_RUN" == 1 ]]; then
        echo "DRY_RUN=1: wheel install skipped"
    else
        # the slimmed wheels are LZMA-compressed zips: pip reads them through zipfile, which needs lzma
        "$PY" -c "import lzma" || echo "!! this Python has no lzma module: the wheels cannot be read"
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" .whl/*.whl || { echo "!! wheel install failed"; exit 1; }
        echo "installed into $SITE"
    fi
) >"$OUT/env.txt" 2>&1 || rc_env=$?
export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}"

# The package is imported from the working tree (PYTHONPATH); openmm-ml finds its potentials
# through importlib.metadata entry points (group openmmml.potentials), which need an installed
# distribution: write a minimal one (METADATA + entry_points.txt, from pyproject.toml) into $SITE.
"$PY" - "$ROOT/pyproject.toml" "$SITE" >>"$OUT/env.txt" 2>&1 <<'EOF' || rc_env=$?
import glob, os, shutil, sys
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

pyproject, site = sys.argv[1], sys.argv[2]
with open(pyproject, "rb") as handle:
    project = tomllib.load(handle)["project"]
dist = project["name"].replace("-", "_")
for old in glob.glob(os.path.join(site, f"{dist}-*.dist-info")):
    shutil.rmtree(old)
info = os.path.join(site, f"{dist}-{project['version']}.dist-info")
os.makedirs(info)
with open(os.path.join(info, "METADATA"), "w") as handle:
    handle.write(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
with open(os.path.join(info, "entry_points.txt"), "w") as handle:
    for group, points in project.get("entry-points", {}).items():
        handle.write(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in points.items()) + "\n")
    if project.get("scripts"):
        handle.write("[console_scripts]\n" + "".join(f"{k} = {v}\n" for k, v in project["scripts"].items()))
with open(os.path.join(info, "INSTALLER"), "w") as handle:
    handle.write("benchmarks/gpu/run.sh\n")
print(f"== entry points written to {info}")
print(open(os.path.join(info, "entry_points.txt")).read())
EOF

"$PY" - >>"$OUT/env.txt" 2>&1 <<'EOF' || rc_env=$?
import importlib, importlib.metadata as md, os, platform, sys, traceback

failed = []

def check(what, fn):
    try:
        result = fn()
        print(f"{what}: {result}")
        return result
    except Exception as exc:  # report and go on
        failed.append(what)
        print(f"!! {what}: {type(exc).__name__}: {exc}")
        traceback.print_exc(limit=2, file=sys.stdout)

print("== versions")
print("python", sys.version.replace("\n", " "), sys.executable)
print("platform", platform.platform())
import torch  # before openmmtorch (libnvrtc)
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
check("torch.cuda.is_available", torch.cuda.is_available)
if torch.cuda.is_available():
    check("torch device", lambda: (torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0),
                                   f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.1f} GiB"))
for name in ("numpy", "scipy", "e3nn", "vesin_torch", "ase", "tblite", "pdbfixer", "mdtraj", "yaml",
             "tqdm", "matplotlib", "h5py", "rdkit", "pytest"):
    def version(name=name):
        module = importlib.import_module(name)
        return f"{getattr(module, '__version__', '?')} ({os.path.dirname(module.__file__)})"
    try:
        print(f"{name}: {version()}")
    except Exception as exc:
        print(f"{name}: not importable ({type(exc).__name__}: {exc})")

print("== distributions")
for dist in ("openmm", "OpenMM-CUDA-13", "acellera-openmmtorch-cu13", "openmmtorch", "openmmml", "vesin-torch",
             "e3nn", "ase", "tblite", "cffi", "pdbfixer", "mdtraj", "openmmml-e2former", "pytest-timeout"):
    try:
        print(f"{dist}: {md.version(dist)}")
    except md.PackageNotFoundError:
        print(f"{dist}: not installed")

print("== openmm")
import openmm
print("openmm", openmm.__version__, os.path.dirname(openmm.__file__))
print("plugin directory", openmm.Platform.getDefaultPluginsDirectory())
print("platforms", [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())])
print("plugin load failures", openmm.Platform.getPluginLoadFailures())

def cuda_context():
    platform_ = openmm.Platform.getPlatformByName("CUDA")
    system = openmm.System()
    for _ in range(2):
        system.addParticle(1.0)
    bond = openmm.HarmonicBondForce()
    bond.addBond(0, 1, 0.1, 1000.0)
    system.addForce(bond)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform_)
    context.setPositions([openmm.Vec3(0, 0, 0), openmm.Vec3(0.2, 0, 0)])
    energy = context.getState(getEnergy=True).getPotentialEnergy()
    props = {k: platform_.getPropertyValue(context, k) for k in ("DeviceName", "Precision", "CudaCompiler")
             if k in platform_.getPropertyNames()}
    return f"{energy} (expected 5 kJ/mol) {props}"

check("CUDA platform, one Context", cuda_context)

print("== openmmtorch")
check("import openmmtorch", lambda: importlib.import_module("openmmtorch").__file__)
print("plugin load failures after openmmtorch", openmm.Platform.getPluginLoadFailures())

print("== openmm-ml and this package")
check("openmmml", lambda: md.version("openmmml"))
check("openmmml_e2former imported from", lambda: importlib.import_module("openmmml_e2former").__file__)
check("entry points openmmml.potentials (e2former*)",
      lambda: sorted(f"{e.name} = {e.value}" for e in md.entry_points(group="openmmml.potentials")
                     if e.name.startswith("e2former")))

def registered():
    from openmmml import MLPotential
    names = sorted(MLPotential._implFactories)
    assert "e2former-lsr" in names and "e2former" in names, names
    return [n for n in names if n.startswith("e2former")]

check("MLPotential registered names", registered)
print("== result:", "FAILED " + ", ".join(failed) if failed else "all checks passed")
sys.exit(1 if failed else 0)
EOF

{
    echo "== nvidia-smi"
    nvidia-smi 2>&1 || echo "(no nvidia-smi)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || true
    echo "== nproc $(nproc), $(grep MemTotal /proc/meminfo)"
} >>"$OUT/env.txt" 2>&1
GPU_NAME="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
GPU_SLUG="$(echo "${GPU_NAME:-cpu}" | tr 'A-Z ' 'a-z-' | tr -cd 'a-z0-9._-')"
grep -E '^(torch|openmm|platforms|plugin load failures|openmmtorch|openmmml|MLPotential|!!|== result)' \
    "$OUT/env.txt" | cut -c1-300
step_done env "$rc_env" "$t0"

# ------------------------------------------------------------------------------- 2. gpu tests
t0=$SECONDS
timeout_opt=()
"$PY" -c "import pytest_timeout" 2>/dev/null && timeout_opt=(--timeout 240)
# No -x: the three tests are independent and the wall-clock cap bounds the time anyway.
# -rs: a test skipped for want of the CUDA platform must show as skipped, with its reason.
# shellcheck disable=SC2086
timeout -s INT -k 15 "$TESTS_S" "$PY" -m pytest -m gpu "${GPU_TEST_FILES[@]}" -q -rs -p no:cacheprovider \
    "${timeout_opt[@]}" ${PYTEST_EXTRA:-} 2>&1 | tee "$OUT/gpu-tests.log"
rc_tests=${PIPESTATUS[0]}
step_done tests "$rc_tests" "$t0"
note "tests: $(grep -E '(passed|failed|skipped|error|no tests ran)' "$OUT/gpu-tests.log" | tail -1)"

# ------------------------------------------------------------------------------- 2b. profile
t0=$SECONDS
timeout -s INT -k 10 "${PROFILE_S:-60}" "$PY" benchmarks/profile_model.py --device "$SPEED_DEVICE" \
    --out "$OUT/profile_gpu.txt" >"$OUT/profile.log" 2>&1
rc_profile=$?
step_done profile "$rc_profile" "$t0"
[[ -s "$OUT/profile_gpu.txt" ]] || mv "$OUT/profile.log" "$OUT/profile_gpu.txt"
rm -f "$OUT/profile.log"

# ------------------------------------------------------------------------------- 3. speed
t0=$SECONDS
left=$((TOTAL_S - (SECONDS - START) - 45))
budget=$SPEED_BUDGET_S
((left < budget)) && budget=$left
((budget < 30)) && budget=30
note "speed: device $SPEED_DEVICE, budget $budget s (asked ${SPEED_BUDGET_S} s)"
timeout -s INT -k 20 $((budget + 30)) "$PY" -m openmmml_e2former.bench.speed --device "$SPEED_DEVICE" \
    --budget-s "$budget" --out "$OUT/speed_gpu.json" --plot "$OUT/speed_gpu.png" 2>&1 | tee "$OUT/speed.log"
rc_speed=${PIPESTATUS[0]}
step_done speed "$rc_speed" "$t0"

# ------------------------------------------------------------------------------- 4. summary
note "gpu: ${GPU_NAME:-none}"
note "commit the results to: benchmarks/results/gpu/$(date -u +%Y-%m-%d)-${GPU_SLUG}/"
note "files in OUT:"
(cd "$OUT" && ls -l) | tail -n +2 | tee -a "$SUMMARY"
note "total $((SECONDS - START)) s; exit codes: env $rc_env, tests $rc_tests, profile $rc_profile, speed $rc_speed (124/137: timed out)"
exit 0
