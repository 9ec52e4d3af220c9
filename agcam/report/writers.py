"""The writers behind :mod:`agcam.report` (see its docstring for the schema)."""
from __future__ import annotations

import base64
import csv
import datetime
import html
import io
import json
import math
import os
import platform
from typing import Any, Dict, List, Optional, Sequence

SCHEMA = "agcam-evaluate"
SCHEMA_VERSION = 1


def _versions() -> Dict[str, str]:
    import numpy
    import timm
    import torch
    try:
        from importlib.metadata import version
        agcam_version = version("agcam")
    except Exception:   # not installed: the source tree
        agcam_version = "source"
    return {"python": platform.python_version(), "torch": torch.__version__,
            "timm": timm.__version__, "numpy": numpy.__version__, "agcam": agcam_version}


def _device(explainers) -> str:
    first = next(iter(explainers.values()))
    device = first.device
    if device.type == "cuda":
        import torch
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def build_results(config, source, evaluations, skipped: Dict[str, str],
                  summaries: Dict[str, Dict[str, Any]], seconds: Dict[str, float],
                  predict_seconds: float, evaluated: int, records_bytes: int, geometry,
                  explainers) -> Dict[str, Any]:
    """``results.json``'s content (module docstring of :mod:`agcam.report`)."""
    from agcam.registry import method_label

    unreadable = len(source.names) - evaluated
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": {"name": config.model, "checkpoint": config.checkpoint,
                  "checkpoint_sha256": config.checkpoint_sha256,
                  "input_size": list(geometry.input_size), "grid": list(geometry.grid),
                  "mean": list(geometry.mean), "std": list(geometry.std)},
        "dataset": {"name": source.name, "data_root": config.data_root, "split": source.split,
                    "listed": source.listed, "images": len(source.names), "evaluated": evaluated,
                    "unreadable": unreadable},
        "settings": {"batch_size": config.batch_size,
                     "score_batch_size": config.score_batch_size,
                     "precision": config.precision, "decode": config.decode,
                     "options": config.options},
        "methods": [{"name": m, "label": method_label(m), "seconds": seconds[m],
                     "seconds_per_image": seconds[m] / max(evaluated, 1)}
                    for m in config.methods],
        "evaluations": [{"name": ev.name, "label": ev.label, "target": ev.needs.target,
                         "convention": ev.describe(),
                         "columns": [{"key": c.key, "label": c.label,
                                      "higher_is_better": c.higher_is_better}
                                     for c in ev.columns]} for ev in evaluations],
        "skipped_evaluations": skipped,
        "refused_methods": dict(config.refused),
        "results": summaries,
        "time": {"predict_seconds": predict_seconds,
                 "methods_seconds": sum(seconds.values())},
        "records_bytes": records_bytes,
        "records_bytes_per_image": records_bytes / max(len(source.names), 1),
        "versions": _versions(),
        "device": _device(explainers),
    }


