"""Draw ``csi-linstor bench scale`` figures into a PNG (matplotlib: ``pip install '.[bench]'``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

FLAT = ("CreateVolume", "ControllerPublishVolume", "ControllerUnpublishVolume",
        "ControllerExpandVolume", "CreateSnapshot", "DeleteSnapshot", "DeleteVolume",
        "ListVolumes", "ListSnapshots")
SHORT = {"CreateVolume": "Create", "ControllerPublishVolume": "Publish",
         "ControllerUnpublishVolume": "Unpublish", "ControllerExpandVolume": "Expand",
         "CreateSnapshot": "CreateSnap", "DeleteSnapshot": "DeleteSnap", "DeleteVolume": "Delete",
         "ListVolumes": "ListVol\n(page)", "ListSnapshots": "ListSnap\n(page)"}


def plot_scale(result: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise RuntimeError("plotting needs matplotlib: pip install 'csi-linstor[bench]'"
                           ) from err
    sizes = list(result["sizes"].values())
    labels = [f"{e['volumes']:,} volumes" for e in sizes]
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    width = 0.8 / max(1, len(sizes))
    xs = range(len(FLAT))
    for ax, key, title, log in (
            (axes[0][0], "rest_calls", "REST calls per RPC", False),
            (axes[0][1], "kib_received", "KiB received from LINSTOR per RPC (log)", True)):
        for i, (entry, label) in enumerate(zip(sizes, labels, strict=True)):
            values = [entry["rpcs"].get(m, {}).get(key, 0) or 0 for m in FLAT]
            ax.bar([x + i * width for x in xs], values, width, label=label)
        ax.set_xticks([x + width * (len(sizes) - 1) / 2 for x in xs])
        ax.set_xticklabels([SHORT[m] for m in FLAT], fontsize=8)
        ax.set_title(title)
        if log:
            ax.set_yscale("log")
        ax.legend(fontsize=8)
    vols = [max(1, e["volumes"]) for e in sizes]
    ax = axes[1][0]
    for cls, marker in (("plain", "o"), ("overprovision", "s")):
        line = ax.plot(vols, [e["capacity"][cls]["p50_ms"] for e in sizes], marker=marker,
                       label=f"p50, class '{cls}'")
        ax.plot(vols, [e["capacity"][cls]["driver_p50_ms"] for e in sizes], marker=marker,
                linestyle=":", color=line[0].get_color(),
                label=f"of which the driver (p50), class '{cls}'")
    if all("first_ms" in e["capacity"]["overprovision"] for e in sizes):
        ax.plot(vols, [e["capacity"]["overprovision"]["first_ms"] for e in sizes], marker="x",
                linestyle="--", color="grey",
                label="first call of a round, class 'overprovision' (reads every resource)")
    ax.axhline(10, color="red", linestyle="--", linewidth=1, label="target 10 ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("volumes (each with a snapshot) on 100 nodes")
    ax.set_ylabel("ms per segment")
    ax.set_title("GetCapacity per topology segment")
    ax.legend(fontsize=8)
    ax = axes[1][1]
    ax.plot(vols, [e["driver_rss_mib"] for e in sizes], marker="o", label="after the size's runs")
    ax.plot(vols, [e["driver_rss_peak_mib"] for e in sizes], marker="^", label="peak so far")
    ax.axhline(100, color="red", linestyle="--", linewidth=1, label="target 100 MB")
    ax.set_xscale("log")
    ax.set_xlabel("volumes (each with a snapshot) on 100 nodes")
    ax.set_ylabel("MiB")
    ax.set_title("driver RSS")
    ax.legend(fontsize=8)
    fig.suptitle(f"csi-linstor bench scale: simulator with {result['nodes']} nodes")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
