"""Runs side by side, from their logs: the last and the best test top-1, when a run first
reached a target accuracy (its epoch and wall-clock minutes: time to accuracy), and the mean
and spread over the runs, as one reads several seeds of one recipe (`skelang compare`).

The best epoch is chosen on the test set, as CTR-GCN's code reports NW-UCLA (it has no
validation split): read it beside the last epoch, never alone. Minutes are the cumulative
`seconds` of the log's epochs (each epoch's training and evaluation), so they leave out the
start-up, checkpoint writes and, for a resumed run, the epoch a kill lost; an entry without
`seconds` counts 0.
"""

from __future__ import annotations

import numpy as np
import pandas

COLUMNS = (
    "run",
    "epochs",
    "planned_epochs",
    "last_top1",
    "best_top1",
    "best_epoch",
    "best_minutes",
    "target_epoch",
    "target_minutes",
    "minutes",
)
EPOCH_COLUMNS = ("epochs", "planned_epochs", "best_epoch", "target_epoch")  # integers, <NA> where unknown


def cumulative_minutes(entries: list[dict]) -> np.ndarray:
    """Wall-clock minutes at the end of each logged epoch: the cumulative `seconds` / 60."""
    return np.cumsum([entry.get("seconds", 0.0) for entry in entries]) / 60


def check_target(target: float | None) -> None:
    """A target is a top-1 fraction in (0, 1] or None; anything else is a ValueError."""
    if target is not None and not 0 < target <= 1:
        raise ValueError(f"target must be a top-1 fraction in (0, 1] (e.g. 0.935), got {target}")


def compare_runs(logs: dict[str, list[dict]], planned: dict[str, int] | None = None, target: float | None = None):
    """The runs' table and its summary over runs.

    logs: a label per run -> its log entries (log.jsonl's lines: epoch, seconds, test_top1 on
          the evaluated epochs); planned: a label -> its train.epochs (a run still training
          has fewer lines); target: a top-1 fraction in (0, 1], or None.
    Returns (table, summary): table, a pandas DataFrame with one row per run and the columns
    of COLUMNS (top-1 as fractions, minutes of wall time; target_* empty where the run never
    reached the target); summary, a dict with the number of runs, how many have fewer epochs
    than planned ("unfinished"), the mean and standard deviation (ddof=1; 0 for one run) of
    last_top1, best_top1 and minutes, and with a target the target, how many runs reached it
    ("reached") and their mean target_minutes (None where none did).
    Epoch columns are integers (pandas Int64, <NA> where unknown). Raises ValueError naming
    the label of a run whose log holds no evaluated epoch, or a target that is not a fraction.
    """
    check_target(target)
    rows = []
    for label, entries in logs.items():
        minutes = cumulative_minutes(entries)
        evaluated = [(entry, float(m)) for entry, m in zip(entries, minutes) if entry.get("test_top1") is not None]
        if not evaluated:
            raise ValueError(f"{label}: its log holds no evaluated epoch (test_top1) yet")
        best, best_minutes = max(evaluated, key=lambda pair: pair[0]["test_top1"])  # the first of equals
        reached = [pair for pair in evaluated if target is not None and pair[0]["test_top1"] >= target]
        rows.append(
            {
                "run": label,
                "epochs": entries[-1]["epoch"],
                "planned_epochs": (planned or {}).get(label),
                "last_top1": evaluated[-1][0]["test_top1"],
                "best_top1": best["test_top1"],
                "best_epoch": best["epoch"],
                "best_minutes": best_minutes,
                "target_epoch": reached[0][0]["epoch"] if reached else None,
                "target_minutes": reached[0][1] if reached else None,
                "minutes": float(minutes[-1]),
            }
        )
    table = pandas.DataFrame(rows, columns=list(COLUMNS)).astype({column: "Int64" for column in EPOCH_COLUMNS})
    unfinished = sum(row["planned_epochs"] is not None and row["epochs"] < row["planned_epochs"] for row in rows)
    summary = {"runs": len(table), "unfinished": unfinished}
    for column in ("last_top1", "best_top1", "minutes"):
        summary[f"{column}_mean"] = float(table[column].mean())
        summary[f"{column}_std"] = float(table[column].std(ddof=1)) if len(table) > 1 else 0.0
    if target is not None:
        reached_minutes = table["target_minutes"].dropna()
        summary.update(
            target=target,
            reached=int(len(reached_minutes)),
            target_minutes_mean=float(reached_minutes.mean()) if len(reached_minutes) else None,
        )
    return table, summary


def records(table) -> list[dict]:
    """The table's rows as plain Python values (JSON): None where a run never reached the target."""

    def plain(value):
        return None if pandas.isna(value) else value.item() if hasattr(value, "item") else value

    return [{key: plain(value) for key, value in row.items()} for row in table.to_dict("records")]


def format_comparison(table, summary: dict) -> str:
    """The table and summary of compare_runs as text (percentages, minutes)."""

    def percent(value) -> str:
        return f"{100 * value:.2f}%"

    def at(epoch, minutes) -> str:
        return "never" if pandas.isna(epoch) else f"epoch {int(epoch)}, {minutes:.1f} min"

    target = summary.get("target")
    shown = []
    for row in table.to_dict("records"):
        entry = {
            "run": row["run"],
            "epochs": f"{row['epochs']}"
            + ("" if pandas.isna(planned := row["planned_epochs"]) else f"/{int(planned)}"),
            "last top-1": percent(row["last_top1"]),
            "best top-1": f"{percent(row['best_top1'])} ({at(row['best_epoch'], row['best_minutes'])})",
        }
        if target is not None:
            entry[f">= {percent(target)}"] = at(row["target_epoch"], row["target_minutes"])
        entry["minutes"] = f"{row['minutes']:.1f}"
        shown.append(entry)
    runs = summary["runs"]

    def mean(column: str) -> str:
        spread = f" +- {100 * summary[column + '_std']:.2f}" if runs > 1 else ""
        return percent(summary[column + "_mean"]) + spread

    lines = [
        pandas.DataFrame(shown).to_string(index=False),
        ("mean over" if runs > 1 else "over")
        + f" {runs} run{'s' if runs > 1 else ''}"
        + (f" ({summary['unfinished']} with fewer epochs than planned)" if summary["unfinished"] else "")
        + f": last top-1 {mean('last_top1')}, best top-1 {mean('best_top1')}, {summary['minutes_mean']:.1f} min",
    ]
    if target is not None:
        reached = summary["reached"]
        lines.append(
            f"{reached} of {runs} reached {percent(target)}"
            + (f" (mean {summary['target_minutes_mean']:.1f} min)" if reached else "")
        )
    return "\n".join(lines)
