"""Shared benchmark helpers: machine description, timing with warm-up, result writing.

Every benchmark writes ``<name>.json`` (all numbers, the command line, the machine), ``<name>.md``
(markdown tables) and PNG plots into one output folder (``benchmarks/results/`` by default).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
PAIRINGS_GP = (
    ("day_left", "night_right"),
    ("day_right", "night_right"),
    ("day_left", "day_right"),
)


def data_root() -> Path:
    """The real datasets: :func:`sfrs_edge.paths.data_root` (one rule for CLI, benchmarks, tests)."""
    from sfrs_edge.paths import data_root as _data_root

    return _data_root()


# ------------------------------------------------------------------------------ machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _gpu() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return None
    v = getattr(mod, "__version__", None)
    if v is None:
        from importlib import metadata

        try:
            v = metadata.version(module)
        except metadata.PackageNotFoundError:
            v = "?"
    return v


def machine() -> dict[str, Any]:
    """What the numbers were measured on (CPU, cores, memory, GPU, library versions, date)."""
    info: dict[str, Any] = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _mem_gib(),
        "gpu": _gpu(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "command": " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
    for mod in ("numpy", "torch", "onnxruntime", "onnx", "hnswlib", "cv2"):
        info[mod] = _version(mod)
    try:
        import onnxruntime as ort

        info["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        pass
    return info


def machine_line(m: dict[str, Any]) -> str:
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU"
    return (
        f"{m['cpu']} ({m['cores']} cores), {m['memory_gib']} GiB RAM{gpu}; {m['os']}; "
        f"Python {m['python']}, torch {m.get('torch')}, onnxruntime {m.get('onnxruntime')}, "
        f"hnswlib {m.get('hnswlib')}, numpy {m.get('numpy')}; {m['date']}"
    )


# ------------------------------------------------------------------------------- timing


@dataclass
class Stats:
    """Latency samples (seconds) summarised in milliseconds."""

    samples: list[float] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.samples)

    def pct(self, q: float) -> float:
        return float(np.percentile(self.samples, q) * 1e3) if self.samples else float("nan")

    @property
    def p50(self) -> float:
        return self.pct(50)

    @property
    def p90(self) -> float:
        return self.pct(90)

    @property
    def p99(self) -> float:
        return self.pct(99)

    @property
    def mean(self) -> float:
        return float(np.mean(self.samples) * 1e3) if self.samples else float("nan")

    def summary(self) -> dict[str, float]:
        return {
            "n": self.n,
            "p50_ms": round(self.p50, 4),
            "p90_ms": round(self.p90, 4),
            "p99_ms": round(self.p99, 4),
            "mean_ms": round(self.mean, 4),
        }


def time_call(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_fn(fn: Callable[[], Any], reps: int, warmup: int = 1) -> Stats:
    """``warmup`` untimed calls, then ``reps`` timed calls."""
    for _ in range(warmup):
        fn()
    return Stats([time_call(fn) for _ in range(max(reps, 1))])


def time_interleaved(
    fns: dict[str, Callable[[], Any]], reps: int, warmup: int = 1
) -> dict[str, Stats]:
    """Time several candidates round-robin (A B C A B C ...) so machine noise hits all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out = {name: Stats() for name in fns}
    for _ in range(max(reps, 1)):
        for name, fn in fns.items():
            out[name].samples.append(time_call(fn))
    return out


def reps_for_budget(seconds_per_call: float, budget_s: float, lo: int, hi: int) -> int:
    """How many repetitions fit in ``budget_s`` (clamped to [lo, hi])."""
    if seconds_per_call <= 0:
        return hi
    return int(min(hi, max(lo, budget_s // seconds_per_call)))


def limit_threads(n: int) -> None:
    """Cap torch, onnxruntime (by the caller) and numpy's BLAS at ``n`` threads, so no library
    runs threads into barriers on a busy machine (threadpoolctl, when installed)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    global _LIMITS
    _LIMITS = threadpool_limits(n)


_LIMITS = None


def rss_bytes() -> int:
    """Resident memory of this process now (Linux; 0 elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


# ------------------------------------------------------------------------------- output


@dataclass
class Table:
    """A markdown table with a title and an optional note under it."""

    title: str
    headers: Sequence[str]
    rows: list[Sequence[Any]] = field(default_factory=list)
    note: str = ""

    def markdown(self) -> str:
        def cell(v: Any) -> str:
            if isinstance(v, float):
                if v != v:  # NaN
                    return "–"
                return f"{v:.3g}" if abs(v) < 0.01 and v != 0 else f"{v:,.2f}"
            return str(v)

        lines = [f"### {self.title}", ""]
        lines.append("| " + " | ".join(self.headers) + " |")
        lines.append("|" + "|".join("---" for _ in self.headers) + "|")
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in self.rows]
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines) + "\n"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Stats):
        return obj.summary()
    if isinstance(obj, Table):
        return asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj)}")


def write_results(
    name: str,
    out_dir: Path,
    results: dict[str, Any],
    tables: Sequence[Table],
    intro: str = "",
    figures: Sequence[Path] = (),
) -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.md`` (tables + figure links) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    m = results.setdefault("machine", machine())
    js = out_dir / f"{name}.json"
    js.write_text(json.dumps(results, indent=1, default=_jsonable, allow_nan=True) + "\n")
    parts = [f"## {name}", "", f"Command: `{m['command']}`", "", f"Machine: {machine_line(m)}", ""]
    if intro:
        parts += [intro, ""]
    parts += [t.markdown() for t in tables]
    parts += [f"![{f.stem}]({f.name})\n" for f in figures]
    md = out_dir / f"{name}.md"
    md.write_text("\n".join(parts))
    return js, md


FIGURE_DPI = 150  # a 6-inch figure is 900 px wide: readable on a screen and in a PR
FIGURE_FONTS = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
}


def savefig(fig, path: Path) -> Path:
    """Save a matplotlib figure at FIGURE_DPI and close it."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
    return path


def percent_axis(ax, axis: str = "y", lo: float | None = None) -> None:
    """A percentage axis that ends at 100 (no 105 % from matplotlib's margins); lines and
    markers at exactly 100 are drawn unclipped."""
    getattr(ax, f"set_{axis}lim")(lo, 100.0)
    for line in ax.get_lines():
        line.set_clip_on(False)


def plt_module():
    """matplotlib with the non-interactive backend and the figure fonts above."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(FIGURE_FONTS)
    return plt


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
