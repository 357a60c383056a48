"""modelgate's command line: validate a SavedModel, or try the whole thing on a sample model.

Exit codes: 0 every check passed, 1 a check failed, 2 bad input, usage, or a stage that could not run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

EXIT_PASSED, EXIT_FAILED, EXIT_ERROR = 0, 1, 2
EXIT_CODES = {"passed": EXIT_PASSED, "failed": EXIT_FAILED, "error": EXIT_ERROR}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelgate", description="The gate between training and serving.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and Prefect's own logs")
    commands = parser.add_subparsers(dest="command", required=True)

    validate = commands.add_parser("validate", help="validate one SavedModel")
    validate.add_argument("model_dir", metavar="MODEL_DIR")
    _add_validation_options(validate)

    demo = commands.add_parser("demo", help="build a small sample SavedModel and validate it")
    demo.add_argument("--model-dir", default=None, help="where to write the sample model (default: a temp dir)")
    _add_validation_options(demo)
    return parser


def _add_validation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.add_argument("--signature", metavar="KEY", help="signature key (default: serving_default)")
    parser.add_argument("--tag", metavar="TAG", action="append", help="tag of the MetaGraph (repeat or comma-separate)")
    parser.add_argument("--version", type=int, metavar="N", help="version folder of a TF Serving base path (default: latest)")
    parser.add_argument("--inputs", metavar="FILE", help="inputs: .npz keyed by input name, or a TFRecord of tf.Examples")
    parser.add_argument("--contract", metavar="FILE", help="expected contract (YAML or JSON) the signature must match")
    parser.add_argument("--previous", metavar="MODEL_DIR", help="previous version to check compatibility against")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX export and comparison")
    parser.add_argument("--atol", type=float, help="absolute tolerance, ONNX vs TensorFlow")
    parser.add_argument("--rtol", type=float, help="relative tolerance, ONNX vs TensorFlow")
    parser.add_argument("--opset", type=int, help="ONNX opset (default: highest supported)")
    parser.add_argument("--batch-size", type=int, help="dynamic batch dimension of synthetic inputs")
    parser.add_argument("--benchmark-batch-sizes", metavar="N,N,...", help="batch sizes to benchmark ('' for none)")
    parser.add_argument("--allow-op", metavar="OP", action="append", help="allow a risky op type (repeatable)")
    parser.add_argument("--timeout", type=float, metavar="SECONDS", help="time limit for each model stage")
    parser.add_argument("--memory-limit-mb", type=int, help="memory limit for each model stage")
    parser.add_argument("--report", metavar="PATH", help="report path (default: modelgate-report.json)")
    parser.add_argument("--output-dir", metavar="DIR", help="working files (default: modelgate-out)")
    parser.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (default: sqlite:///mlflow.db)")


def _request_fields(args: argparse.Namespace, model_dir: str) -> dict:
    tags = [t for value in args.tag for t in value.split(",") if t] if args.tag else None
    fields = {
        "model_dir": model_dir, "signature": args.signature, "tags": tags, "inputs_path": args.inputs,
        "export_onnx": not args.no_onnx, "atol": args.atol, "rtol": args.rtol, "onnx_opset": args.opset,
        "batch_size": args.batch_size, "allow_ops": args.allow_op, "model_timeout_s": args.timeout,
        "memory_limit_mb": args.memory_limit_mb, "report_path": args.report, "output_dir": args.output_dir,
        "tracking_uri": args.tracking_uri, "model_version": args.version, "contract_path": args.contract,
        "previous_model_dir": args.previous,
    }
    if args.benchmark_batch_sizes is not None:
        fields["benchmark_batch_sizes"] = [int(n) for n in args.benchmark_batch_sizes.split(",") if n.strip()]
    return {key: value for key, value in fields.items() if value is not None}


def _quiet_frameworks(debug: bool) -> None:
    if not debug:
        # A failed stage is reported by modelgate itself, in one line; Prefect would print its traceback too.
        for variable in ("PREFECT_LOGGING_LEVEL", "PREFECT_SERVER_LOGGING_LEVEL"):
            os.environ.setdefault(variable, "CRITICAL")
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # The ephemeral server's telemetry heartbeat races its own SQLite writes and prints tracebacks.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _quiet_frameworks(args.debug)
    from pydantic import ValidationError

    from modelgate.console import Console

    console = Console()
    try:
        if args.command == "demo":
            model_dir = args.model_dir or str(Path(tempfile.mkdtemp(prefix="modelgate-sample-")) / "sample_model")
            console.note(f"building a sample SavedModel in {model_dir}")
            from modelgate.quiet import stderr_to
            from modelgate.samples import build_sample_model

            with stderr_to(os.devnull):
                build_sample_model(model_dir)
        else:
            model_dir = args.model_dir
        from modelgate.schemas import ValidationRequest

        request = ValidationRequest(**_request_fields(args, model_dir))
    except ValidationError as exc:
        first = exc.errors()[0]
        console.error(f"invalid option {'.'.join(map(str, first['loc']))}: {first['msg']}")
        return EXIT_ERROR
    except ValueError as exc:
        console.error(str(exc))
        return EXIT_ERROR
    from modelgate import recorder

    recorder.add_listener(console)
    try:
        from flows.validate import validate_savedmodel

        report = validate_savedmodel(request)
    except Exception as exc:
        if args.debug:
            raise
        console.error(f"validation stopped: {type(exc).__name__}: {exc}")
        return EXIT_ERROR
    finally:
        recorder.remove_listener(console)
    console.verdict(report)
    return EXIT_CODES[report.status]


if __name__ == "__main__":
    sys.exit(main())
