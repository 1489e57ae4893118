"""Figures and the report section of a degradation study (:class:`~medprune.metrics.degradation.DegradationGrid`).

:func:`plot_degradation_grid` draws, per degradation kind, balanced accuracy and worst-class
sensitivity against the level (clean images at q = 0 on the left), one line per model with its
patient-level 95 % interval as a band; :func:`degradation_section` is the report's table and those
figures. The figure returns a :class:`~medprune.report.plots.Plotted` whose ``values`` hold every
plotted number (``"<model> / <kind>=<value> / <metric>"``), so tests check it says what the grid says.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from medprune.metrics.degradation import DegradationGrid
from medprune.report._html_parts import esc, note, plot
from medprune.report.plots import Plotted, save_figure
from medprune.report.run_plots import model_colour

__all__ = ["plot_degradation_grid", "grid_plot_name", "degradation_section", "GRID_PANELS"]

#: The metrics drawn against the level, with their axis labels.
GRID_PANELS: tuple[tuple[str, str], ...] = (("balanced_accuracy", "Balanced accuracy"),
                                            ("worst_class_sensitivity", "Worst-class sensitivity"))


def grid_plot_name(kind: str) -> str:
    """The file name of ``kind``'s figure in the grid folder."""
    return f"degradation_{kind}.png"


def _level_label(grid: DegradationGrid, kind: str, q: float) -> str:
    unit = grid.units.get(kind, "")
    for value in grid.levels(kind):
        p = next((p for p in grid.points if p.kind == kind and p.value == value), None)
        if p is not None and abs(p.q - q) < 1e-9:
            return f"{value:g}"
    return "clean" if q == 0 else f"q={q:.2f}{' ' + unit if unit else ''}"


def plot_degradation_grid(grid: DegradationGrid, out_dir: Path, title_suffix: str = "") -> list[Plotted]:
    """One figure per degradation kind in ``out_dir`` (:func:`grid_plot_name`); returns them."""
    suffix = title_suffix or (" — SYNTHETIC phantom data" if grid.synthetic_data else "")
    out = []
    for kind in grid.kinds:
        fig = Figure(figsize=(5.2 * len(GRID_PANELS), 4.0))
        values: dict[str, float] = {}
        for col, (metric, label) in enumerate(GRID_PANELS):
            ax = fig.add_subplot(1, len(GRID_PANELS), col + 1)
            for i, model in enumerate(grid.models):
                series = grid.series(model.name, kind, metric)
                drawn = [(q, v, ci) for q, v, ci in series if v is not None]
                if not drawn:
                    continue
                qs = [q for q, _, _ in drawn]
                colour = model_colour(i)
                style = "--" if model.compressed else "-"
                ax.plot(qs, [v for _, v, _ in drawn], style, marker="o", color=colour, label=model.name)
                with_ci = [(q, ci) for q, _, ci in drawn if ci is not None]
                if with_ci:
                    ax.fill_between([q for q, _ in with_ci], [c[0] for _, c in with_ci], [c[1] for _, c in with_ci],
                                    color=colour, alpha=0.12, linewidth=0)
                for (q, v, _), p in zip(drawn, [grid.point(model.name, None, None)] +
                                        [grid.point(model.name, kind, lv) for lv in grid.levels(kind)]):
                    if p is not None:
                        values[f"{model.name} / {p.level} / {metric}"] = float(v)
            ticks = [0.0] + [p.q for p in grid.points if p.kind == kind and p.model == grid.models[0].name]
            ax.set_xticks(ticks)
            ax.set_xticklabels([_level_label(grid, kind, q) for q in ticks], rotation=30)
            ax.set_xlabel(f"{kind} level ({grid.units.get(kind, '')}; left: clean)")
            ax.set_ylabel(label)
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"{label} vs {kind}")
            ax.grid(alpha=0.3)
            if col == 0:
                ax.legend(fontsize=7, loc="lower left")
        fig.suptitle(f"Degradation grid, {grid.split} split ({grid.items} images){suffix}; bands: 95 % CI")
        out.append(save_figure(fig, Path(out_dir) / grid_plot_name(kind), values))
    return out


