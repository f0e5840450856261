"""Speed-ups over the naive rung, the best rung per batch size, and the issue's H100 goals."""

from __future__ import annotations

from typing import Any

from benchmarks import ladder


def add_speedups(rows: list[dict[str, Any]], reference_batch: int) -> None:
    """Speed-ups over the naive rung at the same batch and at the reference batch."""
    naive = {r["batch_size"]: r for r in rows if r["rung"] == "naive" and r["status"] == "ok"}
    ref = naive.get(reference_batch)
    for r in rows:
        for kind in ("train", "infer"):
            rate = r.get(f"{kind}_pairs_per_s")
            same = naive.get(r["batch_size"])
            r[f"{kind}_speedup_vs_naive"] = (
                rate / same[f"{kind}_pairs_per_s"] if rate and same else None
            )
            r[f"{kind}_speedup_vs_naive_ref_batch"] = (
                rate / ref[f"{kind}_pairs_per_s"] if rate and ref else None
            )


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Best rung per batch size for training and inference."""
    out: dict[str, Any] = {}
    for batch in sorted({r["batch_size"] for r in rows}):
        ok = [r for r in rows if r["batch_size"] == batch and r["status"] == "ok"]
        if not ok:
            continue
        best_t = max(ok, key=lambda r: r["train_pairs_per_s"])
        best_i = max(ok, key=lambda r: r["infer_pairs_per_s"])
        out[str(batch)] = {
            "best_train_rung": best_t["rung"],
            "best_train_pairs_per_s": best_t["train_pairs_per_s"],
            "best_train_speedup_vs_naive": best_t["train_speedup_vs_naive"],
            "best_train_speedup_vs_naive_ref_batch": best_t["train_speedup_vs_naive_ref_batch"],
            "best_train_peak_mem_mb": best_t["train_peak_mem_mb"],
            "best_train_frac_peak": best_t["train_frac_peak"],
            "best_infer_rung": best_i["rung"],
            "best_infer_pairs_per_s": best_i["infer_pairs_per_s"],
        }
    return out


def evaluate_goals(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's H100 goals, measured on this run (full GPU runs only)."""
    s4, s256 = summary.get("4", {}), summary.get("256", {})

    def goal(text: str, measured: float | None, target: str, ok: bool | None) -> dict[str, Any]:
        return {"goal": text, "measured": measured, "target": target,
                "met": None if measured is None else ok}

    def ge(x: float | None, t: float) -> bool | None:
        return None if x is None else x >= t

    tr = s256.get("best_train_pairs_per_s")
    inf = max((v["best_infer_pairs_per_s"] for v in summary.values()), default=None)
    sp4, sp256 = s4.get("best_train_speedup_vs_naive"), s256.get("best_train_speedup_vs_naive")
    sp_ref = s256.get("best_train_speedup_vs_naive_ref_batch")
    best_rung = s256.get("best_train_rung")
    bf16 = best_rung is not None and ladder.rung_config(best_rung, "cuda").bf16
    mem = s256.get("best_train_peak_mem_mb") if bf16 else None
    frac = s256.get("best_train_frac_peak")
    return [
        goal("training pairs/s at batch 256 (best rung)", tr, ">= 5000", ge(tr, 5000)),
        goal("inference pairs/s (best rung, any batch)", inf, ">= 10000", ge(inf, 10000)),
        goal("best/naive training at batch 4", sp4, ">= 3x", ge(sp4, 3)),
        goal("best/naive training at batch 256", sp256, ">= 5x", ge(sp256, 5)),
        goal("best at 256 / naive at batch 4 (training)", sp_ref, ">= 15x", ge(sp_ref, 15)),
        goal(f"training peak memory at batch 256, best rung {best_rung} in bf16 (MB)", mem, "<= 6000",
             None if mem is None else mem <= 6000),
        goal("training fraction of dense bf16 peak at 256 (stretch)", frac, ">= 0.20",
             ge(frac, 0.2)),
    ]