def _clean(value):
    """JSON without NaN (``null`` instead) and with plain types."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return _clean(value.item())
    return value


def _number(value) -> Optional[float]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def table_rows(results: Dict[str, Any], evaluation: Dict[str, Any]) -> List[List[Any]]:
    """``[method, label, images, column values...]`` per method of one evaluation."""
    rows = []
    for method in results["methods"]:
        summary = results["results"].get(method["name"], {}).get(evaluation["name"])
        if summary is None:
            continue
        rows.append([method["name"], method["label"], summary.get("num_images")]
                    + [_number(summary.get(c["key"])) for c in evaluation["columns"]])
    return rows


def best_methods(results: Dict[str, Any], evaluation: Dict[str, Any]) -> List[Optional[str]]:
    """The best method of each column (the first of tied ones; ``None`` where no value)."""
    rows = table_rows(results, evaluation)
    return [next((row[0] for row in rows if row[3 + j] is not None and row[3 + j] == value),
                 None) for j, value in enumerate(best_values(results, evaluation))]


def best_values(results: Dict[str, Any], evaluation: Dict[str, Any]) -> List[Optional[float]]:
    """The best value of each column by its direction (``None`` where no value): every method
    that reaches it is marked, ties included."""
    rows = table_rows(results, evaluation)
    best = []
    for j, column in enumerate(evaluation["columns"]):
        values = [row[3 + j] for row in rows if row[3 + j] is not None]
        best.append((max if column["higher_is_better"] else min)(values) if values else None)
    return best


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def markdown_lines(results: Dict[str, Any]) -> List[str]:
    """``report.md``: a header, then one table per evaluation (best value per column bold)."""
    model, data = results["model"], results["dataset"]
    lines = [f"# Evaluation of {len(results['methods'])} methods on {data['name']}", "",
             f"- model: `{model['name']}`" + (f", checkpoint `{model['checkpoint']}` "
                                              f"(SHA-256 {model['checkpoint_sha256'][:16]}...)"
                                              if model["checkpoint"] else ""),
             f"- data set: {data['name']} {data['split'] or ''} at `{data['data_root']}`: "
             f"{data['images']} images, {data['evaluated']} evaluated, {data['unreadable']} "
             "unreadable",
             f"- precision {results['settings']['precision']}, device {results['device']}; "
             f"the one prediction per image took {results['time']['predict_seconds']:.1f} s",
             f"- cache: {results['records_bytes']:,} bytes of records "
             f"({results['records_bytes_per_image']:,.0f} per image)", ""]
    for name, reason in results["skipped_evaluations"].items():
        lines.append(f"- not run: {name} ({reason})")
    for name, reason in results.get("refused_methods", {}).items():
        lines.append(f"- method not run: {name} ({reason})")
    for evaluation in results["evaluations"]:
        rows = table_rows(results, evaluation)
        best = best_values(results, evaluation)
        lines += ["", f"## {evaluation['label']}", "", f"{evaluation['convention']}. "
                  "Best value per column in bold (arrow: which way is better).", ""]
        header = ["method", "images"] + [f"{c['label']} {'↑' if c['higher_is_better'] else '↓'}"
                                         for c in evaluation["columns"]]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        for row in rows:
            cells = [row[1], _fmt(row[2])]
            for j, value in enumerate(row[3:]):
                text = _fmt(value)
                cells.append(f"**{text}**" if value is not None and value == best[j] else text)
            lines.append("| " + " | ".join(cells) + " |")
        for method in results["methods"]:
            warning = results["results"].get(method["name"], {}).get(
                evaluation["name"], {}).get("warning")
            if warning:
                lines.append(f"\nwarning ({method['name']}): {warning}")
    lines += ["", "## Time", "", "| method | seconds | per image |", "|---|---:|---:|"]
    lines += [f"| {m['label']} | {m['seconds']:.1f} | {m['seconds_per_image']:.3f} |"
              for m in results["methods"]]
    return lines


def write_csvs(out: str, results: Dict[str, Any]) -> List[str]:
    paths = []
    for evaluation in results["evaluations"]:
        path = os.path.join(out, f"{evaluation['name']}.csv")
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["method", "label", "num_images"]
                            + [c["key"] for c in evaluation["columns"]])
            for row in table_rows(results, evaluation):
                writer.writerow(["" if v is None else (repr(v) if isinstance(v, float) else v)
                                 for v in row])
        paths.append(path)
    return paths


# -- figures ------------------------------------------------------------------------------

def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def curve_figures(results: Dict[str, Any]) -> Dict[str, str]:
    """Base64 PNGs of the mean curves of every curve evaluation, a line per method."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = {}
    for evaluation in results["evaluations"]:
        name = evaluation["name"]
        panels = [("lerf", "LeRF"), ("morf", "MoRF")] if name == "abpc" else [("curve", None)]
        summaries = {m["label"]: results["results"].get(m["name"], {}).get(name)
                     for m in results["methods"]}
        if not any(s and panels[0][0] in s for s in summaries.values()):
            continue
        figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.4),
                                    squeeze=False)
        for ax, (key, title) in zip(axes[0], panels):
            for label, summary in summaries.items():
                if not summary or key not in summary:
                    continue
                steps = summary.get("steps") or list(range(len(summary[key])))
                x = [float(s) for s in steps][:len(summary[key])]
                if len(x) != len(summary[key]):
                    x = list(range(len(summary[key])))
                ax.plot(x, summary[key], label=label, linewidth=1.2)
            ax.set_title(f"{evaluation['label']}" + (f": {title}" if title else ""))
            ax.set_xlabel("layers randomised, head first" if name == "randomisation" else
                          "fraction of pixels" if name != "insertion" and name != "deletion"
                          else "fraction of pixels changed")
            ax.grid(alpha=0.3)
        axes[0][-1].legend(fontsize=7, loc="best")
        figures[name] = _png(figure)
        plt.close(figure)
    return figures