def _fmt(value: float | None, ci: list[float] | None = None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def degradation_section(grid: DegradationGrid | None, run_dir: Path, problem: str | None) -> list[str]:
    """The report's "Degradation" section: per model, clean and mean-over-levels figures, then the plots."""
    out = ["<h2>Degradation</h2>"]
    if grid is None:
        out.append(f'<p class="problem">degradation/grid.json {esc(problem)}</p>' if problem else
                   note("Degradation grid: not run (degradation/grid.json not found)."))
        return out
    levels = ", ".join(f"{k} ({grid.units.get(k, '')}): {', '.join(f'{v:g}' for v in grid.levels(k))}"
                       for k in grid.kinds)
    out.append(f"<p>Every model on the {esc(grid.split)} split ({grid.items} images) at each level — {esc(levels)} — "
               "and on the clean images. <em>oracle</em>: the true degradation parameter q is given; "
               "<em>blind</em>: the model's estimator supplies it; the baselines never see q. "
               "Intervals: patient-level bootstrap, 95 %.</p>")
    rows = ["<table><tr><th>model</th><th>MACs</th><th>clean balanced acc.</th><th>clean worst-class sens.</th>"
            "<th>mean balanced acc. over levels</th><th>mean worst-class sens. over levels</th>"
            "<th>worst level: balanced acc.</th><th>estimator MAE (mean)</th></tr>"]
    for m in grid.models:
        clean = grid.point(m.name, None, None)
        degraded = [p for p in grid.points if p.model == m.name and p.kind is not None]
        worst = min(degraded, key=lambda p: p.metrics.get("balanced_accuracy") or 0.0) if degraded else None
        maes = [p.estimator_mae for p in degraded if p.estimator_mae is not None]
        rows.append(
            f"<tr><td>{esc(m.name)}</td><td>{'' if m.macs is None else f'{m.macs / 1e6:.2f} M'}</td>"
            f"<td>{_fmt(clean.metrics.get('balanced_accuracy'), clean.ci.get('balanced_accuracy')) if clean else 'n/a'}</td>"
            f"<td>{_fmt(clean.metrics.get('worst_class_sensitivity'), clean.ci.get('worst_class_sensitivity')) if clean else 'n/a'}</td>"
            f"<td>{_fmt(grid.mean_over_levels(m.name, 'balanced_accuracy'))}</td>"
            f"<td>{_fmt(grid.mean_over_levels(m.name, 'worst_class_sensitivity'))}</td>"
            f"<td>{esc(worst.level) + ': ' + _fmt(worst.metrics.get('balanced_accuracy')) if worst else 'n/a'}</td>"
            f"<td>{_fmt(sum(maes) / len(maes)) if maes else ''}</td></tr>")
    rows.append("</table>")
    out.append("".join(rows))
    out.append(_level_table(grid))
    folder = Path(run_dir) / "degradation"
    for kind in grid.kinds:
        out.append(plot(lambda kind=kind: plot_degradation_grid(_only(grid, kind), folder)[0],
                        f"Degradation grid: {kind}",
                        f"Balanced accuracy and worst-class sensitivity against the {kind} level, clean images at the "
                        "left; dashed: the compressed aware model. Where the bands overlap, the test set cannot "
                        "tell the models apart."))
    if grid.synthetic_data:
        out.append(note("SYNTHETIC phantom data: these curves describe the phantom, not clinical performance."))
    return out


def _level_table(grid: DegradationGrid) -> str:
    """Every model × level: accuracy, balanced accuracy and each class's sensitivity with intervals."""
    keys = ["accuracy", "balanced_accuracy", *[f"sensitivity.{c}" for c in grid.classes]]
    labels = ["accuracy", "balanced acc.", *[f"sensitivity {c}" for c in grid.classes]]
    head = "".join(f"<th>{esc(label)}</th>" for label in labels)
    rows = [f"<details><summary>Every level (from degradation/grid.csv)</summary><table><tr><th>model</th>"
            f"<th>level</th><th>q</th>{head}<th>estimator MAE</th></tr>"]
    for p in grid.points:
        cells = "".join(f"<td>{_fmt(p.metrics.get(k), p.ci.get(k))}</td>" for k in keys)
        mae = "" if p.estimator_mae is None else f"{p.estimator_mae:.3f}"
        rows.append(f"<tr><td>{esc(p.model)}</td><td>{esc(p.level)}</td><td>{p.q:.2f}</td>{cells}<td>{mae}</td></tr>")
    rows.append("</table></details>")
    return "".join(rows)


def _only(grid: DegradationGrid, kind: str) -> DegradationGrid:
    return DegradationGrid(classes=grid.classes, kinds=[kind], units=grid.units, split=grid.split, items=grid.items,
                           models=grid.models, points=[p for p in grid.points if p.kind in (None, kind)],
                           synthetic_data=grid.synthetic_data)
