"""The catalogue of checks against the code that writes them and the docs page that explains them."""

import ast
from pathlib import Path

from modelgate.reporting.check_catalogue import CATALOGUE, markdown_table, spec_of

ROOT = Path(__file__).resolve().parents[2]
MAKERS = {"Check", "rule", "ModelRejected", "ConversionFailed"}


def _text(node: ast.AST) -> str | None:
    """A string constant, or an f-string with each placeholder as a member of its family (tensorflow)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(part.value if isinstance(part, ast.Constant) else "tensorflow" for part in node.values)
    return None


def check_names_in_code() -> dict[str, str]:
    """Every check name the code writes as a literal: the name given to Check, rule and ModelRejected, and the
    lists of names checks are made from (FILE_CHECKS, OUTPUT_CHECK_NAMES, checks.skipped's)."""
    found = {}
    for path in [*ROOT.glob("modelgate/**/*.py"), *ROOT.glob("tasks/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[ast.AST] = []
            if isinstance(node, ast.Call):
                function = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if function in MAKERS:
                    names += [kw.value for kw in node.keywords if kw.arg == "name"]
                    if function != "Check" and node.args:
                        names.append(node.args[0])
                if function == "skipped" and node.args and isinstance(node.args[0], ast.List):
                    names += node.args[0].elts
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and (t.id.endswith("CHECKS") or t.id.endswith("CHECK_NAMES") or t.id == "CHECK")
                for t in node.targets
            ):
                names += node.value.elts if isinstance(node.value, ast.List) else [node.value]
            for name in filter(None, map(_text, names)):
                found[name] = str(path.relative_to(ROOT))
    return found


def test_every_check_the_code_writes_is_in_the_catalogue():
    names = check_names_in_code()
    assert {"finite_outputs", "op_safety", "litert_inputs", "benchmark_gpu_tensorflow"} <= set(names)  # the reading works
    missing = {name: path for name, path in names.items() if spec_of(name) is None}
    assert not missing, f"checks missing from modelgate/reporting/check_catalogue.py: {missing}"


def test_a_name_outside_every_family_is_not_in_the_catalogue():
    assert spec_of("benchmark_gpu_onnx_onnxruntime").name == "benchmark_gpu_<runtime>"
    assert spec_of("litert_interpreter_load").name == "<format>_<check>"
    assert spec_of("tensorrt_engine") is None and spec_of("benchmark_gpu_tensorrt") is None


def test_each_target_check_is_named_after_its_target_or_format():
    from modelgate.targets import registry

    for target in registry().values():
        assert spec_of(target.check_name).name == "<target>_conversion"


def test_the_readme_table_is_the_catalogue():
    assert markdown_table() in (ROOT / "docs" / "validating.md").read_text()
    assert len({spec.name for spec in CATALOGUE}) == len(CATALOGUE)