def examples_figure(out: str, results: Dict[str, Any]) -> Optional[str]:
    """Base64 PNG: the first images (rows) x every method (columns), the map of the predicted
    class over the image (localization recipe)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    from agcam.maps import to_heatmap

    loaded = {}
    for method in results["methods"]:
        path = os.path.join(out, "examples", f"{method['name']}.npz")
        if os.path.exists(path):
            with np.load(path) as data:
                loaded[method["label"]] = {k: data[k] for k in data.files}
    if not loaded:
        return None
    first = next(iter(loaded.values()))
    rows = len(first["images"])
    columns = len(loaded) + 1
    figure, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.6 * rows),
                                squeeze=False)
    for i in range(rows):
        image = first["images"][i].transpose(1, 2, 0)
        axes[i][0].imshow(image)
        axes[i][0].set_title(str(first["names"][i])[:18], fontsize=6)
        for j, (label, data) in enumerate(loaded.items(), start=1):
            heat = to_heatmap(torch.from_numpy(data["maps"][i:i + 1]),
                              image.shape[:2])[0].numpy()
            axes[i][j].imshow(image)
            axes[i][j].imshow(heat, cmap="jet", alpha=0.5)
            if i == 0:
                axes[i][j].set_title(label, fontsize=6)
    for ax in axes.flat:
        ax.axis("off")
    encoded = _png(figure)
    plt.close(figure)
    return encoded


def html_page(out: str, results: Dict[str, Any]) -> str:
    """``report.html``: one self-contained page."""
    esc = html.escape
    model, data = results["model"], results["dataset"]
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'>",
             f"<title>agcam evaluate: {esc(model['name'])} on {esc(data['name'])}</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}"
             "table{border-collapse:collapse;margin:0.5em 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "td:first-child,th:first-child{text-align:left}"
             ".best{font-weight:bold;background:#dfd}.conv{color:#555;font-size:90%}"
             "img{max-width:100%}</style></head><body>",
             f"<h1>{esc(model['name'])} on {esc(data['name'])} "
             f"({data['evaluated']} images)</h1>"]
    md = markdown_lines(results)
    header_end = md.index("") if "" in md else 0
    def code(text: str) -> str:   # Markdown `code` as <code>
        pieces = esc(text).split("`")
        return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))

    parts.append("<ul>" + "".join(f"<li>{code(line[2:])}</li>" for line in md[1:header_end + 6]
                                  if line.startswith("- ")) + "</ul>")
    figures = curve_figures(results)
    for evaluation in results["evaluations"]:
        rows = table_rows(results, evaluation)
        best = best_values(results, evaluation)
        parts.append(f"<h2>{esc(evaluation['label'])}</h2><p class='conv'>"
                     f"{esc(evaluation['convention'])}; best value per column marked.</p>")
        head = "".join(f"<th>{esc(c['label'])} {'↑' if c['higher_is_better'] else '↓'}</th>"
                       for c in evaluation["columns"])
        parts.append(f"<table><tr><th>method</th><th>images</th>{head}</tr>")
        for row in rows:
            cells = "".join(
                f"<td class='best'>{_fmt(v)}</td>" if v is not None and v == best[j]
                else f"<td>{_fmt(v)}</td>" for j, v in enumerate(row[3:]))
            parts.append(f"<tr><td>{esc(row[1])}</td><td>{_fmt(row[2])}</td>{cells}</tr>")
        parts.append("</table>")
        for method in results["methods"]:
            warning = results["results"].get(method["name"], {}).get(
                evaluation["name"], {}).get("warning")
            if warning:
                parts.append(f"<p class='conv'>warning ({esc(method['name'])}): "
                             f"{esc(warning)}</p>")
        if evaluation["name"] in figures:
            parts.append(f"<img alt='{esc(evaluation['name'])} curves' "
                         f"src='data:image/png;base64,{figures[evaluation['name']]}'>")
    for name, reason in results["skipped_evaluations"].items():
        parts.append(f"<p class='conv'>not run: {esc(name)} ({esc(reason)})</p>")
    for name, reason in results.get("refused_methods", {}).items():
        parts.append(f"<p class='conv'>method not run: {esc(name)} ({esc(reason)})</p>")
    grid = examples_figure(out, results)
    if grid is not None:
        parts.append("<h2>Example maps (predicted class)</h2>"
                     f"<img alt='example maps' src='data:image/png;base64,{grid}'>")
    parts.append("<h2>Time</h2><table><tr><th>method</th><th>seconds</th><th>per image</th></tr>")
    parts += [f"<tr><td>{esc(m['label'])}</td><td>{m['seconds']:.1f}</td>"
              f"<td>{m['seconds_per_image']:.3f}</td></tr>" for m in results["methods"]]
    parts.append("</table></body></html>")
    return "\n".join(parts)


def write_report(out: str, results: Dict[str, Any]) -> List[str]:
    """Write ``results.json``, the CSVs, ``report.md`` and ``report.html`` into ``out``."""
    os.makedirs(out, exist_ok=True)
    paths = []
    path = os.path.join(out, "results.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(_clean(results), handle, indent=1)
    paths.append(path)
    paths += write_csvs(out, results)
    path = os.path.join(out, "report.md")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(markdown_lines(results)) + "\n")
    paths.append(path)
    path = os.path.join(out, "report.html")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(html_page(out, results))
    paths.append(path)
    return paths


def summary_lines(results: Dict[str, Any]) -> Sequence[str]:
    """What ``agcam evaluate`` prints: the Markdown tables."""
    return markdown_lines(results)
