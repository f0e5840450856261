"""Draw the paper's model (Fig. 3) as mmfusion builds it, into ``docs/images/architecture.png``.

Run from the repository root: ``.venv/bin/python docs/figures/make_architecture.py``. The picture is
committed; rerun this script after changing it. Only matplotlib is needed (``mmfusion[example]``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "images" / "architecture.png"

# Colours by role: input, encoder, single-modal branch, fusion branch, joint/ensemble, loss.
C_IN = "#e8eef7"
C_ENC = "#cfe0f3"
C_SINGLE = "#fde2c4"
C_ATT = "#d7efd2"
C_JOINT = "#e6d9f2"
C_LOSS = "#f6d2d2"
EDGE = "#4a4a4a"


def box(ax, x, y, w, h, title, body="", colour=C_IN, code=""):  # type: ignore[no-untyped-def]
    """A rounded box centred at (x, y): bold title, optional body, class name in monospace."""
    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle="round,pad=0.02,rounding_size=0.08",
            facecolor=colour,
            edgecolor=EDGE,
            linewidth=1.0,
        )
    )
    lines = [(title, dict(fontweight="bold", fontsize=9.5))]
    lines += [(line, dict(fontsize=8.3)) for line in body.splitlines()]
    if code:
        lines.append((code, dict(fontsize=8.3, family="monospace", color="#1f4e8c")))
    step = 0.235
    top = y + step * (len(lines) - 1) / 2
    for i, (text, style) in enumerate(lines):
        ax.text(x, top - i * step, text, ha="center", va="center", **style)
    return (x - w / 2, x + w / 2, y - h / 2, y + h / 2)


def arrow(ax, start, end, text="", colour=EDGE, style="-|>", ls="-", rad=0.0):  # type: ignore[no-untyped-def]
    ax.annotate(
        "",
        xy=end,
        xytext=start,
        arrowprops=dict(
            arrowstyle=style,
            color=colour,
            lw=1.2,
            linestyle=ls,
            shrinkA=0,
            shrinkB=0,
            connectionstyle=f"arc3,rad={rad}",
        ),
    )
    if text:
        mx, my = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
        ax.text(mx, my + 0.14, text, ha="center", va="bottom", fontsize=7.8, color="#333333")


def draw() -> Figure:
    fig = Figure(figsize=(15, 7.6))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 19.5)
    ax.set_ylim(0, 9.8)
    ax.axis("off")

    ax.text(
        0.25,
        9.45,
        "The paper's model (Fig. 3) as mmfusion builds it: MultiModalClassifier(encoders, fusion, head)",
        fontsize=12,
        fontweight="bold",
        va="center",
    )
    ax.text(
        0.25,
        9.05,
        "shapes for 224 x 224 inputs and ResNet-50;  arrows carry [batch, ...] tensors;  "
        "the example's build_model() assembles exactly this",
        fontsize=9,
        va="center",
        color="#444444",
    )

    rows = {"us": (7.55, 5.65), "swe": (1.35, 3.25)}  # (single-branch row, attention row)
    names = {"us": ("US", "B-mode ultrasound"), "swe": ("SWE", "shear-wave elastography")}
    feats = {}
    for m, (y_single, y_att) in rows.items():
        y_mid = (y_single + y_att) / 2
        short, long = names[m]
        box(ax, 1.2, y_mid, 2.1, 1.05, f'"{m}" image', f"{long}\n[B, 3, 224, 224]", C_IN)
        box(
            ax,
            3.85,
            y_mid,
            2.7,
            1.6,
            f"Encoder ({short})",
            "ResNet-50, own weights\nstem + stages 1-3 frozen\nstage 4 (layer4) fine-tuned",
            C_ENC,
            "ModalityEncoder",
        )
        arrow(ax, (2.25, y_mid), (2.5, y_mid))
        # single-modal branch (top row for US, bottom row for SWE)
        box(
            ax,
            8.25,
            y_single,
            3.6,
            1.0,
            f"Single-modal branch ({short})",
            "flatten 2048*7*7 -> FC -> FC -> FC",
            C_SINGLE,
            'ClassifierHead(pool="flatten")',
        )
        arrow(ax, (5.2, y_mid + 0.25 * (1 if y_single > y_att else -1)), (6.45, y_single))
        ax.text(
            5.75, y_mid, "2048 x 7 x 7", fontsize=7.8, ha="center", va="center", color="#333333"
        )
        # attention embedding
        box(
            ax,
            8.25,
            y_att,
            3.6,
            1.55,
            f"Attention branch ({short})",
            "group pool 2048->512, 1x1 conv ->256,\nspatial attention, attention block\n"
            "re-weights the 2048 map, GAP, FC ->256",
            C_ATT,
            "AttentionEmbedding",
        )
        arrow(ax, (5.2, y_mid - 0.25 * (1 if y_single > y_att else -1)), (6.45, y_att))
        feats[m] = y_att
        ax.text(10.75, y_att + 0.5, f"f_{m} [B, 256]", fontsize=8, ha="center", va="bottom")

    # fusion: concatenation and the joint FC
    y_c = (rows["us"][1] + rows["swe"][1]) / 2
    box(
        ax,
        12.0,
        y_c,
        2.2,
        1.15,
        "Concatenate",
        "[f_us, f_swe] -> [B, 512]\n+ placeholders",
        C_ATT,
        "AttentionFusion",
    )
    for m, y_att in feats.items():
        arrow(ax, (10.05, y_att), (10.9, y_c + (0.3 if m == "us" else -0.3)))
    box(
        ax,
        14.6,
        y_c,
        2.3,
        1.0,
        "Joint branch",
        "one FC 512 -> 5",
        C_JOINT,
        "ClassifierHead(512, 5)",
    )
    arrow(ax, (13.1, y_c), (13.45, y_c))

    # ensemble
    box(
        ax,
        17.6,
        y_c,
        3.1,
        1.6,
        "Ensemble",
        "mean of the three softmaxes\n(weights configurable)\n-> probs [B, 5]  (F0..F4)",
        C_JOINT,
        "EnsembleHead",
    )
    arrow(ax, (15.75, y_c), (16.05, y_c))
    arrow(ax, (10.05, rows["us"][0]), (17.0, y_c + 0.8), "z_us [B, 5]", rad=-0.12)
    arrow(ax, (10.05, rows["swe"][0]), (17.0, y_c - 0.8), "z_swe [B, 5]", rad=0.12)

    # the training loss
    box(
        ax,
        14.95,
        0.75,
        6.5,
        1.0,
        "Training loss, eq. (1)-(3)",
        "L_total = CE(z_us) + CE(z_swe) + CE(z_joint) + 0.2 * sum_{i<j} mean|f_i - f_j|",
        C_LOSS,
        "EnsembleLoss(alpha=0.2)  (ConsistencyLoss for L_C)",
    )
    arrow(ax, (10.05, feats["swe"] - 0.45), (11.8, 1.0), "f_us, f_swe", colour="#b03030", ls="--")

    # legend of the frozen part
    ax.text(
        0.25,
        8.65,
        "Beyond the paper: any number of modalities; a missing modality is replaced by a learned "
        "placeholder (per-sample availability mask; modality_dropout during training).",
        fontsize=8.5,
        color="#444444",
        va="center",
    )
    return fig


def main() -> int:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    draw().savefig(OUT, dpi=110)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
