"""Draw the paper's model (Fig. 3) as mmfusion builds it, into ``docs/images/architecture.png``.

Run from the repository root: ``.venv/bin/python docs/figures/make_architecture.py``. The picture is
committed; rerun this script after changing it. Only matplotlib is needed (``mmfusion[example]``).
The layout is top to bottom and sized for the documentation's content column (about 736 px wide,
what a 1280 px window shows): :func:`check` refuses text that would be smaller than 10.5 px there,
or that leaves its box or the figure.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
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


#: Width (px) the picture is shown at: the documentation's content column (furo: 46em at 16 px).
DISPLAY_WIDTH_PX = 736
#: Smallest text size, in pixels at DISPLAY_WIDTH_PX, that the picture may use.
MIN_TEXT_PX = 10.5
FIG_SIZE = (10.0, 11.6)  # inches; axes units are inches too
DPI = 150
TITLE_PT, BODY_PT, CODE_PT, NOTE_PT = 13.0, 11.0, 10.5, 10.5


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
            gid="box",
        )
    )
    lines = [(title, dict(fontweight="bold", fontsize=BODY_PT + 1))]
    lines += [(line, dict(fontsize=BODY_PT)) for line in body.splitlines()]
    if code:
        lines.append((code, dict(fontsize=CODE_PT, family="monospace", color="#1f4e8c")))
    step = 0.215
    top = y + step * (len(lines) - 1) / 2
    for i, (text, style) in enumerate(lines):
        ax.text(x, top - i * step, text, ha="center", va="center", gid="in-box", **style)
    return (x - w / 2, x + w / 2, y - h / 2, y + h / 2)


def arrow(ax, start, end, text="", colour=EDGE, ls="-", rad=0.0, dx=0.0):  # type: ignore[no-untyped-def]
    ax.annotate(
        "",
        xy=end,
        xytext=start,
        arrowprops=dict(
            arrowstyle="-|>",
            color=colour,
            lw=1.2,
            linestyle=ls,
            shrinkA=0,
            shrinkB=0,
            connectionstyle=f"arc3,rad={rad}",
        ),
    )
    if text:
        mx, my = (start[0] + end[0]) / 2 + dx, (start[1] + end[1]) / 2
        ax.text(mx, my, text, ha="left", va="center", fontsize=NOTE_PT, color="#333333")


def draw() -> Figure:
    """The picture, top to bottom: inputs, encoders, the four branches, fusion, ensemble, loss."""
    fig = Figure(figsize=FIG_SIZE)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    width, height = FIG_SIZE
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")

    ax.text(0.2, 11.3, "The paper's model (Fig. 3) as mmfusion builds it", fontsize=TITLE_PT + 2,
            fontweight="bold", va="center")
    ax.text(0.2, 10.93, "MultiModalClassifier(encoders, fusion, head); shapes for 224 px inputs "
            "and ResNet-50", fontsize=NOTE_PT, va="center", color="#444444")
    ax.text(0.2, 10.63, "Beyond the paper: any number of modalities; a missing one is replaced "
            "by a learned placeholder", fontsize=NOTE_PT, va="center", color="#444444")

    col = {"us": 2.5, "swe": 7.5}
    names = {"us": ("US", "B-mode ultrasound"), "swe": ("SWE", "shear-wave elastography")}
    y_img, y_enc, y_br, y_cat, y_joint, y_ens, y_loss = 9.85, 8.45, 6.35, 4.55, 3.3, 2.0, 0.6
    single_x = {"us": 1.25, "swe": 8.75}
    att_x = {"us": 3.75, "swe": 6.25}
    for m, x in col.items():
        short, long = names[m]
        box(ax, x, y_img, 3.4, 0.8, f'"{m}" image', f"{long}, [B, 3, 224, 224]", C_IN)
        box(ax, x, y_enc, 3.6, 1.15, f"Encoder ({short})",
            "ResNet-50, stages 1-3 frozen,\nstage 4 fine-tuned", C_ENC, "ModalityEncoder")
        arrow(ax, (x, y_img - 0.4), (x, y_enc + 0.575))
        box(ax, single_x[m], y_br, 2.3, 1.25, f"Single ({short})",
            "flatten 2048*7*7,\nthree FC -> z [B, 5]", C_SINGLE, "ClassifierHead")
        box(ax, att_x[m], y_br, 2.3, 1.65, f"Attention ({short})",
            "pool 2048 -> 512,\nconv -> 256, spatial +\nchannel attention,\nGAP, FC -> f [B, 256]",
            C_ATT, "AttentionEmbedding")
        for bx, half_height in ((single_x[m], 0.625), (att_x[m], 0.825)):
            arrow(ax, (x + 0.5 * (bx - x) / 2.5, y_enc - 0.575), (bx, y_br + half_height))
        ax.text(x + (0.15 if m == "swe" else -0.15), y_enc - 0.95, "[B, 2048, 7, 7]",
                fontsize=NOTE_PT, ha="left" if m == "swe" else "right", color="#333333")
        arrow(ax, (att_x[m], y_br - 0.825), (5.0 + (-0.6 if m == "us" else 0.6), y_cat + 0.45))
        ens_side = (5.0 + (-2.1 if m == "us" else 2.1), y_ens)
        arrow(ax, (single_x[m], y_br - 0.625), ens_side, f"z_{m}", dx=0.1 if m == "us" else -0.7)

    box(ax, 5.0, y_cat, 3.0, 0.9, "Concatenate", "[f_us, f_swe] -> [B, 512]", C_ATT,
        "AttentionFusion")
    box(ax, 5.0, y_joint, 3.0, 0.9, "Joint branch", "one FC 512 -> 5: z_joint", C_JOINT,
        "ClassifierHead")
    arrow(ax, (5.0, y_cat - 0.45), (5.0, y_joint + 0.45))
    box(ax, 5.0, y_ens, 4.2, 0.95, "Ensemble", "mean of the three softmaxes -> probs [B, 5]",
        C_JOINT, "EnsembleHead")
    arrow(ax, (5.0, y_joint - 0.45), (5.0, y_ens + 0.475))
    box(ax, 5.0, y_loss, 9.4, 0.95, "Training loss, eq. (1)-(3)",
        "CE(z_us) + CE(z_swe) + CE(z_joint) + 0.2 * sum_{i<j} mean|f_i - f_j|", C_LOSS,
        "EnsembleLoss(alpha=0.2)")
    arrow(ax, (3.5, y_cat), (0.9, y_loss + 0.475), "f_us, f_swe", colour="#b03030", ls="--",
          rad=0.25, dx=-1.45)
    return fig


def check(fig: Figure) -> list[str]:
    """Problems of the drawn picture: text outside the figure or outside its box, text smaller
    than MIN_TEXT_PX when shown DISPLAY_WIDTH_PX wide. Empty when it is fine."""
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    fig_box = fig.bbox
    boxes = [p.get_window_extent(renderer) for p in ax.patches if p.get_gid() == "box"]
    scale = DISPLAY_WIDTH_PX / (fig.get_figwidth() * 72)  # shown px per point
    problems = []
    for text in ax.texts:
        if not text.get_text():  # an arrow (annotation without text)
            continue
        extent = text.get_window_extent(renderer)
        size_px = text.get_fontsize() * scale
        if size_px < MIN_TEXT_PX:
            problems.append(f"{text.get_text()!r}: {size_px:.1f} px at {DISPLAY_WIDTH_PX} px")
        if not (fig_box.x0 <= extent.x0 and extent.x1 <= fig_box.x1
                and fig_box.y0 <= extent.y0 and extent.y1 <= fig_box.y1):
            problems.append(f"{text.get_text()!r}: outside the figure")
        if text.get_gid() == "in-box":
            inside = any(b.x0 + 2 <= extent.x0 and extent.x1 <= b.x1 - 2
                         and b.y0 <= extent.y0 and extent.y1 <= b.y1 for b in boxes)
            if not inside:
                problems.append(f"{text.get_text()!r}: overflows its box")
    return problems


def main() -> int:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig = draw()
    fig.canvas.draw()  # a renderer for check()
    problems = check(fig)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    fig.savefig(OUT, dpi=DPI)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
