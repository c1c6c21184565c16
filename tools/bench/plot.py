#!/usr/bin/env python3
"""Charts for the benchmark drivers' `--plot PATH` (matplotlib, PNG).

    tools/bench/plot.py KIND DATA.json OUT.png     # redraw a chart from its saved data

KIND is compare, sticky, failover or soak. A driver run with `--plot docs/x.png` hands
its figures to `save()` below, which writes them beside the picture (`docs/x.json`, so a
chart can be redrawn without running the benchmark again) and draws the PNG in a child
process: the drivers themselves stay standard-library only. The child is this interpreter
when it can import matplotlib, else the python of a venv made once in
`$CARGO_TARGET_DIR/plot-venv` (or `target/plot-venv`) from the pinned
`tools/bench/plot-requirements.txt` (PyPI, first use only).
"""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
KINDS = ("compare", "sticky", "failover", "soak")


# --- for the drivers --------------------------------------------------------------

def _python():
    """An interpreter that can import matplotlib."""
    try:
        import matplotlib  # noqa: F401
        return sys.executable
    except ImportError:
        pass
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    venv = os.path.join(target, "plot-venv")
    python = os.path.join(venv, "bin", "python")
    ok = os.path.exists(python) and subprocess.run(
        [python, "-c", "import matplotlib"], capture_output=True).returncode == 0
    if not ok:
        print(f"plot: making {venv} (matplotlib, pinned in plot-requirements.txt)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", "--clear", venv], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        "-r", os.path.join(HERE, "plot-requirements.txt")], check=True)
    return python


def save(kind, data, path):
    """Writes `data` to PATH's .json and draws the KIND chart into PATH."""
    assert kind in KINDS, kind
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data_path = os.path.splitext(path)[0] + ".json"
    with open(data_path, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    subprocess.run([_python(), os.path.abspath(__file__), kind, data_path, path], check=True)
    print(f"plot: wrote {path} (data {data_path})", file=sys.stderr)


# --- drawing (in the child, with matplotlib) --------------------------------------

COLORS = {"ringway": "#2f6fdf", "nginx": "#1a7f37", "HAProxy": "#d9480f",
          "pipe (floor)": "#8a8f98", "direct to mock": "#c0c4cc"}
KILL, RESTART = "#c62828", "#1a7f37"


def _setup():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update({
        "figure.dpi": 110, "savefig.dpi": 110, "font.size": 10, "axes.spines.top": False,
        "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
        "axes.titleweight": "bold", "legend.frameon": False,
    })
    return plt


def _footer(fig, data):
    note = " · ".join(x for x in (data.get("machine"), data.get("note")) if x)
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, color="#6b6f7a", ha="left", va="bottom", wrap=True)


