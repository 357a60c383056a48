"""report.html: one self-contained page (plots embedded) that MLflow's UI shows inline beside the run."""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

from jinja2 import Environment

from modelgate.report import ValidationReport
from modelgate.reporting import atomic_write, matrix
from modelgate.reporting.plots import latency_against_error

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>modelgate: {{ r.status }} · {{ r.source }}</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;max-width:70rem}
h1{font-size:1.4rem} h2{font-size:1.1rem;margin-top:1.6rem} h3{font-size:1rem;margin-top:1.2rem}
table{border-collapse:collapse;margin:.4rem 0;font-size:.9rem} td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}
.passed,.ok{color:#17702e}.failed,.error{color:#b3261e;font-weight:bold}.warning,.skipped{color:#8a6100}
.verdict{font-size:1.6rem;font-weight:bold} img{max-width:100%;border:1px solid #eee;margin:.4rem 0}
code{background:#f4f4f4;padding:0 .2rem} td code{word-break:break-all}
</style></head><body>
<h1>modelgate validation of <code>{{ r.source }}</code></h1>
<p class="verdict {{ r.status }}">{{ r.status | upper }}</p>
{% if r.status == "error" %}<p class="error">{{ r.first_error() }}</p>{% endif %}
<p>Signature <code>{{ r.signature or "not chosen" }}</code>{% if r.tags %}, tags <code>{{ r.tags | join(",") }}</code>{% endif %};
started {{ r.started_at }}{% if r.finished_at %}, finished {{ r.finished_at }}{% endif %}{% if r.mlflow.run_id %};
MLflow run <code>{{ r.mlflow.run_id }}</code>{% endif %}.</p>

<h2>Checks</h2>
<table><tr><th>check</th><th>status</th><th>detail</th></tr>
{% for c in r.checks %}<tr><td>{{ c.name }}</td><td class="{{ c.status }}">{{ c.status }}</td><td>{{ c.message }}</td></tr>
{% endfor %}</table>

<h2>Stages</h2>
<table><tr><th>stage</th><th>outcome</th><th>seconds</th><th>detail</th></tr>
{% for s in r.stages %}<tr><td>{{ s.name }}</td><td class="{{ s.status }}">{{ s.status }}</td>
<td>{{ "%.2f" | format(s.duration_s) }}</td><td>{{ s.message }}</td></tr>{% endfor %}</table>

<h2>Signatures</h2>
{% for key, sig in r.signatures.items() %}
<p><b>{{ key }}</b>{% if key == r.signature %} (validated){% endif %} <code>{{ sig.method_name }}</code></p>
<table><tr><th>side</th><th>name</th><th>dtype</th><th>shape</th></tr>
{% for side, tensors in (("input", sig.inputs), ("output", sig.outputs)) %}{% for name, t in tensors.items() %}
<tr><td>{{ side }}</td><td>{{ name }}</td><td>{{ t.dtype }}</td>
<td>{{ "unknown rank" if t.shape is none else t.shape | map("default", "?", true) | join(" × ") }}</td></tr>
{% endfor %}{% endfor %}</table>
{% endfor %}

<h2>Conversion targets</h2>
{% if not r.targets %}<p class="skipped">No conversion target was asked.</p>{% endif %}
{% for name, t in r.targets.items() %}
<h3>{{ name }} <small>({{ t.artifact_format }}{% if t.parent %}, from {{ t.parent }}{% endif %}, {{ t.requirement }})</small></h3>
<p class="{{ t.status }}">{{ t.status }}: {{ t.message }}</p>
{% set c = t.conversion %}{% if c %}
<p>{% if c.duration_s is not none %}Converted in {{ "%.2f" | format(c.duration_s) }} s{% endif %}{% if c.size_bytes is not none %},
{{ "{:,}".format(c.size_bytes) }} bytes on disk{% endif %}{% if c.path %}: <code>{{ c.path }}</code>{% endif %}.
{% if c.failure %}<span class="failed">{{ c.failure }}</span>{% endif %}</p>
{% if c.details %}<table>{% for k, v in c.details.items() %}<tr><td>{{ k }}</td><td>{{ v | words }}</td></tr>{% endfor %}</table>{% endif %}
{% if c.checks %}<table><tr><th>check</th><th>status</th><th>detail</th></tr>
{% for k in c.checks %}<tr><td>{{ k.name }}</td><td class="{{ k.status }}">{{ k.status }}</td><td>{{ k.message }}</td></tr>
{% endfor %}</table>{% endif %}
{% if c.converter_message %}<details><summary>converter output</summary><pre>{{ c.converter_message }}</pre></details>{% endif %}
{% if c.reproduce %}<details><summary>reproduce</summary><pre>{{ c.reproduce }}</pre></details>{% endif %}
{% endif %}
{% for key, cmp in t.comparisons.items() %}
<p><b>{{ key }}</b> on {{ cmp.providers | join(", ") }}{% if cmp.graph_optimization_level %}, optimisation
{{ cmp.graph_optimization_level }}{% endif %}, {{ cmp.batches }} batches</p>
<table><tr><th>output</th><th>max abs diff</th><th>max rel diff</th><th>cosine</th><th>top-1</th><th>failing</th>
<th>passed</th><th>detail</th></tr>
{% for out, o in cmp.outputs.items() %}<tr><td>{{ out }}</td><td>{{ o.max_abs_diff | figure }}</td><td>{{ o.max_rel_diff | figure }}</td>
<td>{{ o.cosine_similarity | figure }}</td><td>{{ o.top1_agreement | figure }}</td>
<td>{{ o.failing_elements }} / {{ o.total_elements }}</td>
<td class="{{ 'passed' if o.passed else 'failed' }}">{{ 'passed' if o.passed else 'failed' }}</td><td>{{ o.message }}</td></tr>
{% endfor %}</table>
{% for out, data in histograms[name][key] %}<img alt="{{ name }} {{ key }} {{ out }}" src="data:image/png;base64,{{ data }}">{% endfor %}
{% endfor %}
{% for key, why in t.not_compared.items() %}<p class="skipped"><b>{{ key }}</b> not compared: {{ why }}</p>{% endfor %}
{% set l = t.localisation %}{% if l %}
<h4>Where the error starts <small>({{ l.runtime }}/{{ l.device }}, {{ l.rows }} samples)</small></h4>
<p class="{{ 'passed' if l.verdict == 'agrees' else 'failed' }}">{{ l.summary }}</p>
<p><small>{{ l.matched }} of {{ l.target_tensors }} tensors of the converted model matched TensorFlow's
({{ l.reference_tensors }} compared for){% if l.unmatched %}; unmatched: {{ l.unmatched[:10] | join(", ") }}
{%- if l.unmatched | length > 10 %}, …{% endif %}{% endif %}.</small></p>
{% if l.nonfinite_origin %}{% set o = l.nonfinite_origin %}<p class="failed">First NaN or infinity: made by {{ o.op_type }}
<code>{{ o.name }}</code> in {{ "TensorFlow" if o.side == "tensorflow" else "the converted model" }}{% if o.tensorflow_name %}
(TensorFlow's <code>{{ o.tensorflow_name }}</code>){% endif %}.</p>{% endif %}
{% set path = ([l.first] if l.first else []) + l.downstream %}{% if l.upstream or path %}
<table><tr><th></th><th>TensorFlow tensor</th><th>op</th><th>converted model's tensor</th><th>max abs diff</th>
<th>relative error</th><th>cosine</th><th>within criteria</th></tr>
{% set after = l.downstream | rejectattr("tensorflow_name", "equalto", l.first.tensorflow_name if l.first else "") | list %}
{% for role, rows in (("upstream", l.upstream), ("first", [l.first] if l.first else []), ("downstream", after)) %}{% for d in rows %}
<tr><td>{{ role }}</td><td><code>{{ d.tensorflow_name }}</code></td><td>{{ d.op_type }}</td><td><code>{{ d.target_name or "" }}</code></td>
<td>{{ d.max_abs_diff | figure }}</td><td>{{ d.relative_error | figure }}</td><td>{{ d.cosine_similarity | figure }}</td>
<td class="{{ 'passed' if d.passed else 'failed' }}">{{ 'yes' if d.passed else 'no' }}
{%- if d.nonfinite %} (NaN/Inf: {{ d.nonfinite }}){% endif %}</td></tr>
{% endfor %}{% endfor %}</table>{% endif %}
{% if localisation_plots.get(name) %}
<img alt="{{ name }}: error by op" src="data:image/png;base64,{{ localisation_plots[name] }}">{% endif %}
{% endif %}
{% set m = t.remediation %}{% if m %}
<h4>Other conversions tried <small>(budget {{ "%.0f" | format(m.budget_s) }} s, {{ "%.1f" | format(m.spent_s) }} s spent)</small></h4>
<p class="{{ 'passed' if m.chosen else 'failed' }}">{{ m.summary }}</p>
{% if m.original_message %}<p>As converted by default: {{ m.original_message }}</p>{% endif %}
{% if m.variants %}<table><tr><th>variant</th><th>settings</th><th>outcome</th><th>worst cosine</th><th>max abs diff</th>
<th>p50 ms</th><th>detail</th></tr>
{% for v in m.variants %}{% set worst = variant_figures[name][loop.index0] %}<tr><td>{{ v.label }}</td><td>{{ v.settings | words }}</td>
<td class="{{ v.status }}">{{ v.status }}</td><td>{{ worst.cosine_similarity | figure }}</td><td>{{ worst.max_abs_diff | figure }}</td>
<td>{{ v.p50_ms | figure }}</td><td>{{ v.message }}{% if v.conversion and v.conversion.reproduce %}
<details><summary>reproduce</summary><pre>{{ v.conversion.reproduce }}</pre></details>{% endif %}</td></tr>
{% endfor %}</table>{% endif %}
{% endif %}
{% endfor %}

<h2>Format matrix</h2>
<p class="{{ 'passed' if matrix.recommendation else 'skipped' }}">{{ matrix.recommendation_line() }}</p>
{% if matrix.rows %}<table><tr>{% for h in headers %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row, cells in matrix_rows %}<tr>{% for cell in cells %}
<td{% if headers[loop.index0] == "parity" and row.parity is not none %} class="{{ 'passed' if row.parity else 'failed' }}"{% endif %}>
{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</table>{% for line in matrix.legend() %}<p><small>{{ line }}.</small></p>{% endfor %}{% endif %}
{% if error_plot %}<img alt="latency against error" src="data:image/png;base64,{{ error_plot }}">{% endif %}

<h2>Baseline</h2>
{% if r.baseline.source %}<p>Compared with <code>{{ r.baseline.source }}</code>{% if r.baseline.latency_change_pct is not none %}:
latency p50 {{ "%.4g" | format(r.baseline.current_p50_ms) }} ms against {{ "%.4g" | format(r.baseline.baseline_p50_ms) }} ms
({{ "%+.1f" | format(r.baseline.latency_change_pct) }} %), measured side by side{% endif %}.</p>
{% if r.baseline.drift %}<table><tr><th>output</th><th>max abs drift</th><th>max rel drift</th></tr>
{% for name, d in r.baseline.drift.items() %}<tr><td>{{ name }}</td><td>{{ d.max_abs_diff | figure }}</td>
<td>{{ d.max_rel_diff | figure }}</td></tr>
{% endfor %}</table>{% endif %}{% endif %}
{% if r.baseline.skipped_reason %}<p class="skipped">{{ r.baseline.skipped_reason }}</p>{% endif %}

{% if r.benchmarks %}<h2>Benchmarks</h2>
<table><tr><th>target</th><th>runtime</th><th>device</th><th>batch</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>mean ms</th>
<th>samples/s (from the mean)</th><th>stable</th></tr>
{% for b in r.benchmarks %}<tr><td>{{ b.target }}</td><td>{{ b.runtime }}</td><td>{{ b.device }}</td><td>{{ b.batch_size }}</td>
<td>{{ "%.4g" | format(b.p50_ms) }}</td><td>{{ "%.4g" | format(b.p90_ms) }}</td><td>{{ "%.4g" | format(b.p99_ms) }}</td>
<td>{{ "%.4g" | format(b.mean_ms) }}</td><td>{{ "{:,.0f}".format(b.throughput) }}</td>
<td class="{{ '' if b.stable else 'warning' }}">{{ 'stable' if b.stable else 'unstable' }}</td></tr>{% endfor %}</table>{% endif %}
{% for name, data in images %}<p>{{ name }}</p><img alt="{{ name }}" src="data:image/png;base64,{{ data }}">{% endfor %}

<h2>Environment</h2>
<table>{% for k, v in r.environment.items() %}<tr><td>{{ k }}</td><td>{{ v | words }}</td></tr>{% endfor %}</table>
</body></html>
"""


def _figure(value: float | None) -> str:
    """Enough digits to tell a cosine of 0.9999999 from 1, none of the float noise beyond."""
    return "" if value is None else f"{value:.8g}"


def _words(value) -> str:
    """A value as a person reads it: yes or no, none for an empty mapping or list, figures without float noise,
    mappings as name: value. Never a Python repr (True, {}, [])."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return _figure(value)
    if isinstance(value, dict):
        return ", ".join(f"{key}: {_words(item)}" for key, item in value.items()) or "none"
    if isinstance(value, (list, tuple, set)):
        return ", ".join(_words(item) for item in value) or "none"
    return str(value)


def _encoded(path: str | Path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode()


def _error_plot(built: matrix.Matrix) -> str | None:
    batch_size, points, references = matrix.plot_points(built)
    if not points:
        return None
    with tempfile.TemporaryDirectory() as scratch:
        return _encoded(latency_against_error(points, references, batch_size, Path(scratch) / "latency_against_error.png"))


def render(report: ValidationReport) -> str:
    histograms = {
        name: {key: [(out, _encoded(path)) for out, path in cmp.histograms.items() if Path(path).is_file()]
               for key, cmp in section.comparisons.items()}
        for name, section in report.targets.items()
    }
    # A histogram shown under its target is not shown again among the run's other plots.
    shown = {path for section in report.targets.values() for cmp in section.comparisons.values()
             for path in cmp.histograms.values()}
    shown |= {section.localisation.plot for section in report.targets.values() if section.localisation}
    images = [
        (name, _encoded(path))
        for name, path in report.artifacts.items()
        if name.endswith(".png") and path not in shown and Path(path).is_file()
    ]
    localisation_plots = {
        name: _encoded(section.localisation.plot) for name, section in report.targets.items()
        if section.localisation and section.localisation.plot and Path(section.localisation.plot).is_file()
    }
    variant_figures = {
        name: [matrix.worst_figures({f"{key}:{out}": o for key, cmp in v.comparisons.items() for out, o in cmp.outputs.items()})
               for v in section.remediation.variants]
        for name, section in report.targets.items() if section.remediation
    }
    built = matrix.build(report)
    headers, cells = built.table()
    environment = Environment(autoescape=True)
    environment.filters["figure"] = _figure
    environment.filters["words"] = _words
    return environment.from_string(TEMPLATE).render(
        r=report, images=images, histograms=histograms, matrix=built, headers=headers,
        matrix_rows=list(zip(built.rows, cells)), error_plot=_error_plot(built),
        localisation_plots=localisation_plots, variant_figures=variant_figures,
    )


def write(report: ValidationReport, path: str | Path) -> Path:
    return atomic_write.write_text(path, render(report))