def draw_compare(plt, d):
    """CPU per request and requests/s by proxy (wrk, openai-chat.lua)."""
    names = d["order"]
    fig, (cpu, rps) = plt.subplots(1, 2, figsize=(10, 4))
    colors = [COLORS.get(n, "#7c3aed") for n in names]
    values = [d["cpu_us"][n] for n in names]
    bars = cpu.barh(names, values, color=colors)
    cpu.bar_label(bars, labels=[f"{v:.1f} µs" for v in values], padding=3, fontsize=9)
    cpu.invert_yaxis()
    cpu.set_xlabel("CPU per request, µs (user + system, lower is better)")
    cpu.set_title(f"CPU per request, {d['cpu_connections']} connections")
    cpu.grid(axis="y", visible=False)
    cpu.set_xlim(0, max(values) * 1.25)
    conns = list(d["rps"])
    width = 0.8 / len(conns)
    for k, c in enumerate(conns):
        xs = [i + (k - (len(conns) - 1) / 2) * width for i in range(len(names))]
        vals = [d["rps"][c].get(n, 0) for n in names]
        b = rps.bar(xs, vals, width, label=f"{c} connections",
                    color=colors, alpha=1.0 if k == 0 else 0.55, edgecolor="white")
        rps.bar_label(b, labels=[f"{v / 1000:.1f}k" for v in vals], padding=2, fontsize=8)
    rps.set_xticks(range(len(names)), names, rotation=15)
    rps.set_ylabel("requests/s (higher is better)")
    rps.set_title("Requests/s, " + " (solid) / ".join(conns) + (" (faded)" if len(conns) > 1 else "")
                  + " connections")
    rps.grid(axis="x", visible=False)
    fig.suptitle(d.get("title", "ringway vs nginx vs HAProxy"), x=0.01, ha="left")
    _footer(fig, d)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def draw_sticky(plt, d):
    """Turn-2 time to first token by context size, round-robin vs sticky."""
    ctxs = d["contexts"]
    fig, ax = plt.subplots(figsize=(7, 4))
    styles = {"round-robin": ("#d9480f", "o"), "sticky": ("#2f6fdf", "s")}
    xs = range(len(ctxs))
    for mode, vals in d["modes"].items():
        color, marker = styles.get(mode, ("#7c3aed", "^"))
        ax.plot(xs, vals, marker=marker, color=color, label=mode, linewidth=2)
        for x, v in zip(xs, vals):
            if v is not None:
                ax.annotate(f"{v:,.0f} ms", (x, v), textcoords="offset points", xytext=(0, 7),
                            ha="center", fontsize=8, color=color)
    rr, st = d["modes"].get("round-robin"), d["modes"].get("sticky")
    if rr and st:
        for x, a, b in zip(xs, rr, st):
            if a and b:
                ax.annotate(f"{a / b:.1f}x", (x, (a * b) ** 0.5), ha="center", fontsize=9,
                            fontweight="bold", color="#444")
    ax.set_xticks(list(xs), ctxs)
    ax.set_xlabel("context size (tokens in the conversation)")
    ax.set_ylabel("turn-2 time to first token, ms (median)")
    ax.set_yscale("log")
    ax.set_title(d.get("title", "Sticky routing keeps the KV cache warm"), loc="left")
    ax.legend(loc="upper left")
    _footer(fig, d)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def draw_failover(plt, d):
    """Requests/s (by backend) and failed requests over time, kills and restarts marked."""
    t = d["t"]
    fig, (ax, err) = plt.subplots(2, 1, figsize=(10, 4.8), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1]})
    names = sorted(d["by_endpoint"])
    ax.stackplot(t, *[d["by_endpoint"][n] for n in names], labels=[f"served by {n}" for n in names],
                 colors=["#6ea8fe", "#ffa36c", "#b794f6"][:len(names)], linewidth=0)
    ax.plot(t, d["rps"], color="#1c1d21", linewidth=1, label="all answered")
    for axis in (ax, err):
        for i, k in enumerate(d["kills"]):
            axis.axvline(k, color=KILL, linestyle="--", linewidth=1,
                         label="b killed (SIGKILL)" if i == 0 and axis is ax else None)
        for i, r in enumerate(d["restarts"]):
            axis.axvline(r, color=RESTART, linestyle=":", linewidth=1.3,
                         label="b restarted" if i == 0 and axis is ax else None)
    ax.set_ylabel("requests/s")
    ax.set_ylim(0, max(d["rps"]) * 1.3)
    ax.legend(loc="upper left", ncol=5, fontsize=8)
    ax.set_title(d.get("title", "Failover: a backend killed three times under load"), loc="left")
    err.bar(t, d["errors"], width=d["bin_s"], color=KILL)
    err.set_ylabel("failed/s")
    err.set_xlabel("seconds since the load started")
    err.set_ylim(0, max(1, max(d["errors"]) * 1.2))
    total = sum(d["errors"]) * d["bin_s"]
    err.text(0.99, 0.8, f"failed requests: {total:,.0f} of {d['requests']:,}",
             transform=err.transAxes, ha="right", fontsize=9)
    _footer(fig, d)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def draw_soak(plt, d):
    """ringway's RSS and open files over the soak, backend kills marked."""
    t = [x / 60 for x in d["t"]]
    fig, (rss, fds) = plt.subplots(2, 1, figsize=(10, 4.8), sharex=True)
    rss.plot(t, d["rss_mb"], color="#2f6fdf", linewidth=1.5)
    rss.set_ylabel("RSS, MB")
    rss.set_ylim(0, max(d["rss_mb"]) * 1.3)
    fds.plot(t, d["fds"], color="#d9480f", linewidth=1.5, drawstyle="steps-post")
    fds.set_ylabel("open files")
    fds.set_ylim(0, max(d["fds"]) * 1.3)
    fds.set_xlabel("minutes since the load started")
    for axis in (rss, fds):
        for i, k in enumerate(d.get("kills", [])):
            axis.axvline(k / 60, color=KILL, linestyle="--", linewidth=0.8, alpha=0.6,
                         label="a backend killed" if i == 0 and axis is rss else None)
    if d.get("kills"):
        rss.legend(loc="lower right", fontsize=8)
    rss.set_title(d.get("title", "Soak: memory and open files under a long mixed load"), loc="left")
    _footer(fig, d)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in KINDS:
        sys.exit(__doc__)
    kind, data_path, out = sys.argv[1:]
    with open(data_path) as f:
        data = json.load(f)
    plt = _setup()
    fig = globals()[f"draw_{kind}"](plt, data)
    fig.savefig(out)


if __name__ == "__main__":
    main()
